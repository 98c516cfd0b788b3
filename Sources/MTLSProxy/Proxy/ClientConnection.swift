/// One client, from accept to close: what comes before TLS, the TLS handshake and
/// verification, the admission checks, the backend connect, the relay, and the close
/// with its report. Each part is a type of its own; this is the spine that orders them.
///
/// Phases: (preamble) -> handshaking -> (admitting) -> relaying -> closed, or
/// -> lingering -> closed when the client is refused. Relaying is the backend session's:
/// its connect, then the relay.
/// No backend connection exists before the client's chain has been verified and
/// admitted: nothing reaches the backend before that.
/// Each phase sets `deadline` when it begins, and the one timer enforces it.
final class ClientConnection: EventHandler {
    enum Phase { case preamble, handshaking, admitting, relaying, lingering, closed }

    let id: UInt64
    let listener: ListenerRuntime
    private unowned let worker: Worker
    /// The credentials this session was started with: kept for its whole life.
    private let trust: TrustState
    private let client: StreamSocket
    private let transport: SocketTransport
    private var preamble: ConnectionPreamble?
    private var tls: TLSSession?
    private var admission: Admission?
    private var backend: BackendSession?
    private(set) var phase = Phase.handshaking
    /// When the current phase gives up.
    private var deadline: UInt64 = 0
    private lazy var timer = worker.loop.timer { [unowned self] now in self.timerFired(now: now) }
    private let report: ConnectionReport
    /// The handshake gave way to other connections and goes on from the timer.
    private var handshakeYielded = false
    /// The client's chain (read once from the session) and what its verification found.
    private var verification: PeerVerifier.Result?
    /// crl_fetch: the chain's status while the client waits for a CRL's first download.
    private var awaitingCRL: UInt32?
    /// The verified chain, by which live revocation finds this connection.
    var chain: [ChainLink] { verification?.chain ?? [] }
    /// What the admission checks found (the login's entry, OCSP's hold, the directory lookup).
    private var admitted = Admission.Admitted()
    /// With verify_cert_in_directory: what the background re-check asks about.
    var directoryLookup: DirectoryLookup? { admitted.directoryLookup }

    static let lingerNanos: UInt64 = 2_000_000_000

    init(socket: Descriptor, peer: SocketAddress, listener: ListenerRuntime, trust: TrustState, worker: Worker) {
        client = StreamSocket(socket)
        transport = SocketTransport(socket: client, pool: worker.pool)
        self.listener = listener
        self.trust = trust
        self.worker = worker
        id = worker.nextConnectionID()
        report = ConnectionReport(peer: peer, acceptedAt: monotonicNanos())
    }

    // MARK: - Before TLS, handshake and verification

    func start() {
        // Edge-triggered, both directions, registered once: readiness is tracked by the
        // sockets and the relay, so no epoll_ctl is needed per state change.
        worker.loop.register(fd: client.raw, events: Epoll.edgeTriggeredBoth, handler: self)
        preamble = ConnectionPreamble(socket: client, peer: report.peer, config: listener.config)
        guard preamble != nil else { return startSession() }
        enter(.preamble, until: report.acceptedAt + listener.config.handshakeTimeoutNanos)
        stepPreamble()
    }

    private func stepPreamble() {
        guard let preamble else { return }
        let step = preamble.step()
        // Once the PROXY header is read, every end is its client's, via the balancer: a
        // refusal at the StartTLS door and the handshake timeout too.
        report.peer = preamble.client
        report.proxiedBy = preamble.proxiedBy
        switch step {
        case .waiting: return
        case .tlsNext:
            self.preamble = nil
            startSession()
        case .refused(let reason, let end, let detail):
            report.refused(reason, metrics: listener.metrics)
            close(end, detail: detail)
        case .failed(let why): close(.error, detail: why)
        }
    }

    private func startSession() {
        do {
            tls = try TLSSession(server: trust, transport: transport)
        } catch {
            return close(.error, detail: "\(error)")
        }
        tls?.onPeerCertificates = { [unowned self] in self.verifyPeer() }
        enter(.handshaking, until: report.acceptedAt + listener.config.handshakeTimeoutNanos)
        driveHandshake()
    }

    private func driveHandshake() {
        guard let tls else { return }
        switch tls.handshake() {
        case .completed: handshakeCompleted(tls)
        case .wouldBlock: break
        case .yielded:
            handshakeYielded = true
            timer.arm(at: monotonicNanos())  // fires after the other ready connections
        case .failed(let rc):
            // A refusal of the verify callback already went out as its precise alert.
            if let refusal = report.refusal { return refuse(refusal) }
            let (reason, detail) = tls.refusal(afterHandshakeError: rc)
            refuse(reason, detail: detail)
        }
    }

    /// Called by GnuTLS once the client's chain has arrived (and for resumed sessions,
    /// which skip that, when the handshake completes). False fails the handshake.
    private func verifyPeer() -> Bool {
        guard let tls else { return false }
        report.noteSession(tls)
        let result = PeerChain(session: tls.handle).map { worker.verificationCache.verify(chain: $0, session: tls.handle, trust: trust) }
            ?? PeerVerifier.Result(refusal: .noCertificate)
        verification = result
        report.identity = result.identity
        for adoption in result.adoptions { listener.announce(adoption) }
        if let peer = result.peer, listener.config.revocation.crlFetch && CRLWait.mayWait(result, chain: peer, listener: listener) {
            awaitingCRL = result.chainStatus  // decided by the admission, once the download ended
            return true
        }
        guard let reason = result.refusal else { return true }
        report.refusal = reason
        tls.sendAlert(reason)
        return false
    }

    private func handshakeCompleted(_ tls: TLSSession) {
        report.noteSession(tls)
        report.resumed = tls.isResumed
        if verification == nil && !verifyPeer() { return refuse(report.refusal ?? .badCertificate) }
        guard report.refusal == nil, let identity = report.identity, let peerChain = verification?.peer else {
            return refuse(report.refusal ?? .badCertificate)
        }
        listener.metrics.handshakeSeconds.record(Double(monotonicNanos() - report.acceptedAt) / 1e9)
        worker.live.index(self)
        let entryDN = listener.config.certMap == .subject ? identity.subject : nil
        guard Admission.isNeeded(listener.config, awaitingCRL: awaitingCRL != nil) else {
            admitted.entryDN = entryDN
            return connectBackend()
        }
        phase = .admitting
        admission = Admission(listener: listener, trust: trust, worker: worker, peerChain: peerChain, links: chain,
                              identity: identity, report: report, entryDN: entryDN)
        admission!.start(awaitingCRL: awaitingCRL) { [unowned self] verdict in
            admission = nil
            switch verdict {
            case .admitted(let admitted):
                self.admitted = admitted
                connectBackend()
            case .refused(let reason, let detail):
                deny(reason, detail: detail)
            }
        }
    }

    /// revoke_active: once the OCSP answers this connection rests on have expired, OCSP
    /// is asked again; a fresh `revoked` closes it with a Notice of Disconnection. (No
    /// usable answer leaves it open: what was checked at the handshake still stands.)
    func recheckRevocation(now: Int) {
        guard phase == .relaying, backend?.isRelaying == true, let until = admitted.ocspUntil, until <= now,
              let peer = verification?.peer else { return }
        admitted.ocspUntil = nil  // one re-check at a time
        RevocationGate.ask(links: chain, peer: peer, trust: trust, listener: listener, loop: worker.loop) { [weak self] decision, until in
            guard let self, phase == .relaying else { return }
            admitted.ocspUntil = until ?? wallClockSeconds() + RevocationGate.retrySeconds(listener.config.revocation)
            if case .refuse(.revoked, let detail) = decision {
                closeWithNotice(NoticeOfDisconnection.revoked, end: .revoked, detail: detail + " (fresh OCSP answer)")
            }
        }
    }

    // MARK: - Backend

    private func connectBackend() {
        guard let tls else { return }
        phase = .relaying
        backend = BackendSession(listener: listener, worker: worker, tls: tls, client: client, report: report,
                                 entryDN: admitted.entryDN) { [unowned self] end, detail in close(end, detail: detail) }
        backend!.connect()
    }

    // MARK: - Events and deadlines

    func handleEvent(fd: Int32, events: UInt32) {
        client.noteEvents(events)
        switch phase {
        case .preamble: stepPreamble()
        case .handshaking: driveHandshake()
        case .lingering: drainLingering()
        case .relaying: backend?.clientEvents(events)
        case .admitting, .closed: break
        }
    }

    private func enter(_ next: Phase, until: UInt64) {
        phase = next
        deadline = until
        timer.arm(at: until)
    }

    /// The phase's deadline (the admission and the backend session keep their own).
    private func timerFired(now: UInt64) {
        if phase == .handshaking && handshakeYielded {
            handshakeYielded = false
            driveHandshake()
            if phase != .handshaking || handshakeYielded { return }
        }
        guard phase == .preamble || phase == .handshaking || phase == .lingering else { return }
        guard now >= deadline else { return timer.arm(at: deadline) }
        guard phase != .lingering else { return close(.refused) }
        report.refused(.handshakeTimeout, metrics: listener.metrics)
        let what = preamble?.timeoutDetail ?? "no complete handshake"
        close(.handshakeTimeout, detail: "\(what) within \(ConfigDuration.describe(listener.config.handshakeTimeoutNanos))")
    }

    // MARK: - Closing

    /// Refuses after a completed handshake: the alert goes out as a record, then the
    /// same lingering close as any refusal.
    private func deny(_ reason: RefusalReason, detail: String) {
        tls?.sendAlert(reason)
        refuse(reason, detail: detail)
    }

    /// Lingering close after an alert: stop writing, read and drop what the client
    /// still sends (a TLS 1.3 client sends its Finished before it learns of the refusal),
    /// then close. Closing at once would reset the connection and lose the alert.
    private func refuse(_ reason: RefusalReason, detail: String? = nil) {
        report.refused(reason, detail: detail, metrics: listener.metrics)
        admission?.cancel()
        admission = nil
        tls = nil
        transport.release()
        client.descriptor.shutdownWrite()
        enter(.lingering, until: monotonicNanos() + Self.lingerNanos)
        drainLingering()  // edge-triggered: what is already there brings no new event
    }


    private func drainLingering() {
        if client.descriptor.discardInput() != .wouldBlock { close(.refused) }
    }

    /// Ends the connection from outside (a new CRL, the directory, shutdown): an
    /// established one politely, at an LDAP message boundary with `notice`.
    func closeWithNotice(_ notice: [UInt8], end: ConnectionEnd, detail: String) {
        switch phase {
        case .admitting where end == .revoked: deny(.revoked, detail: detail)  // as at the handshake
        case .relaying: backend?.closeWithNotice(notice, end: end, detail: detail)
        default: close(end, detail: detail)
        }
    }

    /// The one way out: close_notify when a verified session is still usable, both
    /// descriptors closed, buffers back to the pool, and the report.
    func close(_ end: ConnectionEnd, detail: String? = nil) {
        guard phase != .closed else { return }
        if let tls, phase == .relaying || phase == .admitting, backend?.closeNotifySent != true {
            _ = tls.finishWriting()  // best effort: never waits
        }
        phase = .closed
        timer.cancel()
        admission?.cancel()
        admission = nil
        worker.loop.deregister(fd: client.raw)
        client.descriptor.close()
        backend?.release()
        report.alertReceived = tls?.receivedAlert
        if listener.config.clientAuth != .none, let authz = backend?.authz { report.authz = authz }
        tls = nil
        transport.release()
        worker.live.forget(self)
        listener.releaseSlot()
        report.ended(end, detail: detail, listener: listener)
    }
}
