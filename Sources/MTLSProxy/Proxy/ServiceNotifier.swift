import Glibc
import Logging
import Synchronization

/// What the proxy tells systemd and when, under `Type=notify` or `Type=notify-reload`
/// (NotifySocket does the sending): READY=1 once every listener is bound; RELOADING=1
/// with MONOTONIC_USEC (one datagram, as notify-reload wants) when a reload starts, then
/// READY=1 with its result; STOPPING=1 on SIGTERM; WATCHDOG=1 every half WATCHDOG_USEC
/// while every event loop's heartbeat is fresh; and a STATUS= line.
///
/// Called from loop 0 and from the reloader's thread: the mutable state is under a lock
/// or loop-0 only (the timers).
final class ServiceNotifier: @unchecked Sendable {
    private let socket: NotifySocket
    private let logger: Logger
    private let openConnections: @Sendable () -> Int
    private let lastReload = Mutex<String>("none")
    private let watchdogFailed = Atomic<Bool>(false)
    /// After STOPPING=1, a reload still running says nothing more: to systemd the
    /// service is on its way out, not back to ready.
    private let stopped = Atomic<Bool>(false)
    /// Half of WATCHDOG_USEC, in nanoseconds; nil without a watchdog for us.
    let watchdogPeriodNanos: UInt64?
    private var watchdogTimer: LoopTimer?
    private var statusTimer: LoopTimer?
    private var lastStatus = ""

    /// How often STATUS= is refreshed (sent only when it changed).
    static let statusPeriodNanos: UInt64 = 5_000_000_000

    /// nil when not started by systemd with a notify socket.
    static func fromEnvironment(logger: Logger, openConnections: @escaping @Sendable () -> Int) -> ServiceNotifier? {
        let socket: NotifySocket
        do {
            guard let found = try NotifySocket.fromEnvironment() else { return nil }
            socket = found
        } catch {
            logger.warning("systemd notify socket unusable, not notifying", metadata: ["detail": "\(error)"])
            return nil
        }
        return ServiceNotifier(socket: socket, logger: logger, openConnections: openConnections,
                               watchdogPeriodNanos: watchdogPeriodFromEnvironment())
    }

    /// WATCHDOG_USEC / 2, when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is our pid
    /// (the variables may have been inherited from a parent that systemd watches).
    static func watchdogPeriodFromEnvironment() -> UInt64? {
        guard let usecText = getenv("WATCHDOG_USEC").map({ String(cString: $0) }),
              let usec = UInt64(usecText), usec > 0 else { return nil }
        if let pidText = getenv("WATCHDOG_PID").map({ String(cString: $0) }), !pidText.isEmpty {
            guard let pid = Int32(pidText), pid == getpid() else { return nil }
        }
        return max(usec * 1_000 / 2, 1_000_000)
    }

    private init(socket: NotifySocket, logger: Logger, openConnections: @escaping @Sendable () -> Int, watchdogPeriodNanos: UInt64?) {
        self.socket = socket
        self.logger = logger
        self.openConnections = openConnections
        self.watchdogPeriodNanos = watchdogPeriodNanos
    }

    // MARK: - Messages

    /// Every listener is bound by every worker: systemd may start what depends on us.
    func ready(on loop: EventLoop, heartbeats: [Heartbeat]) {
        lastStatus = status()
        send("READY=1\nSTATUS=\(lastStatus)\nMAINPID=\(getpid())", what: "READY")
        startTimers(on: loop, heartbeats: heartbeats)
    }

    /// A reload begins (SIGHUP or changed files). systemd's notify-reload matches
    /// MONOTONIC_USEC against the time it sent SIGHUP, so both go in one datagram.
    func reloading(why: String) {
        guard !stopped.load(ordering: .relaxed) else { return }
        send("RELOADING=1\nMONOTONIC_USEC=\(monotonicNanos() / 1_000)\nSTATUS=reloading (\(why))", what: "RELOADING")
    }

    /// The reload is over, whatever its result: the proxy serves (the old state where
    /// the new one failed).
    func reloaded(success: Bool, why: String) {
        lastReload.withLock { $0 = (success ? "ok" : "FAILED, kept the previous state") + " (\(why)) at \(Timestamp.iso8601(wallClockSeconds()))" }
        guard !stopped.load(ordering: .relaxed) else { return }
        send("READY=1\nSTATUS=\(status())", what: "READY after reload")
    }

    func stopping() {
        stopped.store(true, ordering: .relaxed)
        send("STOPPING=1\nSTATUS=stopping: \(openConnections()) open connections draining", what: "STOPPING")
        statusTimer?.cancel()
    }

    private func status() -> String {
        "serving, \(openConnections()) open connections; last reload: \(lastReload.withLock { $0 })"
    }

    // MARK: - Timers (loop 0)

    private func startTimers(on loop: EventLoop, heartbeats: [Heartbeat]) {
        statusTimer = loop.every(Self.statusPeriodNanos) { [unowned self] _ in
            let now = self.status()
            guard now != self.lastStatus else { return }
            self.lastStatus = now
            self.send("STATUS=\(now)", what: "STATUS")
        }
        guard let period = watchdogPeriodNanos else { return }
        // Loop 0 runs this timer, so a stuck loop 0 stops the pings by itself; the
        // other loops show through their heartbeats (stale after Heartbeat.staleNanos).
        var withheld = false
        watchdogTimer = loop.every(period, startNow: true) { [unowned self] _ in
            let stalled = heartbeats.indices.filter { !heartbeats[$0].isFresh }
            guard stalled.isEmpty else {
                if !withheld {
                    withheld = true
                    self.logger.error("systemd watchdog ping withheld: an event loop is stuck", metadata: [
                        "detail": "workers \(stalled.map(String.init).joined(separator: ","))",
                    ])
                }
                return
            }
            withheld = false
            let error = self.socket.send("WATCHDOG=1")
            if error != 0 && !self.watchdogFailed.exchange(true, ordering: .relaxed) {
                self.logger.warning("systemd watchdog ping failed", metadata: ["detail": "\(SystemError.describe(error))"])
            }
        }
    }

    private func send(_ message: String, what: String) {
        let error = socket.send(message)
        if error != 0 {
            logger.warning("systemd notify failed", metadata: ["detail": "\(what): \(SystemError.describe(error))"])
        }
    }
}
