import CGnuTLSShim
import Glibc

/// Delivers SIGHUP, SIGTERM and SIGINT through a signalfd on the first event loop.
/// The signals are blocked in every thread (before the workers start), so they arrive
/// only here, as readable data, never as asynchronous handlers.
final class SignalWatcher: EventHandler {
    static let watched: [Int32] = [SIGHUP, SIGTERM, SIGINT]
    private let fd: Int32
    private let onSignal: (Int32) -> Void

    /// Blocks the watched signals in the calling thread; threads it starts inherit that.
    static func blockInThisThread() {
        var set = sigset_t()
        _ = watched.withUnsafeBufferPointer { shim_block_signals($0.baseAddress, Int32($0.count), &set) }
        signal(SIGPIPE, SIG_IGN)
    }

    init(loop: EventLoop, onSignal: @escaping (Int32) -> Void) throws(SystemError) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in Self.watched { sigaddset(&set, signal) }
        fd = signalfd(-1, &set, Int32(SFD_NONBLOCK) | Int32(SFD_CLOEXEC))
        guard fd >= 0 else { throw SystemError("signalfd") }
        self.onSignal = onSignal
        loop.register(fd: fd, events: Epoll.input, handler: self)
    }

    func handleEvent(fd: Int32, events: UInt32) {
        var info = signalfd_siginfo()
        while withUnsafeMutableBytes(of: &info, { read(fd, $0.baseAddress, $0.count) }) == MemoryLayout<signalfd_siginfo>.size {
            onSignal(Int32(info.ssi_signo))
        }
    }
}
