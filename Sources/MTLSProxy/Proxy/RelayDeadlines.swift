/// The deadlines of a relaying connection, of which the earliest is armed: the backend's
/// answer to the proxy's own bind (client_auth), the message boundary a close waits for
/// (closeWithNotice), and the idle timeout. Only what is due is decided here; the
/// connection acts on it.
struct RelayDeadlines {
    enum Due: Equatable {
        /// The backend did not answer the proxy's bind within connect_timeout.
        case proxyBind
        /// No message boundary came within the wait of a close with notice.
        case boundary
        /// No bytes either way for idle_timeout.
        case idle
    }

    /// When the backend must have answered the proxy's bind, while one is under way.
    var bindBy: UInt64?
    /// When a close with notice stops waiting for a message boundary.
    var closingBy: UInt64?
    /// idle_timeout (0 = none), and when bytes last moved.
    let idleNanos: UInt64
    var lastActivity: UInt64 = 0

    init(idleNanos: UInt64) { self.idleNanos = idleNanos }

    /// The earliest deadline (nil: nothing to wait for). While a close waits for its
    /// boundary, the bind and idle deadlines no longer count.
    var next: UInt64? {
        if let closingBy { return closingBy }
        // Runs after every read or write that moved bytes: no array, no allocation.
        guard let bindBy else { return idleBy }
        guard let idleBy else { return bindBy }
        return min(bindBy, idleBy)
    }

    /// What is due at `now`, if anything.
    func due(now: UInt64) -> Due? {
        if let closingBy { return now >= closingBy ? .boundary : nil }
        if let bindBy, now >= bindBy { return .proxyBind }
        if let idleBy, now >= idleBy { return .idle }
        return nil
    }

    private var idleBy: UInt64? { idleNanos > 0 ? lastActivity + idleNanos : nil }
}
