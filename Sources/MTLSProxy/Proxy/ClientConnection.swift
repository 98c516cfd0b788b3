import CGnuTLSShim
import Glibc
import Logging

/// The GnuTLS verify callback: finds the connection through the session pointer and
/// lets it decide. Sending the alert here gives the client the precise reason.
let peerVerifyCallback: @convention(c) (gnutls_session_t?) -> Int32 = { session in
    guard let session, let context = gnutls_session_get_ptr(session) else { return -1 }
    return Unmanaged<ClientConnection>.fromOpaque(context).takeUnretainedValue().verifyPeerDuringHandshake()
}

/// GnuTLS hands over the body of the client's Certificate message before it parses it:
/// the only way to tell a well-formed empty list (no certificate) from a message with no
/// body, which GnuTLS reports with the same error (see HandshakeFailure).
let certificateMessageHook: @convention(c) (
    gnutls_session_t?, UInt32, UInt32, UInt32, UnsafePointer<gnutls_datum_t>?
) -> Int32 = { session, _, _, incoming, message in
    guard incoming != 0, let session, let message, let context = gnutls_session_get_ptr(session) else { return 0 }
    let body = UnsafeRawBufferPointer(start: message.pointee.data, count: Int(message.pointee.size))
    Unmanaged<ClientConnection>.fromOpaque(context).takeUnretainedValue().clientCertificateMessage(body)
    return 0
}

/// One client: TLS handshake, verification, backend connect, relay, close.
///
/// Phases: handshaking -> connecting -> relaying -> closed, or handshaking -> lingering
/// -> closed when the client is refused. No backend connection exists before the
/// client's chain has been verified: nothing reaches the backend before that.
final class ClientConnection: EventHandler {
    enum Phase { case handshaking, checkingDirectory, connecting, relaying, lingering, closed }

    let timerKey: UInt64
    private lazy var timer = worker.loop.timer { [unowned self] now in self.timerFired(now: now) }
    private unowned let worker: Worker
    private let listener: ListenerRuntime
    /// The credentials this session was started with: kept alive for its whole life.
    private let trust: TrustState
    private let clientFD: Int32
    private var backendFD: Int32 = -1
    private var session: gnutls_session_t?
    private let peer: SocketAddress
    private(set) var phase = Phase.handshaking

    private let acceptedAt: UInt64
    private var deadline: UInt64 = 0
    private var lastActivity: UInt64 = 0

    private var identity: PeerIdentity?
    private var refusal: RefusalReason?
    private var verified = false
    private var failureDetail: String?
    /// The client's Certificate message held a well-formed list of no certificates.
    private var sentEmptyCertificateList = false
    /// The last gnutls_record_recv refused a renegotiation: GnuTLS still holds its
    /// ClientHello and drops it on the next call (see the relay loop).
    private var renegotiationRefused = false

    private var toBackend = RelayBuffer()
    private var toClient = RelayBuffer()
    /// Size of a TLS record GnuTLS has queued after EAGAIN: the retry must use it.
    private var pendingRecordSize = 0
    private var clientReadable = true
    private var clientWritable = true
    private var backendReadable = false
    private var backendWritable = false
    private var clientDone = false  // close_notify or FIN from the client
    private var backendDone = false  // FIN from the backend
    private var backendWriteShut = false
    /// When the backend connect gives up (connect_timeout after the first attempt).
    private var connectDeadline: UInt64 = 0
    private var waitingForDescriptor = false
    /// Bytes went to the backend and nothing came back since: an idle timeout then
    /// says that the backend did not answer, not that the client went quiet.
    private var awaitingBackend = false
    private var byeSent = false
    /// Bytes read from the client socket that GnuTLS has not taken yet (see ClientTransport).
    private var readAhead = RelayBuffer()
    /// Set by the transport when the client socket said EAGAIN (either way) during the
    /// current GnuTLS call: only then is a new epoll edge sure to come.
    private var transportBlocked = false
    /// Bytes handed to GnuTLS so far: tells whether a GnuTLS call made progress.
    private var bytesPulled = 0
    /// The handshake gave way to other connections and goes on from a timer.
    private var handshakeYielded = false
    private var bytesFromClient = 0
    private var bytesToClient = 0
    private var reportedFromClient = 0
    private var reportedToClient = 0
    private var tlsVersion: String?
    private var cipher: String?
    private var resumed = false
    /// Message boundaries of what the client has received, so that a Notice of
    /// Disconnection never lands inside another message.
    private var framer = LDAPMessageFramer()
    private var closing: ClosingWithNotice?
    /// The verified chain, by which the worker finds connections that a CRL revokes.
    private(set) var chain: [ChainLink] = []
    /// With verify_cert_in_directory: the certificate and mapping values, kept for the
    /// background re-check of live connections.
    private(set) var directoryLookup: DirectoryLookup?
    var listenerRuntime: ListenerRuntime { listener }

    /// A close that waits for the next LDAP message boundary, then sends a notice.
    private struct ClosingWithNotice {
        var notice: [UInt8]
        var end: ConnectionEnd
        var detail: String
        var deadline: UInt64
        var noticePending = false
    }

    /// How long a close waits for the message in flight to finish before it gives up
    /// on the notice: short, so that a revoked client is gone within rule 4's 2 s.
    static let boundaryWaitNanos: UInt64 = 1_000_000_000

    init(fd: Int32, peer: SocketAddress, listener: ListenerRuntime, trust: TrustState, worker: Worker) {
        clientFD = fd
        self.peer = peer
        self.listener = listener
        self.trust = trust
        self.worker = worker
        timerKey = worker.loop.makeTimerKey()
        acceptedAt = monotonicNanos()
    }

    // MARK: - Handshake

    func start() {
        var session: gnutls_session_t?
        // NONBLOCK: GnuTLS must never wait inside a call; deadlines are our timers.
        guard gnutls_init(&session, UInt32(GNUTLS_SERVER) | UInt32(GNUTLS_NONBLOCK)) == 0, let session else {
            finish(.error, detail: "gnutls_init failed")
            return
        }
        self.session = session
        gnutls_priority_set(session, trust.priority)
        gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(trust.credentials))
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE)
        let context = Unmanaged.passUnretained(self).toOpaque()
        gnutls_session_set_ptr(session, context)
        ClientTransport.attach(session, context: context)
        gnutls_handshake_set_hook_function(
            session, GNUTLS_HANDSHAKE_CERTIFICATE_PKT.rawValue, GNUTLS_HOOK_PRE, certificateMessageHook)
        listener.ticketKey?.enable(on: session)
        // Edge-triggered, both directions, registered once: readiness is tracked in the
        // flags below and cleared on EAGAIN, so no epoll_ctl is needed per state change.
        worker.loop.register(fd: clientFD, events: Epoll.edgeTriggeredBoth, handler: self)
        deadline = acceptedAt + listener.config.handshakeTimeoutNanos
        timer.arm(at: deadline)
        driveHandshake()
    }

    /// Called by GnuTLS (through peerVerifyCallback) once the client's certificate
    /// chain has arrived. Returns 0 to go on, -1 to fail the handshake.
    func verifyPeerDuringHandshake() -> Int32 {
        guard let session else { return -1 }
        captureSessionInfo()
        let result = PeerChain(session: session).map { worker.verificationCache.verify(chain: $0, session: session, trust: trust) }
            ?? PeerVerifier.Result(identity: nil, refusal: .noCertificate)
        identity = result.identity
        chain = result.chain
        verified = true
        for adoption in result.adoptions { announce(adoption) }
        guard let reason = result.refusal else { return 0 }
        refusal = reason
        gnutls_alert_send(session, GNUTLS_AL_FATAL, gnutls_alert_description_t(reason.alert(tls13: isTLS13)))
        return -1
    }

    /// A CA this client sent became a known signer: say which of its CRLs now count.
    private func announce(_ adoption: ClientIssuers.Adoption) {
        for crl in adoption.promoted {
            listener.metrics.publish(crl, loadedAt: wallClockSeconds())
            listener.logger.info("CRL in force", metadata: [
                "issuer": "\(crl.issuer)",
                "detail": "\(crl.file): its CA arrived in a verified client chain; \(crl.revoked.count) revoked",
            ])
        }
        for note in adoption.notes { listener.logger.warning("CRL skipped", metadata: ["detail": "\(note)"]) }
    }

    func clientCertificateMessage(_ body: UnsafeRawBufferPointer) {
        sentEmptyCertificateList = HandshakeFailure.isEmptyCertificateList(body, tls13: isTLS13)
    }

    private var isTLS13: Bool {
        guard let session else { return false }
        return gnutls_protocol_get_version(session) == GNUTLS_TLS1_3
    }

    /// How many GnuTLS calls one wake-up may spend on a handshake before giving way to
    /// the other connections of the loop (a hello in thousands of tiny records).
    static let handshakeCallsPerWakeUp = 1024

    /// Runs the handshake as far as the bytes at hand allow.
    ///
    /// GnuTLS answers GNUTLS_E_AGAIN not only when the socket is empty: after each record
    /// that does not complete a handshake message (a ClientHello or a client certificate
    /// larger than one record, or one cut into many small records) it returns AGAIN
    /// without reading on. The next records then sit in the read-ahead (or in the socket,
    /// already reported by the one edge an edge-triggered epoll gives), and no event
    /// would ever come for them. So AGAIN ends the loop only when the transport itself
    /// would block, or when the call took no bytes at all.
    private func driveHandshake() {
        guard let session else { return }
        var calls = 0
        while true {
            transportBlocked = false
            let pulledBefore = bytesPulled
            let rc = gnutls_handshake(session)
            if rc == 0 { return handshakeCompleted() }
            if rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED {
                if transportBlocked || bytesPulled == pulledBefore { return }  // the next edge drives it on
                calls += 1
                if calls < Self.handshakeCallsPerWakeUp { continue }
                // Progress, and more may be waiting: go on after the other ready
                // connections had their turn (a timer due now fires after this batch).
                handshakeYielded = true
                return timer.arm(at: monotonicNanos())
            }
            if gnutls_error_is_fatal(rc) == 0 { continue }  // a warning alert: carry on
            return handshakeFailed(rc)
        }
    }

    private func handshakeFailed(_ rc: Int32) {
        guard let session else { return }
        if refusal != nil {
            // The verify callback refused and already sent the precise alert.
            return refuse()
        }
        switch HandshakeFailure.classify(rc, sentEmptyCertificateList: sentEmptyCertificateList) {
        case .noCertificate:
            refusal = .noCertificate
            gnutls_alert_send(session, GNUTLS_AL_FATAL, gnutls_alert_description_t(RefusalReason.noCertificate.alert(tls13: isTLS13)))
        case .clientGone:
            refusal = .handshakeFailed
        case .protocolError:
            // What GnuTLS maps the error to, as gnutls-serv sends it: decode_error for a
            // malformed message, decrypt_error for a bad signature, and so on.
            refusal = .handshakeFailed
            var level: Int32 = 0
            let alert = gnutls_error_to_alert(rc, &level)
            if alert >= 0 {
                gnutls_alert_send(session, gnutls_alert_level_t(UInt32(level)), gnutls_alert_description_t(UInt32(alert)))
            }
        }
        failureDetail = GnuTLS.describe(rc)
        if rc == GNUTLS_E_FATAL_ALERT_RECEIVED, let name = gnutls_alert_get_name(gnutls_alert_get(session)) {
            failureDetail = "client sent alert: \(String(cString: name))"
        }
        refuse()
    }

    private func handshakeCompleted() {
        captureSessionInfo()
        if let session { resumed = gnutls_session_is_resumed(session) != 0 }
        // Resumed sessions skip the verify callback: check them like a full handshake.
        if !verified {
            if verifyPeerDuringHandshake() != 0 { return refuse() }
        }
        guard refusal == nil, identity != nil else {
            refusal = refusal ?? .badCertificate
            return refuse()
        }
        let now = monotonicNanos()
        listener.metrics.handshakeSeconds.record(Double(now - acceptedAt) / 1e9)
        worker.index(self)
        if listener.config.verifyCertInDirectory { return startDirectoryCheck(now: now) }
        connectBackend(now: now)
    }

    /// Lingering close after an alert: stop writing, read and drop what the client
    /// still sends (a TLS 1.3 client sends its Finished before it learns of the refusal),
    /// then close. Closing at once would reset the connection and lose the alert.
    private func refuse() {
        listener.metrics.refusals[refusal ?? .handshakeFailed]?.increment()
        if let session { gnutls_deinit(session) }
        session = nil
        readAhead.discard(to: worker.pool)
        shutdown(clientFD, Int32(SHUT_WR))
        phase = .lingering
        deadline = monotonicNanos() + 2_000_000_000
        timer.arm(at: deadline)
        drainLingering()  // edge-triggered: what is already there brings no new event
    }

    private func drainLingering() {
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while true {
            let n = withUnsafeMutableBytes(of: &scratch) { recv(clientFD, $0.baseAddress, $0.count, 0) }
            if n > 0 { continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
            return finish(.refused)
        }
    }

    // MARK: - Directory

    /// After the chain verified: does the user's entry hold exactly this certificate?
    /// Nothing reaches the backend until the directory has said yes.
    private func startDirectoryCheck(now: UInt64) {
        guard let session, let identity, let lookup = PeerChain(session: session).map({ DirectoryLookup(chain: $0, identity: identity) }) else {
            return deny(.directoryUnavailable, detail: "cannot read the client certificate")
        }
        directoryLookup = lookup
        phase = .checkingDirectory
        deadline = now + listener.config.directoryTimeoutNanos + 500_000_000
        timer.arm(at: deadline)
        worker.directoryChecker(for: listener).check(lookup, generation: trust.generation) { [self] verdict in
            self.directoryAnswered(verdict)
        }
    }

    private func directoryAnswered(_ verdict: DirectoryVerdict) {
        guard phase == .checkingDirectory else { return }
        switch verdict {
        case .present:
            connectBackend(now: monotonicNanos())
        case .absent(let detail):
            deny(.notInDirectory, detail: detail)
        case .unavailable(let why):
            if listener.config.directoryUnavailable == .allow {
                listener.logger.warning("directory unavailable, allowing", metadata: [
                    "client": "\(peer)", "subject": "\(identity?.subject ?? "")", "detail": "\(why)",
                ])
                connectBackend(now: monotonicNanos())
            } else {
                deny(.directoryUnavailable, detail: why)
            }
        }
    }

    /// Refuses after a completed handshake: the alert goes out as a record, then the
    /// same lingering close as any refusal.
    private func deny(_ reason: RefusalReason, detail: String) {
        refusal = reason
        failureDetail = detail
        if let session { gnutls_alert_send(session, GNUTLS_AL_FATAL, gnutls_alert_description_t(reason.alert(tls13: isTLS13))) }
        refuse()
    }

    // MARK: - Backend

    /// How often a connect that found no free descriptor is tried again.
    static let descriptorRetryNanos: UInt64 = 100_000_000

    private func connectBackend(now: UInt64) {
        phase = .connecting  // nothing from the client is read until the backend is there
        if connectDeadline == 0 { connectDeadline = now + listener.config.connectTimeoutNanos }
        switch Socket.connect(to: listener.backendAddress) {
        case .failed(let error):
            if Socket.isResourceShortage(error.errno) && now + Self.descriptorRetryNanos < connectDeadline {
                // Out of descriptors (the client took the last one): wait for one to be
                // freed, up to connect_timeout, rather than refuse a verified client.
                if !waitingForDescriptor {
                    waitingForDescriptor = true
                    listener.logger.debug("waiting for a descriptor to connect to the backend", metadata: [
                        "client": "\(peer)", "detail": "\(error)",
                    ])
                }
                deadline = now + Self.descriptorRetryNanos
                return timer.arm(at: deadline)
            }
            return backendUnavailable(waitingForDescriptor
                ? "\(error), still after \(ConfigDuration.describe(listener.config.connectTimeoutNanos))" : "\(error)")
        case .connected(let fd):
            backendFD = fd
            worker.loop.register(fd: fd, events: Epoll.edgeTriggeredBoth, handler: self)
            backendConnected()
        case .inProgress(let fd):
            backendFD = fd
            worker.loop.register(fd: fd, events: Epoll.edgeTriggeredBoth, handler: self)
            deadline = connectDeadline
            timer.arm(at: deadline)
        }
    }

    private func backendConnected() {
        if listener.config.proxyProtocol == .v2 {
            // First bytes to the backend: who the client really is.
            let header = ProxyProtocolV2.header(
                client: peer.ipBytesAndPort, local: Socket.localAddress(clientFD).ipBytesAndPort,
                tlsVersion: tlsVersion.map { $0.hasPrefix("TLS1") ? "TLSv1" + $0.dropFirst(4) : $0 }, commonName: identity?.commonName)
            let space = toBackend.writable(from: worker.pool)
            header.withUnsafeBytes { space.pointer.copyMemory(from: $0.baseAddress!, byteCount: min($0.count, space.count)) }
            toBackend.commit(min(header.count, space.count))
        }
        phase = .relaying
        backendReadable = true
        backendWritable = true
        clientReadable = true
        clientWritable = true
        touch()
        pump()
    }

    private func backendUnavailable(_ detail: String) {
        listener.logger.warning("backend unavailable", metadata: ["client": "\(peer)", "detail": "\(detail)"])
        failureDetail = detail
        sayGoodbye()
        finish(.backendUnavailable, detail: detail)
    }

    // MARK: - Events

    func handleEvent(fd: Int32, events: UInt32) {
        let failed = events & (Epoll.error | Epoll.hangup) != 0
        let readable = events & (Epoll.input | Epoll.readHangup) != 0 || failed
        let writable = events & Epoll.output != 0 || failed
        if fd == clientFD {
            if readable { clientReadable = true }
            if writable { clientWritable = true }
            switch phase {
            case .handshaking: driveHandshake()
            case .lingering: drainLingering()
            case .relaying: pump()
            case .checkingDirectory, .connecting, .closed: break
            }
        } else if fd == backendFD {
            if readable { backendReadable = true }
            if writable { backendWritable = true }
            switch phase {
            case .connecting:
                guard writable else { return }
                let error = Socket.pendingError(fd)
                if error != 0 { return backendUnavailable("connect to \(listener.config.backend!): \(String(cString: strerror(error)))") }
                backendConnected()
            case .relaying: pump()
            default: break
            }
        }
    }

    private func timerFired(now: UInt64) {
        switch phase {
        case .handshaking:
            if now >= deadline { return finishHandshakeTimeout() }
            if handshakeYielded {
                handshakeYielded = false
                driveHandshake()
                if phase == .handshaking && !handshakeYielded { timer.arm(at: deadline) }
                return
            }
        case .checkingDirectory:
            if now >= deadline { return directoryAnswered(.unavailable("the directory did not answer in time")) }
        case .connecting:
            if backendFD < 0 && now >= deadline { return connectBackend(now: now) }  // a descriptor may be free now
            if now >= deadline {
                return backendUnavailable(
                    "connect to \(listener.config.backend!) timed out after \(ConfigDuration.describe(listener.config.connectTimeoutNanos))")
            }
        case .lingering:
            if now >= deadline { return finish(.refused) }
        case .relaying:
            if let closing {
                if now >= closing.deadline {
                    return terminate(closing.end, detail: closing.detail + "; no LDAP message boundary within 1s, closed without notice")
                }
                return timer.arm(at: closing.deadline)
            }
            let idle = listener.config.idleTimeoutNanos
            guard idle > 0 else { return }
            deadline = lastActivity + idle
            if now >= deadline {
                let quiet = ConfigDuration.describe(idle)
                return terminate(.idleTimeout, detail: awaitingBackend
                    ? "the backend did not answer within \(quiet)" : "no bytes either way for \(quiet)")
            }
        case .closed:
            return
        }
        timer.arm(at: deadline)
    }

    private func finishHandshakeTimeout() {
        refusal = .handshakeTimeout
        listener.metrics.refusals[.handshakeTimeout]?.increment()
        finish(.handshakeTimeout, detail: "no complete handshake within \(ConfigDuration.describe(listener.config.handshakeTimeoutNanos))")
    }

    private func touch() {
        lastActivity = monotonicNanos()
        let idle = listener.config.idleTimeoutNanos
        if idle > 0 {
            deadline = lastActivity + idle
            timer.arm(at: deadline)  // no-op unless earlier than what is armed
        }
    }

    // MARK: - Relay

    /// Moves bytes both ways until nothing more can move, then sets the epoll interest
    /// from what is blocked. A side is read only while its buffer has room: that is the
    /// backpressure that keeps memory per connection bounded (rule 7).
    private func pump() {
        guard let session else { return }
        let pool = worker.pool
        var moved = false
        var progress = true
        while progress && phase == .relaying {
            progress = false

            // Client -> buffer. GnuTLS may hold decrypted bytes the socket no longer shows.
            while closing == nil && !clientDone && toBackend.hasSpace
                && (clientReadable || !readAhead.isEmpty || gnutls_record_check_pending(session) > 0)
            {
                let space = toBackend.writable(from: pool)
                transportBlocked = false
                let pulledBefore = bytesPulled
                let rc = gnutls_record_recv(session, space.pointer, space.count)
                let afterRefusedRenegotiation = renegotiationRefused
                renegotiationRefused = false
                if rc > 0 {
                    toBackend.commit(rc)
                    bytesFromClient += rc
                    progress = true
                } else if rc == 0 || rc == Int(GNUTLS_E_PREMATURE_TERMINATION) {
                    clientDone = true  // close_notify, or a bare FIN: either way no more data
                    progress = true
                } else if rc == Int(GNUTLS_E_AGAIN) {
                    // As in the handshake: a record that carried no data (a TLS 1.3
                    // KeyUpdate, an empty record) gives AGAIN while more may be waiting.
                    if transportBlocked || bytesPulled == pulledBefore { clientReadable = false }
                } else if rc == Int(GNUTLS_E_INTERRUPTED) {
                    continue
                } else if rc == Int(GNUTLS_E_REHANDSHAKE) {
                    // Renegotiation is off: say so and keep the session.
                    gnutls_alert_send(session, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION)
                    renegotiationRefused = true
                } else if rc == Int(GNUTLS_E_UNEXPECTED_PACKET) && afterRefusedRenegotiation {
                    // GnuTLS kept the refused ClientHello in its record buffer, and the
                    // call right after the refusal discards it with this error: not the
                    // client's fault. The next call reads on.
                    continue
                } else {
                    return terminate(.error, detail: "from client: \(GnuTLS.describe(Int32(rc)))")
                }
            }

            // Buffer -> backend.
            while !toBackend.isEmpty && backendWritable {
                let n = send(backendFD, toBackend.readable, toBackend.count, Int32(MSG_NOSIGNAL))
                if n > 0 {
                    toBackend.consume(n)
                    awaitingBackend = true
                    progress = true
                } else if n < 0 && (errno == EAGAIN || errno == EINTR) {
                    if errno == EAGAIN { backendWritable = false }
                } else {
                    return terminate(.error, detail: "to backend: \(String(cString: strerror(errno)))")
                }
            }
            if clientDone && toBackend.isEmpty && !backendWriteShut {
                shutdown(backendFD, Int32(SHUT_WR))  // the client's close reaches the backend as a FIN
                backendWriteShut = true
                progress = true
            }

            // Backend -> buffer.
            while !backendDone && toClient.hasSpace && backendReadable {
                let space = toClient.writable(from: pool)
                let n = recv(backendFD, space.pointer, space.count, 0)
                if n > 0 {
                    toClient.commit(n)
                    awaitingBackend = false
                    progress = true
                } else if n == 0 {
                    backendDone = true
                    progress = true
                } else if errno == EAGAIN {
                    backendReadable = false
                } else if errno != EINTR {
                    return terminate(.error, detail: "from backend: \(String(cString: strerror(errno)))")
                }
            }

            // Buffer -> client.
            while (pendingRecordSize > 0 || !toClient.isEmpty) && clientWritable {
                var size = pendingRecordSize > 0 ? pendingRecordSize : min(toClient.count, BufferPool.maxRecordSize)
                if closing != nil && pendingRecordSize == 0 {
                    // Closing: send only what finishes the message in flight.
                    let held = UnsafeRawBufferPointer(start: toClient.readable, count: toClient.count)
                    if let toBoundary = framer.bytesToBoundary(in: held) {
                        if toBoundary == 0 { break }
                        size = min(size, toBoundary)
                    }
                }
                let rc = gnutls_record_send(session, toClient.readable, size)
                if rc > 0 {
                    framer.advance(UnsafeRawBufferPointer(start: toClient.readable, count: rc))
                    toClient.consume(rc)
                    bytesToClient += rc
                    pendingRecordSize = 0
                    progress = true
                } else if rc == Int(GNUTLS_E_AGAIN) || rc == Int(GNUTLS_E_INTERRUPTED) {
                    // The record is encrypted and queued inside GnuTLS; the retry must
                    // pass the same size, and the bytes stay ours until it succeeds.
                    pendingRecordSize = size
                    if rc == Int(GNUTLS_E_AGAIN) { clientWritable = false }
                } else {
                    return terminate(.error, detail: "to client: \(GnuTLS.describe(Int32(rc)))")
                }
            }
            if closing != nil && pendingRecordSize == 0 && clientWritable {
                if framer.isAtBoundary { return sendNoticeAndClose() }
                if framer.isBroken { return terminate(closing!.end, detail: closing!.detail + "; backend stream is not LDAP") }
                if backendDone && toClient.isEmpty {
                    return terminate(closing!.end, detail: closing!.detail + "; backend closed mid-message")
                }
            }
            if closing == nil && backendDone && toClient.isEmpty && pendingRecordSize == 0 && !byeSent && clientWritable {
                // The backend closed: end the TLS session properly with close_notify.
                let rc = gnutls_bye(session, GNUTLS_SHUT_WR)
                if rc == Int32(GNUTLS_E_AGAIN) {
                    clientWritable = false
                } else {
                    byeSent = true
                    progress = true
                }
            }
            moved = moved || progress
        }
        guard phase == .relaying else { return }
        toBackend.releaseIfEmpty(to: pool)
        toClient.releaseIfEmpty(to: pool)
        if clientDone && backendWriteShut && backendDone && byeSent {
            return finish(.closed)
        }
        if moved {
            touch()
            reportBytes()
        }
    }

    /// Adds the bytes moved since the last report to the listener's counters, so that
    /// /metrics shows long-lived LDAP connections while they run, not only when they end.
    private func reportBytes() {
        if bytesFromClient > reportedFromClient {
            listener.metrics.bytesFromClient.increment(by: Int64(bytesFromClient - reportedFromClient))
            reportedFromClient = bytesFromClient
        }
        if bytesToClient > reportedToClient {
            listener.metrics.bytesToClient.increment(by: Int64(bytesToClient - reportedToClient))
            reportedToClient = bytesToClient
        }
    }

    // MARK: - Closing

    /// Closes an established connection politely: waits (briefly) for the LDAP message
    /// in flight to the client to finish, sends `notice` (a Notice of Disconnection),
    /// then close_notify. Nothing more from the client reaches the backend meanwhile.
    func closeWithNotice(_ notice: [UInt8], end: ConnectionEnd, detail: String) {
        guard phase == .relaying, closing == nil else {
            return terminate(end, detail: detail)
        }
        closing = ClosingWithNotice(
            notice: notice, end: end, detail: detail, deadline: monotonicNanos() + Self.boundaryWaitNanos)
        timer.arm(at: closing!.deadline)
        pump()
    }

    private func sendNoticeAndClose() {
        guard let session, var closing else { return }
        let rc = closing.notice.withUnsafeBytes { gnutls_record_send(session, $0.baseAddress, $0.count) }
        if rc == Int(GNUTLS_E_AGAIN) || rc == Int(GNUTLS_E_INTERRUPTED) {
            // Queued inside GnuTLS; the retry passes the same bytes, as it must.
            closing.noticePending = true
            self.closing = closing
            clientWritable = false
            return
        }
        terminate(closing.end, detail: closing.detail + (rc > 0 ? "; Notice of Disconnection sent" : ""))
    }

    /// Ends a connection that is past its handshake: close_notify to the client when
    /// the session is still usable, then close both sides.
    func terminate(_ end: ConnectionEnd, detail: String?) {
        guard phase != .closed else { return }
        if phase == .relaying || phase == .connecting || phase == .checkingDirectory { sayGoodbye() }
        finish(end, detail: detail)
    }

    /// Best effort close_notify: never waits.
    private func sayGoodbye() {
        if let session, !byeSent {
            gnutls_bye(session, GNUTLS_SHUT_WR)
            byeSent = true
        }
    }

    private func finish(_ end: ConnectionEnd, detail: String? = nil) {
        guard phase != .closed else { return }
        phase = .closed
        timer.cancel()
        worker.loop.deregister(fd: clientFD)
        close(clientFD)
        if backendFD >= 0 {
            worker.loop.deregister(fd: backendFD)
            close(backendFD)
            backendFD = -1
        }
        if let session { gnutls_deinit(session) }
        session = nil
        toBackend.discard(to: worker.pool)
        toClient.discard(to: worker.pool)
        readAhead.discard(to: worker.pool)
        worker.forget(self)
        worker.unindex(self)
        listener.releaseSlot()
        listener.metrics.connections[end]?.increment()
        reportBytes()
        logClose(end, detail: detail ?? failureDetail)
    }

    private func logClose(_ end: ConnectionEnd, detail: String?) {
        var metadata: Logger.Metadata = [
            "client": "\(peer)",
            "bytes_in": "\(bytesFromClient)",
            "bytes_out": "\(bytesToClient)",
            "duration_ms": "\((monotonicNanos() - acceptedAt) / 1_000_000)",
            "end": "\(end.rawValue)",
        ]
        metadata["tls"] = tlsVersion.map { .string($0) }
        metadata["cipher"] = cipher.map { .string($0) }
        if let identity {
            metadata["subject"] = "\(identity.subject)"
            metadata["issuer"] = "\(identity.issuer)"
            metadata["serial"] = "\(identity.serialHex)"
        }
        if resumed { metadata["resumed"] = "yes" }
        if let refusal { metadata["reason"] = "\(refusal.rawValue)" }
        if let detail { metadata["detail"] = "\(detail)" }
        let level: Logger.Level = (end == .closed || end == .idleTimeout || end == .revoked) ? .info : .warning
        listener.logger.log(level: level, end == .refused ? "connection refused" : "connection closed", metadata: metadata)
    }

    /// Notes the version and cipher for the log line, once they are negotiated.
    /// In TLS 1.2 the cipher is not in use yet while the chain is verified, so this
    /// runs again when the handshake completes.
    private func captureSessionInfo() {
        guard let session else { return }
        tlsVersion = gnutls_protocol_get_name(gnutls_protocol_get_version(session)).map { String(cString: $0) }
        let name = gnutls_cipher_get_name(gnutls_cipher_get(session)).map { String(cString: $0) }
        cipher = name == "NULL" ? nil : name
    }
}

// MARK: - Transport

extension ClientConnection {
    /// GnuTLS wants `count` bytes: serve them from the read-ahead, refilling it with one
    /// recv(2) when it is empty. GnuTLS reads a record's header and body separately; with
    /// the read-ahead both come from a single system call (and several records too).
    func pull(into destination: UnsafeMutableRawPointer, count: Int) -> Int {
        if readAhead.isEmpty {
            let space = readAhead.writable(from: worker.pool)
            var n: Int
            repeat { n = recv(clientFD, space.pointer, space.count, 0) } while n < 0 && errno == EINTR
            if n <= 0 {
                let error = errno
                readAhead.releaseIfEmpty(to: worker.pool)
                if n == 0 { return 0 }
                if error == EAGAIN {
                    clientReadable = false
                    transportBlocked = true
                }
                if let session { gnutls_transport_set_errno(session, error) }
                return -1
            }
            readAhead.commit(n)
        }
        let n = min(count, readAhead.count)
        destination.copyMemory(from: readAhead.readable, byteCount: n)
        readAhead.consume(n)
        readAhead.releaseIfEmpty(to: worker.pool)
        bytesPulled += n
        return n
    }

    /// GnuTLS sends records: one sendmsg(2) for all the pieces it hands over.
    func push(_ vectors: UnsafePointer<iovec>, count: Int32) -> Int {
        var message = msghdr()
        message.msg_iov = UnsafeMutablePointer(mutating: vectors)
        message.msg_iovlen = Int(count)
        var n: Int
        repeat { n = sendmsg(clientFD, &message, Int32(MSG_NOSIGNAL)) } while n < 0 && errno == EINTR
        if n < 0 {
            let error = errno
            if error == EAGAIN {
                clientWritable = false
                transportBlocked = true
            }
            if let session { gnutls_transport_set_errno(session, error) }
        }
        return n
    }
}
