import Glibc

/// Checks that each listener's backend accepts a TCP (or unix) connection, at most
/// every few seconds, on the first event loop. `/readyz` reads the last result, so a
/// scrape never waits on a backend.
final class BackendProber {
    static let intervalNanos: UInt64 = 3_000_000_000
    static let timeoutNanos: UInt64 = 2_000_000_000

    private unowned let loop: EventLoop
    private let listeners: [ListenerRuntime]
    private var probes: [Probe] = []
    private var ticker: LoopTimer?

    init(loop: EventLoop, listeners: [ListenerRuntime]) {
        self.loop = loop
        self.listeners = listeners
    }

    func start() {
        ticker = loop.every(Self.intervalNanos, startNow: true) { [unowned self] now in self.probeAll(now: now) }
    }

    private func probeAll(now: UInt64) {
        for listener in listeners where !probes.contains(where: { $0.listener === listener }) {
            let probe = Probe(listener: listener, loop: loop) { [unowned self] done in
                self.probes.removeAll { $0 === done }
            }
            probes.append(probe)
            probe.start(now: now)
        }
    }

    final class Probe: EventHandler {
        let listener: ListenerRuntime
        private unowned let loop: EventLoop
        private let done: (Probe) -> Void
        private var socket: Descriptor?
        private lazy var timeout = loop.timer { [unowned self] _ in
            self.finish(ok: false, why: "connect timed out after \(ConfigDuration.describe(BackendProber.timeoutNanos))")
        }

        deinit { socket?.close() }  // a probe in flight when the process ends

        init(listener: ListenerRuntime, loop: EventLoop, done: @escaping (Probe) -> Void) {
            self.listener = listener
            self.loop = loop
            self.done = done
        }

        func start(now: UInt64) {
            switch Socket.connect(to: listener.backendAddress) {
            case .connected(let socket):
                socket.close()
                finish(ok: true)
            case .failed(let error):
                finish(ok: false, why: "\(error)")  // out of descriptors shows here, not as the backend's fault
            case .inProgress(let socket):
                self.socket = socket
                loop.register(fd: socket.raw, events: Epoll.output, handler: self)
                timeout.arm(at: now + BackendProber.timeoutNanos)
            }
        }

        func handleEvent(fd: Int32, events: UInt32) {
            let error = Socket.pendingError(fd)
            finish(ok: error == 0, why: "connect: \(SystemError.describe(error))")
        }

        private func finish(ok: Bool, why: String = "") {
            if let socket {
                loop.deregister(fd: socket.raw)
                socket.close()
                self.socket = nil
            }
            timeout.cancel()
            let previous = listener.backendState.exchange(ok ? 1 : 2, ordering: .relaxed)
            if previous != (ok ? 1 : 2) {
                if ok {
                    listener.logger.info("backend answers", metadata: ["detail": "\(listener.config.backend!)"])
                } else {
                    listener.logger.warning("backend does not answer", metadata: ["detail": "\(listener.config.backend!): \(why)"])
                }
            }
            done(self)
        }
    }
}
