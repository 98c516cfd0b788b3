/// The backend half of an admitted client's connection: the connect within
/// connect_timeout, then the relay between the client's TLS session and the backend,
/// with the relay's deadlines (the proxy's bind, the message boundary a close waits for,
/// idle). It owns the backend socket, its registration and its timer. When the
/// connection must end it says so through `ended`, once; the connection closes.
final class BackendSession: EventHandler {
    typealias Ended = (_ end: ConnectionEnd, _ detail: String?) -> Void

    private let listener: ListenerRuntime
    private unowned let worker: Worker
    private let tls: TLSSession
    private let client: StreamSocket
    private let report: ConnectionReport
    private let entryDN: String?
    private var dial: BackendDial
    private var socket: StreamSocket?
    private var relay: Relay<TLSSession, StreamSocket>?
    private var deadlines: RelayDeadlines
    /// A close waiting for the LDAP message in flight to the client (closeWithNotice).
    private var closing: (end: ConnectionEnd, detail: String)?
    private var ended: Ended?
    private lazy var timer = worker.loop.timer { [unowned self] now in self.timerFired(now: now) }

    /// How long a close waits for the message in flight before it gives up on the
    /// notice: short, so that a revoked client is gone within 2 s of the new CRL.
    static let boundaryWaitNanos: UInt64 = 1_000_000_000

    /// `entryDN` is the entry the client's requests run as (client_auth).
    init(listener: ListenerRuntime, worker: Worker, tls: TLSSession, client: StreamSocket, report: ConnectionReport,
         entryDN: String?, ended: @escaping Ended) {
        self.listener = listener
        self.worker = worker
        self.tls = tls
        self.client = client
        self.report = report
        self.entryDN = entryDN
        self.ended = ended
        dial = BackendDial(to: listener.backendAddress, timeoutNanos: listener.config.connectTimeoutNanos, now: monotonicNanos())
        deadlines = RelayDeadlines(idleNanos: listener.config.idleTimeoutNanos)
    }

    /// Relaying, and not closing: what live checks may still end.
    var isRelaying: Bool { relay != nil && closing == nil && ended != nil }
    /// The backend ended first and the client was told with close_notify.
    var closeNotifySent: Bool { relay?.closeNotifySent == true }
    /// client_auth: whom the client's requests ran as last, for the log line.
    var authz: String? { relay?.requests?.login.authzDescription }

    // MARK: - Connect

    func connect() {
        let step = dial.attempt(now: monotonicNanos()) { listener.logger.debug("\($0)", metadata: ["client": "\(report.peer)"]) }
        switch step {
        case .failed(let why): return unavailable(why)
        case .retry(let at): return timer.arm(at: at)
        case .connected(let socket), .inProgress(let socket):
            self.socket = socket
            worker.loop.register(fd: socket.raw, events: Epoll.edgeTriggeredBoth, handler: self)
            timer.arm(at: dial.deadline)
            if case .connected = step { connected(socket) }
        }
    }

    private func connected(_ socket: StreamSocket) {
        // With proxy_protocol = v2, the first bytes to the backend say who the client is.
        let preface = listener.config.proxyProtocol != .v2 ? [] : ProxyProtocolV2.header(
            client: report.peer, local: Socket.localAddress(client.raw), tlsVersion: report.tlsVersion,
            commonName: report.identity?.commonName)
        // A message-aware listener's requests send the preface ahead of the proxy's own bind.
        let requests = ClientRequests(listener: listener, entryDN: entryDN, preface: preface)
        relay = Relay(client: tls, backend: socket, pool: worker.pool, preface: requests == nil ? preface : [], requests: requests)
        deadlines.lastActivity = monotonicNanos()
        relayed(relay!.pump())
    }

    private func unavailable(_ detail: String) {
        listener.logger.warning("backend unavailable", metadata: ["client": "\(report.peer)", "detail": "\(detail)"])
        finish(.backendUnavailable, detail)
    }

    // MARK: - Relay

    func clientEvents(_ events: UInt32) {
        guard let relay else { return }
        relay.noteClientEvents(events)
        relayed(relay.pump())
    }

    func handleEvent(fd: Int32, events: UInt32) {
        guard let socket else { return }
        socket.noteEvents(events)
        guard let relay else {
            guard events & (Epoll.output | Epoll.error | Epoll.hangup) != 0 else { return }
            if let why = dial.finish(socket, backend: listener.config.backend!) { return unavailable(why) }
            return connected(socket)
        }
        relay.noteBackendEvents(events)
        relayed(relay.pump())
    }

    private func relayed(_ outcome: Relay<TLSSession, StreamSocket>.Outcome) {
        guard let relay else { return }
        switch outcome {
        case .open(let moved):
            if moved {
                deadlines.lastActivity = monotonicNanos()  // the idle timeout starts again
                report.publishBytes(fromClient: relay.bytesFromClient, toClient: relay.bytesToClient, metrics: listener.metrics)
            }
            armDeadline()
        case .finished: finish(.closed, nil)
        case .failed(let why): closing.map { finish($0.end, $0.detail) } ?? finish(.error, why)
        case .noticeDelivered: finish(closing!.end, closing!.detail + "; Notice of Disconnection sent")
        case .boundaryUnreachable(let why): finish(closing!.end, closing!.detail + "; " + why)
        case .stop(let stop):
            report.refused(stop.reason, detail: stop.detail, metrics: listener.metrics)
            closeWithNotice(stop.notice, end: stop.end, detail: stop.detail)
        }
    }

    /// Closes politely: waits (briefly) for the LDAP message in flight to the client to
    /// finish, sends `notice` (a Notice of Disconnection), then ends. Nothing more from
    /// the client reaches the backend meanwhile.
    func closeWithNotice(_ notice: [UInt8], end: ConnectionEnd, detail: String) {
        guard ended != nil, closing == nil else { return }
        guard let relay else { return finish(end, detail) }
        closing = (end, detail)
        deadlines.closingBy = monotonicNanos() + Self.boundaryWaitNanos
        relayed(relay.closeAtNextBoundary(with: notice))
    }

    // MARK: - Deadlines

    /// Makes sure the timer comes by the earliest relay deadline: the proxy's bind, if
    /// one is under way, may have moved it.
    private func armDeadline() {
        deadlines.bindBy = relay?.requests?.proxyBindSentAt.map { $0 + listener.config.connectTimeoutNanos }
        if let next = deadlines.next { timer.arm(at: next) }  // no-op unless earlier than what is armed
    }

    private func timerFired(now: UInt64) {
        guard let relay else {
            // Connecting: a descriptor to retry with, or the connect timed out.
            return socket == nil ? connect() : unavailable(dial.timedOut(backend: listener.config.backend!))
        }
        deadlines.bindBy = relay.requests?.proxyBindSentAt.map { $0 + listener.config.connectTimeoutNanos }
        guard let due = deadlines.due(now: now) else { return armDeadline() }
        switch due {
        case .proxyBind:
            report.refused(.backendBindFailed, metrics: listener.metrics)
            let detail = "the backend did not answer the proxy's bind within \(ConfigDuration.describe(listener.config.connectTimeoutNanos))"
            closeWithNotice(NoticeOfDisconnection.backendBindFailed, end: .backendUnavailable, detail: detail)
        case .boundary:
            finish(closing!.end, closing!.detail + "; no LDAP message boundary within 1s, closed without notice")
        case .idle:
            let quiet = ConfigDuration.describe(deadlines.idleNanos)
            finish(.idleTimeout, relay.awaitingBackend ? "the backend did not answer within \(quiet)" : "no bytes either way for \(quiet)")
        }
    }

    // MARK: - End

    private func finish(_ end: ConnectionEnd, _ detail: String?) {
        let ended = self.ended
        self.ended = nil
        ended?(end, detail)
    }

    /// The connection closes: the backend socket, the timer and the buffers go, and the
    /// bytes moved are counted.
    func release() {
        ended = nil
        timer.cancel()
        if let socket {
            worker.loop.deregister(fd: socket.raw)
            socket.descriptor.close()
        }
        if let relay {
            relay.release()
            report.publishBytes(fromClient: relay.bytesFromClient, toClient: relay.bytesToClient, metrics: listener.metrics)
        }
    }
}
