/// One client, from accept to close: TLS handshake and verification, the optional
/// directory check, the backend connect, the relay, and the close with its report.
///
/// Phases: (readingProxyHeader) -> (awaitingStartTLS) -> handshaking -> (checkingRevocation) -> (checkingDirectory) ->
/// connecting -> relaying -> closed, or -> lingering -> closed when the client is refused.
/// No backend connection exists before the client's chain has been verified: nothing
/// reaches the backend before that.
/// Each phase sets `deadline` when it begins, and the one timer enforces it.
final class ClientConnection: EventHandler {
    enum Phase { case readingProxyHeader, awaitingStartTLS, handshaking, checkingRevocation, checkingDirectory, connecting, relaying, lingering, closed }

    let id: UInt64
    let listener: ListenerRuntime
    private unowned let worker: Worker
    /// The credentials this session was started with: kept for its whole life.
    private let trust: TrustState
    private let client: StreamSocket
    private let transport: SocketTransport
    private var tls: TLSSession?
    private var dial: BackendDial?
    private var backend: StreamSocket?
    private var relay: Relay<TLSSession, StreamSocket>?
    /// tls = starttls: the plain LDAP before the handshake.
    private var door: StartTLSDoor?
    private(set) var phase = Phase.handshaking
    /// When the current phase gives up.
    private var deadline: UInt64 = 0
    private lazy var timer = worker.loop.timer { [unowned self] now in self.timerFired(now: now) }
    private var report: ConnectionReport
    private var verified = false
    /// The handshake gave way to other connections and goes on from the timer.
    private var handshakeYielded = false
    private var lastActivity: UInt64 = 0
    /// A close waiting for the LDAP message in flight to the client (closeWithNotice).
    private var closing: (end: ConnectionEnd, detail: String, deadline: UInt64)?
    /// The certificates the client sent, read once from the session.
    private var peerChain: PeerChain?
    /// The verified chain, by which live revocation finds this connection.
    private(set) var chain: [ChainLink] = []
    /// When the backend must have answered the proxy's own bind (client_auth: the opening
    /// bind or a rebind), while one is under way.
    private var bindDeadline: UInt64? {
        guard let requests = relay?.requests, requests.interceptedMessageID != nil else { return nil }
        return requests.bindSentAt + listener.config.connectTimeoutNanos
    }
    /// The DN of the certificate's entry, whose identity requests carry (client_auth).
    private var entryDN: String?
    /// With verify_cert_in_directory: what the background re-check asks about.
    private(set) var directoryLookup: DirectoryLookup?

    /// How long a close waits for the message in flight before it gives up on the
    /// notice: short, so that a revoked client is gone within 2 s of the new CRL.
    static let boundaryWaitNanos: UInt64 = 1_000_000_000
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

    // MARK: - Handshake and verification

    func start() {
        // Edge-triggered, both directions, registered once: readiness is tracked by the
        // sockets and the relay, so no epoll_ctl is needed per state change.
        worker.loop.register(fd: client.raw, events: Epoll.edgeTriggeredBoth, handler: self)
        let config = listener.config
        guard config.proxyProtocolIn != .off else { return openDoorOrStartSession() }
        guard let address = report.peer.ipBytesAndPort?.bytes, config.trustedProxies.contains(where: { $0.contains(address) }) else {
            report.refused(.untrustedProxy, metrics: listener.metrics)
            return close(.refused, detail: "proxy_protocol_in is on and \(report.peer) is not in trusted_proxies")
        }
        enter(.readingProxyHeader, until: report.acceptedAt + config.handshakeTimeoutNanos)
        readProxyHeader()
    }

    /// The balancer's header comes before the TLS bytes.
    private func readProxyHeader() {
        switch ProxyHeaderReader.step(client.descriptor, mode: listener.config.proxyProtocolIn) {
        case .waiting: return
        case .invalid(let why):
            report.refused(.badProxyHeader, metrics: listener.metrics)
            close(.refused, detail: why)
        case .failed(let why): close(.error, detail: why)
        case .taken(let address):
            if let address {
                report.proxiedBy = report.peer
                report.peer = address
            }
            openDoorOrStartSession()
        }
    }

    /// LDAPS starts TLS at once; a StartTLS listener serves plain LDAP until the client
    /// asks for TLS, within the same handshake_timeout from accept.
    private func openDoorOrStartSession() {
        guard listener.config.tls == .starttls else { return startSession() }
        door = StartTLSDoor(socket: client, maxRequestSize: listener.config.maxRequestSize)
        enter(.awaitingStartTLS, until: report.acceptedAt + listener.config.handshakeTimeoutNanos)
        stepDoor()
    }

    private func stepDoor() {
        guard let door else { return }
        switch door.step() {
        case .waiting: break
        case .upgrade:
            self.door = nil
            startSession()
        case .closed(let why):
            report.refused(.startTLSRequired, metrics: listener.metrics)
            close(.refused, detail: why + (door.refusedRequests > 0 ? "; \(door.refusedRequests) request(s) answered confidentialityRequired" : ""))
        case .stop(let stop):
            door.sendNotice(stop.notice)
            report.refused(stop.reason, metrics: listener.metrics)
            close(stop.end, detail: stop.detail + "; Notice of Disconnection sent")
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
        verified = true
        report.noteSession(tls)
        guard let peer = PeerChain(session: tls.handle) else {
            report.refusal = .noCertificate
            tls.sendAlert(.noCertificate)
            return false
        }
        let result = worker.verificationCache.verify(chain: peer, session: tls.handle, trust: trust)
        report.identity = result.identity
        chain = result.chain
        peerChain = peer
        for adoption in result.adoptions { listener.announce(adoption) }
        if listener.config.revocation.crlFetch && CRLWait.mayWait(result, chain: peer, listener: listener) {
            awaitingCRL = result.chainStatus  // decided once the first download of its issuer's CRL ended
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
        if !verified && !verifyPeer() { return refuse(report.refusal ?? .badCertificate) }
        guard report.refusal == nil, report.identity != nil else { return refuse(report.refusal ?? .badCertificate) }
        let now = monotonicNanos()
        listener.metrics.handshakeSeconds.record(Double(now - report.acceptedAt) / 1e9)
        worker.live.index(self)
        if listener.config.certMap == .subject { entryDN = report.identity?.subject }
        if listener.config.revocation.ocsp != .off || awaitingCRL != nil { return startRevocationCheck(now: now) }
        if listener.config.usesDirectory { return startDirectoryCheck(now: now) }
        connectBackend(now: now)
    }

    // MARK: - Revocation services (OCSP)

    /// Until when the OCSP answers this connection rests on hold (revoke_active asks again then).
    private(set) var ocspUntil: Int?
    /// crl_fetch: the chain lacked a CRL that is being downloaded for the first time
    /// (GnuTLS's status on the chain, to decide again once it is in).
    private var awaitingCRL: UInt32?

    /// Nothing reaches the backend until OCSP has said yes (or, best-effort, could not say),
    /// and, with crl_fetch, the first download of a missing CRL has ended.
    private func startRevocationCheck(now: UInt64) {
        guard let peerChain else { return deny(.ocspUnavailable, detail: "cannot read the client certificate") }
        let ocsp = listener.config.revocation.ocsp != .off
        enter(.checkingRevocation, until: now + (awaitingCRL != nil ? CRLFetcher.firstWaitNanos : 0)
            + (ocsp ? listener.config.revocation.ocspTimeoutNanos : 0) + 500_000_000)
        if let chainStatus = awaitingCRL {
            awaitingCRL = nil
            crlWaitStatus = chainStatus
            return CRLWait.start(links: chain, chainStatus: chainStatus, listener: listener, loop: worker.loop) { [self] refusal in
                crlWaitEnded(refusal)
            }
        }
        RevocationGate.ask(links: chain, peer: peerChain, trust: trust, listener: listener, loop: worker.loop) { [self] decision, until in
            ocspUntil = until ?? wallClockSeconds() + RevocationGate.retrySeconds(listener.config.revocation)
            revocationDecided(decision)
        }
    }

    /// Set while the connection waits for a CRL's first download (the chain's status).
    private var crlWaitStatus: UInt32?

    /// The end of the CRL wait, from CRLWait or from the phase timer when its poll runs
    /// late: either way the CRL verdict decides, never ocsp_policy. Then OCSP, if on.
    private func crlWaitEnded(_ refusal: RefusalReason?) {
        guard phase == .checkingRevocation, crlWaitStatus != nil else { return }
        crlWaitStatus = nil
        if let refusal {
            let detail = switch refusal {
            case .revoked: "revoked by the CRL downloaded for it"
            case .crlMissing, .crlExpired: "no current CRL after waiting for its download"
            default: "refused after waiting for its CRL's download"
            }
            return deny(refusal, detail: detail)
        }
        if listener.config.revocation.ocsp != .off { return startRevocationCheck(now: monotonicNanos()) }
        revocationDecided(.pass(note: ""))
    }

    /// revoke_active: once the answers this connection rests on have expired, OCSP is
    /// asked again; a fresh `revoked` closes it with a Notice of Disconnection. (No
    /// usable answer leaves it open: what was checked at the handshake still stands.)
    func recheckRevocation(now: Int) {
        guard phase == .relaying, closing == nil, let until = ocspUntil, until <= now, let peerChain else { return }
        ocspUntil = nil  // one re-check at a time
        RevocationGate.ask(links: chain, peer: peerChain, trust: trust, listener: listener, loop: worker.loop) { [weak self] decision, until in
            guard let self, self.phase == .relaying else { return }
            self.ocspUntil = until ?? wallClockSeconds() + RevocationGate.retrySeconds(self.listener.config.revocation)
            if case .refuse(.revoked, let detail) = decision {
                self.closeWithNotice(NoticeOfDisconnection.revoked, end: .revoked, detail: detail + " (fresh OCSP answer)")
            }
        }
    }

    private func revocationDecided(_ decision: OCSPPolicy.Decision) {
        guard phase == .checkingRevocation else { return }
        switch decision {
        case .pass(let note):
            if !note.isEmpty { report.ocsp = note }
            let now = monotonicNanos()
            if listener.config.usesDirectory { return startDirectoryCheck(now: now) }
            connectBackend(now: now)
        case .refuse(let reason, let detail):
            deny(reason, detail: detail)
        }
    }

    // MARK: - Directory

    /// Nothing reaches the backend until the directory has said yes.
    private func startDirectoryCheck(now: UInt64) {
        guard let identity = report.identity, let peerChain else {
            return deny(.directoryUnavailable, detail: "cannot read the client certificate")
        }
        let lookup = DirectoryLookup(chain: peerChain, identity: identity)
        directoryLookup = lookup
        enter(.checkingDirectory, until: now + listener.config.directoryTimeoutNanos + 500_000_000)
        DirectoryGate.ask(lookup, listener: listener, worker: worker, generation: trust.generation, peer: report.peer,
                          subject: identity.subject) { [self] decision in directoryDecided(decision) }
    }

    private func directoryDecided(_ decision: DirectoryGate.Decision) {
        guard phase == .checkingDirectory else { return }
        switch decision {
        case .pass(let dn):
            if let dn { entryDN = dn }
            // The login needs an entry: directory_unavailable = allow cannot invent one.
            if listener.config.clientAuth != .none && entryDN == nil {
                return deny(.directoryUnavailable, detail: "the directory did not say which entry the certificate maps to")
            }
            connectBackend(now: monotonicNanos())
        case .refuse(let reason, let detail): deny(reason, detail: detail)
        }
    }

    // MARK: - Backend

    private func connectBackend(now: UInt64) {
        if dial == nil { dial = BackendDial(to: listener.backendAddress, timeoutNanos: listener.config.connectTimeoutNanos, now: now) }
        let step = dial!.attempt(now: now) { listener.logger.debug("\($0)", metadata: ["client": "\(report.peer)"]) }
        switch step {
        case .failed(let why): return backendUnavailable(why)
        case .retry(let at): return enter(.connecting, until: at)
        case .connected(let socket), .inProgress(let socket):
            backend = socket
            worker.loop.register(fd: socket.raw, events: Epoll.edgeTriggeredBoth, handler: self)
            enter(.connecting, until: dial!.deadline)
            if case .connected = step { backendConnected() }
        }
    }

    private func backendConnected() {
        guard let tls, let backend else { return }
        // With proxy_protocol = v2, the first bytes to the backend say who the client is.
        let preface = listener.config.proxyProtocol != .v2 ? [] : ProxyProtocolV2.header(
            client: report.peer, local: Socket.localAddress(client.raw), tlsVersion: report.tlsVersion,
            commonName: report.identity?.commonName)
        let config = listener.config
        if config.isMessageAware {
            // The proxy's own bind (client_auth) must be answered within connect_timeout.
            let login = ClientLogin(mode: config.clientAuth, entryDN: entryDN ?? "")
            let requests = ClientRequests(login: login, maxRequestSize: config.maxRequestSize, bindDN: config.backendBindDN,
                                          bindPassword: listener.backendPassword, preface: preface)
            relay = Relay(client: tls, backend: backend, pool: worker.pool, requests: requests)
        } else {
            relay = Relay(client: tls, backend: backend, pool: worker.pool, preface: preface)
        }
        phase = .relaying
        touch()
        if let bindDeadline { timer.arm(at: bindDeadline) }
        relayed(relay!.pump())
    }

    private func backendUnavailable(_ detail: String) {
        listener.logger.warning("backend unavailable", metadata: ["client": "\(report.peer)", "detail": "\(detail)"])
        close(.backendUnavailable, detail: detail)
    }

    // MARK: - Relay

    private func relayed(_ outcome: Relay<TLSSession, StreamSocket>.Outcome) {
        switch outcome {
        case .open(let moved):
            if let bindDeadline { timer.arm(at: bindDeadline) }  // no-op unless earlier than what is armed
            guard moved, let relay else { return }
            touch()
            report.publishBytes(fromClient: relay.bytesFromClient, toClient: relay.bytesToClient, metrics: listener.metrics)
        case .finished: close(.closed)
        case .failed(let why):
            if let closing { return close(closing.end, detail: closing.detail) }
            close(.error, detail: why)
        case .noticeDelivered: close(closing!.end, detail: closing!.detail + "; Notice of Disconnection sent")
        case .boundaryUnreachable(let why): close(closing!.end, detail: closing!.detail + "; " + why)
        case .stop(let stop):
            report.refused(stop.reason, detail: stop.detail, metrics: listener.metrics)
            closeWithNotice(stop.notice, end: stop.end, detail: stop.detail)
        }
    }

    /// Bytes moved: the idle timeout starts again.
    private func touch() {
        lastActivity = monotonicNanos()
        let idle = listener.config.idleTimeoutNanos
        if idle > 0 { timer.arm(at: lastActivity + idle) }  // no-op unless earlier than what is armed
    }

    // MARK: - Events and deadlines

    func handleEvent(fd: Int32, events: UInt32) {
        if fd == client.raw {
            client.noteEvents(events)
            switch phase {
            case .readingProxyHeader: readProxyHeader()
            case .awaitingStartTLS: stepDoor()
            case .handshaking: driveHandshake()
            case .lingering: drainLingering()
            case .relaying:
                relay!.noteClientEvents(events)
                relayed(relay!.pump())
            case .checkingRevocation, .checkingDirectory, .connecting, .closed: break
            }
        } else if let backend, fd == backend.raw {
            backend.noteEvents(events)
            switch phase {
            case .connecting:
                guard events & (Epoll.output | Epoll.error | Epoll.hangup) != 0, let dial else { return }
                if let why = dial.finish(backend, backend: listener.config.backend!) { return backendUnavailable(why) }
                backendConnected()
            case .relaying:
                relay!.noteBackendEvents(events)
                relayed(relay!.pump())
            default: break
            }
        }
    }

    private func enter(_ next: Phase, until: UInt64) {
        phase = next
        deadline = until
        timer.arm(at: until)
    }

    private func timerFired(now: UInt64) {
        switch phase {
        case .readingProxyHeader where now >= deadline, .awaitingStartTLS where now >= deadline, .handshaking where now >= deadline:
            report.refused(.handshakeTimeout, metrics: listener.metrics)
            let what = phase == .awaitingStartTLS ? "no StartTLS request" : "no complete handshake"
            return close(.handshakeTimeout, detail: "\(what) within \(ConfigDuration.describe(listener.config.handshakeTimeoutNanos))")
        case .handshaking where handshakeYielded:
            handshakeYielded = false
            driveHandshake()
            if phase != .handshaking || handshakeYielded { return }
        case .checkingRevocation where now >= deadline:
            if let chainStatus = crlWaitStatus {
                return crlWaitEnded(CRLWait.verdict(links: chain, chainStatus: chainStatus, listener: listener))
            }
            return revocationDecided(OCSPPolicy.decide([OCSPPolicy.Checked(
                serial: report.identity?.serialHex ?? "", outcome: .failure(.unavailable("no OCSP answer in time")))],
                policy: listener.config.revocation.ocspPolicy))
        case .checkingDirectory where now >= deadline:
            return directoryDecided(DirectoryGate.decision(.unavailable("the directory did not answer in time"), listener: listener,
                                                           peer: report.peer, subject: report.identity?.subject ?? ""))
        case .connecting where now >= deadline:
            return backend == nil ? connectBackend(now: now) : backendUnavailable(dial!.timedOut(backend: listener.config.backend!))
        case .lingering where now >= deadline:
            return close(.refused)
        case .relaying:
            if let bindDeadline, closing == nil {
                if now >= bindDeadline {
                    report.refused(.backendBindFailed, metrics: listener.metrics)
                    let detail = "the backend did not answer the proxy's bind within \(ConfigDuration.describe(listener.config.connectTimeoutNanos))"
                    return closeWithNotice(NoticeOfDisconnection.backendBindFailed, end: .backendUnavailable, detail: detail)
                }
                timer.arm(at: bindDeadline)
            }
            if let closing {
                if now >= closing.deadline {
                    return close(closing.end, detail: closing.detail + "; no LDAP message boundary within 1s, closed without notice")
                }
                return timer.arm(at: closing.deadline)
            }
            let idle = listener.config.idleTimeoutNanos
            guard idle > 0 else { return }
            deadline = lastActivity + idle
            if now >= deadline {
                let quiet = ConfigDuration.describe(idle)
                return close(.idleTimeout, detail: relay?.awaitingBackend == true
                    ? "the backend did not answer within \(quiet)" : "no bytes either way for \(quiet)")
            }
        case .closed:
            return
        default:
            break
        }
        timer.arm(at: deadline)
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
        tls = nil
        transport.release()
        client.descriptor.shutdownWrite()
        enter(.lingering, until: monotonicNanos() + Self.lingerNanos)
        drainLingering()  // edge-triggered: what is already there brings no new event
    }

    private func drainLingering() {
        if client.descriptor.discardInput() != .wouldBlock { close(.refused) }
    }

    /// Closes an established connection politely: waits (briefly) for the LDAP message
    /// in flight to the client to finish, sends `notice` (a Notice of Disconnection),
    /// then closes. Nothing more from the client reaches the backend meanwhile.
    func closeWithNotice(_ notice: [UInt8], end: ConnectionEnd, detail: String) {
        // Revoked while its OCSP or CRL check is pending: refused as at the handshake.
        if phase == .checkingRevocation && end == .revoked { return deny(.revoked, detail: detail) }
        guard phase == .relaying, closing == nil, let relay else { return close(end, detail: detail) }
        closing = (end, detail, monotonicNanos() + Self.boundaryWaitNanos)
        timer.arm(at: closing!.deadline)
        relayed(relay.closeAtNextBoundary(with: notice))
    }

    /// The one way out: close_notify when a verified session is still usable, both
    /// descriptors closed, buffers back to the pool, and the report.
    func close(_ end: ConnectionEnd, detail: String? = nil) {
        guard phase != .closed else { return }
        if let tls, phase == .relaying || phase == .connecting || phase == .checkingDirectory || phase == .checkingRevocation,
           relay?.closeNotifySent != true {
            _ = tls.finishWriting()  // best effort: never waits
        }
        phase = .closed
        timer.cancel()
        worker.loop.deregister(fd: client.raw)
        client.descriptor.close()
        if let backend {
            worker.loop.deregister(fd: backend.raw)
            backend.descriptor.close()
        }
        report.alertReceived = tls?.receivedAlert
        if listener.config.clientAuth != .none, let login = relay?.requests?.login { report.authz = login.authzDescription }
        tls = nil
        transport.release()
        relay?.release()
        if let relay {
            report.publishBytes(fromClient: relay.bytesFromClient, toClient: relay.bytesToClient, metrics: listener.metrics)
        }
        worker.live.forget(self)
        listener.releaseSlot()
        report.ended(end, detail: detail, listener: listener)
    }
}
