import Logging

/// What a connection tells the operator: one log line when it ends (who, how, why),
/// and the listener's metrics, bytes included while it runs. One per connection, filled
/// in by its parts as they learn something.
final class ConnectionReport {
    /// The client: the connection's peer, or the address its PROXY header names.
    var peer: SocketAddress
    /// The balancer that sent the PROXY header, if one did.
    var proxiedBy: SocketAddress?
    let acceptedAt: UInt64
    var tlsVersion: String?
    var cipher: String?
    var identity: PeerIdentity?
    var resumed = false
    /// An alert the client sent after the handshake (user_canceled before its close).
    var alertReceived: String?
    /// client_auth: the identity the client's requests ran as last (dn:..., anonymous).
    var authz: String?
    /// Why the client was refused, if it was.
    var refusal: RefusalReason?
    /// What went wrong, when the end itself does not say (a GnuTLS error, a directory answer).
    var failureDetail: String?
    /// What OCSP said, when it was asked (good, or why a best-effort check let it pass).
    var ocsp: String?
    private var reportedFromClient = 0
    private var reportedToClient = 0

    init(peer: SocketAddress, acceptedAt: UInt64) {
        self.peer = peer
        self.acceptedAt = acceptedAt
    }

    /// Notes the version and cipher, once negotiated. In TLS 1.2 the cipher is not in
    /// use yet while the chain is verified, so this runs again when the handshake ends.
    func noteSession(_ tls: TLSSession) {
        tlsVersion = tls.protocolName
        cipher = tls.cipherName
    }

    func refused(_ reason: RefusalReason, detail: String? = nil, metrics: ListenerMetrics) {
        refusal = reason
        if let detail { failureDetail = detail }
        metrics.refusals[reason]?.increment()
    }

    /// Adds the bytes moved since the last call to the listener's counters, so that
    /// /metrics shows long-lived LDAP connections while they run, not only at the end.
    func publishBytes(fromClient: Int, toClient: Int, metrics: ListenerMetrics) {
        if fromClient > reportedFromClient {
            metrics.bytesFromClient.increment(by: Int64(fromClient - reportedFromClient))
            reportedFromClient = fromClient
        }
        if toClient > reportedToClient {
            metrics.bytesToClient.increment(by: Int64(toClient - reportedToClient))
            reportedToClient = toClient
        }
    }

    /// The connection is over: counts it and writes its line.
    func ended(_ end: ConnectionEnd, detail: String?, listener: ListenerRuntime) {
        listener.metrics.connections[end]?.increment()
        var metadata: Logger.Metadata = [
            "client": "\(peer)",
            "bytes_in": "\(reportedFromClient)",
            "bytes_out": "\(reportedToClient)",
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
        if let authz { metadata["authz"] = "\(authz)" }
        if resumed { metadata["resumed"] = "yes" }
        if let proxiedBy { metadata["via"] = "\(proxiedBy)" }
        if let alertReceived { metadata["alert"] = "\(alertReceived)" }
        if let ocsp { metadata["ocsp"] = "\(ocsp)" }
        if let refusal { metadata["reason"] = "\(refusal.rawValue)" }
        if let detail = detail ?? failureDetail { metadata["detail"] = "\(detail)" }
        let level: Logger.Level = (end == .closed || end == .idleTimeout || end == .revoked) ? .info : .warning
        listener.logger.log(level: level, end == .refused ? "connection refused" : "connection closed", metadata: metadata)
    }
}
