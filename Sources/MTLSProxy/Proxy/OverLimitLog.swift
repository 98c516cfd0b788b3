import Logging

/// The log of connections refused because `max_connections` is reached.
///
/// The first refusal of an episode gets the usual line (client, `end=over_limit`); the
/// ones after it are only counted, because a client hammering a full proxy would
/// otherwise write a line per attempt (over 10,000 a second were seen). Once no
/// refusal has come for `quietNanos` (or every `reminderNanos` while they go on), one
/// line says how many there were. `mtls_proxy_connections_total{outcome="over_limit"}`
/// counts every one of them.
final class OverLimitLog {
    static let quietNanos: UInt64 = 2_000_000_000
    static let reminderNanos: UInt64 = 30_000_000_000

    private unowned let loop: EventLoop
    private lazy var timer = loop.timer { [unowned self] now in self.timerFired(now: now) }
    private let logger: Logger
    private let limit: Int
    private var count = 0  // refusals since the last line
    private var episodeStart: UInt64 = 0
    private var windowStart: UInt64 = 0
    private var last: UInt64 = 0

    init(loop: EventLoop, logger: Logger, limit: Int) {
        self.loop = loop
        self.logger = logger
        self.limit = limit
    }

    func refused(_ peer: SocketAddress) {
        let now = monotonicNanos()
        last = now
        if episodeStart == 0 {
            episodeStart = now
            windowStart = now
            logger.warning("connection refused", metadata: [
                "client": "\(peer)", "end": "over_limit", "detail": "max_connections (\(limit)) reached",
            ])
            return timer.arm(at: now + Self.quietNanos)
        }
        count += 1
        if now - windowStart >= Self.reminderNanos { summarize(now: now, over: false) }
    }

    private func timerFired(now: UInt64) {
        guard episodeStart != 0 else { return }
        if now - last >= Self.quietNanos {
            summarize(now: now, over: true)
        } else {
            timer.arm(at: last + Self.quietNanos)
        }
    }

    private func summarize(now: UInt64, over: Bool) {
        if count > 0 {
            logger.warning(over ? "connections refused over max_connections" : "connections still refused over max_connections",
                           metadata: [
                               "refused": "\(count)", "duration_ms": "\((last - windowStart) / 1_000_000)",
                               "detail": "max_connections (\(limit)) reached; the first was logged on its own",
                           ])
        }
        count = 0
        windowStart = now
        if over { episodeStart = 0 }
    }
}
