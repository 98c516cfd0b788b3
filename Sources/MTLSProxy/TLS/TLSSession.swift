import CGnuTLSShim
import Glibc

/// Where a TLS session's records come from and go to: a socket (SocketTransport), or
/// memory in tests.
protocol TLSTransport: AnyObject {
    func pull(into buffer: UnsafeMutableRawBufferPointer) -> IOResult
    func push(_ vectors: UnsafePointer<iovec>, count: Int32) -> IOResult
    /// Bytes read from the peer that GnuTLS has not taken yet.
    var hasBufferedInput: Bool { get }
}

/// How a run of the handshake ended.
enum HandshakeStep: Equatable {
    case completed
    /// Waiting for the peer: the next readiness event goes on.
    case wouldBlock
    /// Progress, and more may be waiting: go on after the other connections had a turn.
    case yielded
    case failed(Int32)
}

/// One GnuTLS session, owned: created here, freed when this goes. Every GnuTLS call on
/// a session is in this file, and each returns a value (IOResult, HandshakeStep) rather
/// than a GnuTLS code for the caller to compare.
final class TLSSession: RelayStream {
    private let session: gnutls_session_t
    private let transport: TLSTransport
    /// What the session's credentials belong to (a TrustState): GnuTLS credentials are
    /// not reference-counted and must outlive the session.
    private let credentialsOwner: AnyObject?
    /// Asked once the peer's certificate chain has arrived; false fails the handshake.
    var onPeerCertificates: (() -> Bool)?
    /// The client's Certificate message held a well-formed list of no certificates.
    private(set) var sentEmptyCertificateList = false
    /// Set when the transport said "would block" (either way) during the current call:
    /// only then is a new readiness event sure to come.
    private var transportBlocked = false
    /// Bytes handed to GnuTLS so far: tells whether a call made progress.
    private var bytesPulled = 0
    /// The last read refused a renegotiation: GnuTLS still holds its ClientHello and
    /// drops it on the next call, with an error that is not the peer's fault.
    private var renegotiationRefused = false
    /// Size of a record GnuTLS has queued after EAGAIN: the retry must pass it again.
    private var pendingWrite = 0
    /// The last alert the peer sent after the handshake (for the log line).
    private(set) var receivedAlert: String?

    /// The most plaintext one TLS record carries.
    static let maxRecordSize = 16 * 1024
    /// How many GnuTLS calls one run of the handshake may take before giving way to the
    /// other connections of the loop (a hello in thousands of tiny records).
    static let handshakeCallsPerRun = 1024

    /// A server session under `trust`: demands a client certificate.
    init(server trust: TrustState, transport: TLSTransport) throws(GnuTLSError) {
        // NONBLOCK: GnuTLS must never wait inside a call; deadlines are our timers.
        session = try Self.makeSession(flags: UInt32(GNUTLS_SERVER) | UInt32(GNUTLS_NONBLOCK))
        self.transport = transport
        credentialsOwner = trust
        gnutls_priority_set(session, trust.priority)
        gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(trust.credentials))
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE)
        trust.ticketKey?.enable(on: session)
        attach()
        gnutls_handshake_set_hook_function(
            session, GNUTLS_HANDSHAKE_CERTIFICATE_PKT.rawValue, GNUTLS_HOOK_PRE, Self.certificateMessageHook)
    }

    /// A client session (tests drive one against a server session over memory).
    init(client credentials: gnutls_certificate_credentials_t, owner: AnyObject, priority: String = "NORMAL",
         transport: TLSTransport) throws(GnuTLSError) {
        session = try Self.makeSession(flags: UInt32(GNUTLS_CLIENT) | UInt32(GNUTLS_NONBLOCK))
        self.transport = transport
        credentialsOwner = owner
        let rc = gnutls_priority_set_direct(session, priority, nil)
        guard rc >= 0 else {
            gnutls_deinit(session)
            throw GnuTLSError(rc, "gnutls_priority_set_direct")
        }
        gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(credentials))
        attach()
    }

    deinit { gnutls_deinit(session) }

    private static func makeSession(flags: UInt32) throws(GnuTLSError) -> gnutls_session_t {
        var session: gnutls_session_t?
        let rc = gnutls_init(&session, flags)
        guard rc == 0, let session else { throw GnuTLSError(rc, "gnutls_init") }
        return session
    }

    private func attach() {
        let context = Unmanaged.passUnretained(self).toOpaque()
        gnutls_session_set_ptr(session, context)
        gnutls_transport_set_ptr(session, context)
        gnutls_transport_set_pull_function(session, Self.pullTrampoline)
        gnutls_transport_set_vec_push_function(session, Self.pushTrampoline)
    }

    /// The raw session, for the verification code next to this file.
    var handle: gnutls_session_t { session }

    // MARK: - What was negotiated

    var isTLS13: Bool { gnutls_protocol_get_version(session) == GNUTLS_TLS1_3 }
    var isResumed: Bool { gnutls_session_is_resumed(session) != 0 }
    var protocolName: String? { gnutls_protocol_get_name(gnutls_protocol_get_version(session)).map { String(cString: $0) } }

    /// nil until a cipher is in use (in TLS 1.2, not yet while the chain is verified).
    var cipherName: String? {
        let name = gnutls_cipher_get_name(gnutls_cipher_get(session)).map { String(cString: $0) }
        return name == "NULL" ? nil : name
    }

    // MARK: - Handshake

    /// Runs the handshake as far as the bytes at hand allow.
    ///
    /// GnuTLS answers GNUTLS_E_AGAIN not only when the transport is empty: after each
    /// record that does not complete a handshake message (a ClientHello or a client
    /// certificate larger than one record, or one cut into many small records) it returns
    /// AGAIN without reading on. The next records then sit in the transport's read-ahead
    /// (or in the socket, already reported by the one edge an edge-triggered epoll gives),
    /// and no event would ever come for them. So AGAIN ends the run only when the
    /// transport itself would block, or when the call took no bytes at all.
    func handshake() -> HandshakeStep {
        var calls = 0
        while true {
            transportBlocked = false
            let pulledBefore = bytesPulled
            let rc = gnutls_handshake(session)
            if rc == 0 { return .completed }
            if rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED {
                if transportBlocked || bytesPulled == pulledBefore { return .wouldBlock }
                calls += 1
                if calls < Self.handshakeCallsPerRun { continue }
                return .yielded
            }
            if gnutls_error_is_fatal(rc) == 0 { continue }  // a warning alert: carry on
            return .failed(rc)
        }
    }

    /// After a failed handshake: why, in our terms, with the alert a client should see
    /// sent (the one GnuTLS maps the error to, as gnutls-serv sends it: decode_error for
    /// a malformed message, decrypt_error for a bad signature, and so on).
    func refusal(afterHandshakeError rc: Int32) -> (reason: RefusalReason, detail: String) {
        var detail = GnuTLS.describe(rc)
        if rc == GNUTLS_E_FATAL_ALERT_RECEIVED, let name = gnutls_alert_get_name(gnutls_alert_get(session)) {
            detail = "client sent alert: \(String(cString: name))"
        }
        switch HandshakeFailure.classify(rc, sentEmptyCertificateList: sentEmptyCertificateList) {
        case .noCertificate:
            sendAlert(.noCertificate)
            return (.noCertificate, detail)
        case .clientGone:
            return (.handshakeFailed, detail)
        case .protocolError:
            var level: Int32 = 0
            let alert = gnutls_error_to_alert(rc, &level)
            if alert >= 0 {
                gnutls_alert_send(session, gnutls_alert_level_t(UInt32(level)), gnutls_alert_description_t(UInt32(alert)))
            }
            return (.handshakeFailed, detail)
        }
    }

    /// The fatal alert that tells the client why it is refused.
    func sendAlert(_ reason: RefusalReason) {
        gnutls_alert_send(session, GNUTLS_AL_FATAL, gnutls_alert_description_t(reason.alert(tls13: isTLS13)))
    }

    // MARK: - Records

    /// Decrypted bytes from the peer.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        while true {
            transportBlocked = false
            let pulledBefore = bytesPulled
            let rc = gnutls_record_recv(session, buffer.baseAddress, buffer.count)
            let afterRefusedRenegotiation = renegotiationRefused
            renegotiationRefused = false
            switch rc {
            case 1...: return .processed(rc)
            case 0, Int(GNUTLS_E_PREMATURE_TERMINATION): return .closed  // close_notify, or a bare FIN
            case Int(GNUTLS_E_AGAIN):
                // As in the handshake: a record that carried no data (a TLS 1.3
                // KeyUpdate, an empty record) gives AGAIN while more may be waiting.
                if transportBlocked || bytesPulled == pulledBefore { return .wouldBlock }
            case Int(GNUTLS_E_INTERRUPTED):
                continue
            case Int(GNUTLS_E_REHANDSHAKE):
                // Renegotiation is off: say so and keep the session.
                gnutls_alert_send(session, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION)
                renegotiationRefused = true
            case Int(GNUTLS_E_UNEXPECTED_PACKET) where afterRefusedRenegotiation:
                continue  // GnuTLS discards the refused ClientHello; the next call reads on
            case Int(GNUTLS_E_WARNING_ALERT_RECEIVED), Int(GNUTLS_E_FATAL_ALERT_RECEIVED):
                // user_canceled is a closure alert (RFC 8446 §6.1): the JDK ends its
                // sessions with it, then close_notify, and GnuTLS may report it as fatal.
                let alert = gnutls_alert_get(session)
                receivedAlert = Self.rfcName(of: alert)
                if alert == GNUTLS_A_USER_CANCELED || alert == GNUTLS_A_CLOSE_NOTIFY {
                    if rc == Int(GNUTLS_E_FATAL_ALERT_RECEIVED) { return .closed }
                } else if rc == Int(GNUTLS_E_FATAL_ALERT_RECEIVED) {
                    return .failed("client sent alert: \(receivedAlert!)")
                }
                // A warning (or user_canceled, whose close_notify follows): read on.
            default:
                return .failed(GnuTLS.describe(Int32(rc)))
            }
        }
    }

    /// An alert's name as the RFCs write it (user_canceled), from GnuTLS's constant name.
    private static func rfcName(of alert: gnutls_alert_description_t) -> String {
        guard let name = gnutls_alert_get_strname(alert).map({ String(cString: $0) }) else { return "alert \(alert.rawValue)" }
        return name.hasPrefix("GNUTLS_A_") ? name.dropFirst(9).lowercased() : name
    }

    /// Whether a read may find bytes without a new readiness event.
    var hasBufferedInput: Bool { transport.hasBufferedInput || gnutls_record_check_pending(session) > 0 }

    /// Encrypts and sends at most one record of `bytes`. After .wouldBlock the record is
    /// queued inside GnuTLS: the caller must keep the bytes and call again with them.
    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        let size = pendingWrite > 0 ? pendingWrite : min(bytes.count, Self.maxRecordSize)
        precondition(bytes.count >= size, "a queued TLS record must be retried with its bytes")
        while true {
            let rc = gnutls_record_send(session, bytes.baseAddress, size)
            switch rc {
            case 1...:
                pendingWrite = 0
                return .processed(rc)
            case Int(GNUTLS_E_AGAIN):
                pendingWrite = size
                return .wouldBlock
            case Int(GNUTLS_E_INTERRUPTED):
                continue
            default:
                return .failed(GnuTLS.describe(Int32(rc)))
            }
        }
    }

    /// A record is queued and waits for the transport.
    var hasPendingWrite: Bool { pendingWrite > 0 }

    /// close_notify. Never waits: false means try again when writable.
    func finishWriting() -> Bool {
        gnutls_bye(session, GNUTLS_SHUT_WR) != GNUTLS_E_AGAIN
    }

    // MARK: - Callbacks from GnuTLS

    private static func owner(of context: UnsafeMutableRawPointer?) -> TLSSession {
        guard let context else { fatalError("GnuTLS called back without the session's pointer") }
        return Unmanaged<TLSSession>.fromOpaque(context).takeUnretainedValue()
    }

    /// Passes the transport's outcome to GnuTLS: a count, or -1 with an errno it maps.
    private func report(_ result: IOResult, counting: Bool) -> Int {
        switch result {
        case .processed(let n):
            if counting { bytesPulled += n }
            return n
        case .closed:
            return 0
        case .wouldBlock:
            transportBlocked = true
            gnutls_transport_set_errno(session, EAGAIN)
            return -1
        case .failed:
            gnutls_transport_set_errno(session, EIO)
            return -1
        }
    }

    private static let pullTrampoline: @convention(c) (gnutls_transport_ptr_t?, UnsafeMutableRawPointer?, Int) -> Int = {
        context, buffer, count in
        let tls = owner(of: context)
        return tls.report(tls.transport.pull(into: UnsafeMutableRawBufferPointer(start: buffer, count: count)), counting: true)
    }

    private static let pushTrampoline: @convention(c) (gnutls_transport_ptr_t?, UnsafePointer<giovec_t>?, Int32) -> Int = {
        context, vectors, count in
        let tls = owner(of: context)
        guard let vectors else { return 0 }
        return tls.report(tls.transport.push(vectors, count: count), counting: false)
    }

    /// GnuTLS's verify callback, set on every listener's credentials: hands the decision
    /// to the session's owner. Returns 0 to go on, -1 to fail the handshake.
    static let verifyCallback: @convention(c) (gnutls_session_t?) -> Int32 = { session in
        guard let session else { return -1 }
        let tls = owner(of: gnutls_session_get_ptr(session))
        return tls.onPeerCertificates?() == true ? 0 : -1
    }

    /// GnuTLS hands over the body of the client's Certificate message before it parses
    /// it: the only way to tell a well-formed empty list (no certificate) from a message
    /// with no body, which GnuTLS reports with the same error (see HandshakeFailure).
    private static let certificateMessageHook: @convention(c) (
        gnutls_session_t?, UInt32, UInt32, UInt32, UnsafePointer<gnutls_datum_t>?
    ) -> Int32 = { session, _, _, incoming, message in
        guard incoming != 0, let session, let message else { return 0 }
        let tls = owner(of: gnutls_session_get_ptr(session))
        let body = UnsafeRawBufferPointer(start: message.pointee.data, count: Int(message.pointee.size))
        tls.sentEmptyCertificateList = HandshakeFailure.isEmptyCertificateList(body, tls13: tls.isTLS13)
        return 0
    }
}
