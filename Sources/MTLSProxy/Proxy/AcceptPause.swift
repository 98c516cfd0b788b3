import Glibc
import Logging

/// What a listening socket does when accept(2) fails for want of descriptors or memory
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM).
///
/// The socket is level-triggered and the connection stays in the backlog, so returning
/// would only wake the loop again at once: a core spinning on accept, and a log line per
/// attempt. Instead the socket leaves the epoll set and comes back after `retryNanos`,
/// while the open connections are served as usual. Waiting clients stay in the backlog
/// and are taken as soon as descriptors are free again.
///
/// One episode, one pair of log lines: the first failure, then, once no failure has been
/// seen for `quietNanos`, how many there were and for how long. An episode that lasts
/// says so again every `reminderNanos`.
final class AcceptPause {
    static let retryNanos: UInt64 = 250_000_000
    static let quietNanos: UInt64 = 2_000_000_000
    static let reminderNanos: UInt64 = 30_000_000_000

    private unowned let loop: EventLoop
    private lazy var timer = loop.timer { [unowned self] now in self.timerFired(now: now) }
    private let fd: Int32
    private unowned let handler: EventHandler
    private let logger: Logger

    private(set) var paused = false
    private var stopped = false
    private var failures = 0
    private var episodeStart: UInt64 = 0
    private var lastFailure: UInt64 = 0
    private var lastReport: UInt64 = 0
    private var lastError = ""

    init(fd: Int32, handler: EventHandler, loop: EventLoop, logger: Logger) {
        self.fd = fd
        self.handler = handler
        self.loop = loop
        self.logger = logger
    }

    /// accept(2) said `error`: stop listening for a moment.
    func failed(_ error: SystemError) {
        let now = monotonicNanos()
        failures += 1
        lastFailure = now
        lastError = "\(error)"
        if failures == 1 {
            episodeStart = now
            lastReport = now
            logger.error("accept failed, pausing accepts", metadata: [
                "detail": "\(lastError)", "retry_ms": "\(Self.retryNanos / 1_000_000)",
            ])
        } else if now - lastReport >= Self.reminderNanos {
            lastReport = now
            logger.error("accept still failing", metadata: [
                "detail": "\(lastError)", "failures": "\(failures)",
                "duration_ms": "\((now - episodeStart) / 1_000_000)",
            ])
        }
        if !paused {
            paused = true
            loop.deregister(fd: fd)
        }
        timer.arm(at: now + Self.retryNanos)
    }

    /// The listening socket is being closed: no more retries.
    func stop() {
        stopped = true
        timer.cancel()
    }

    private func timerFired(now: UInt64) {
        guard !stopped else { return }
        if paused {
            paused = false
            loop.register(fd: fd, events: Epoll.input, handler: handler)
            // Take what waits in the backlog now; a new failure pauses again.
            handler.handleEvent(fd: fd, events: Epoll.input)
        }
        guard failures > 0, !paused else { return }
        if now - lastFailure >= Self.quietNanos {
            logger.warning("accepting again", metadata: [
                "detail": "after \(lastError)", "failures": "\(failures)",
                "duration_ms": "\((lastFailure - episodeStart) / 1_000_000)",
            ])
            failures = 0
        } else {
            timer.arm(at: lastFailure + Self.quietNanos)
        }
    }
}
