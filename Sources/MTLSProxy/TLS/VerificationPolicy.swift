import CGnuTLSShim

/// Why a client was refused. The raw value is what logs and metrics say.
public enum RefusalReason: String, Sendable, CaseIterable {
    case noCertificate = "no_certificate"
    case unknownCA = "unknown_ca"
    case revoked
    case expired
    case notYetValid = "not_yet_valid"
    case wrongPurpose = "wrong_purpose"
    case crlMissing = "crl_missing"
    case crlExpired = "crl_expired"
    case badCertificate = "bad_certificate"
    /// The TLS handshake itself failed (protocol version, garbage, a client alert...).
    case handshakeFailed = "handshake_failed"
    case handshakeTimeout = "handshake_timeout"
    /// Verified, but matched none of the listener's allow-lists.
    case notAllowed = "not_allowed"
    /// verify_cert_in_directory: the mapped entry does not hold this certificate.
    case notInDirectory = "not_in_directory"
    /// verify_cert_in_directory with directory_unavailable = reject, and no answer.
    case directoryUnavailable = "directory_unavailable"
    /// proxy_protocol_in: the PROXY header was malformed or missing.
    case badProxyHeader = "bad_proxy_header"
    /// proxy_protocol_in: the connection came from an address not in trusted_proxies.
    case untrustedProxy = "untrusted_proxy"
    /// A message-aware listener read something that is not an LDAP request (malformed BER,
    /// not a request, a request before the StartTLS response): Notice of Disconnection.
    case protocolError = "protocol_error"
    /// A request above max_request_size: Notice of Disconnection (protocolError).
    case requestTooLarge = "request_too_large"
    /// tls = starttls: the client closed or unbound without asking for TLS.
    case startTLSRequired = "starttls_required"
    /// client_auth: the backend refused the proxy's own bind (backend_bind_dn).
    case backendBindFailed = "backend_bind_failed"
    /// ocsp with ocsp_policy = strict: no usable OCSP answer (unreachable, timeout,
    /// HTTP error, malformed, bad signature, stale, about another certificate).
    case ocspUnavailable = "ocsp_unavailable"
    /// ocsp with ocsp_policy = strict: the responder answered `unknown`.
    case ocspUnknown = "ocsp_unknown"

    /// The TLS alert number the client is sent (TLS 1.2 has no certificate_required).
    func alert(tls13: Bool) -> UInt32 {
        switch self {
        case .noCertificate: return tls13 ? GNUTLS_A_CERTIFICATE_REQUIRED.rawValue : GNUTLS_A_HANDSHAKE_FAILURE.rawValue
        case .unknownCA: return GNUTLS_A_UNKNOWN_CA.rawValue
        case .revoked: return GNUTLS_A_CERTIFICATE_REVOKED.rawValue
        case .expired: return GNUTLS_A_CERTIFICATE_EXPIRED.rawValue
        // Revocation status unknown: "some other issue rendering it unacceptable".
        case .crlMissing, .crlExpired, .ocspUnavailable, .ocspUnknown: return GNUTLS_A_CERTIFICATE_UNKNOWN.rawValue
        case .notYetValid, .wrongPurpose, .badCertificate: return GNUTLS_A_BAD_CERTIFICATE.rawValue
        // The PROXY refusals come before TLS: no alert goes out for them.
        case .handshakeFailed, .handshakeTimeout, .badProxyHeader, .untrustedProxy: return GNUTLS_A_HANDSHAKE_FAILURE.rawValue
        case .notAllowed, .notInDirectory, .directoryUnavailable: return GNUTLS_A_ACCESS_DENIED.rawValue
        // These end an established LDAP session: a Notice of Disconnection says why, not an alert.
        case .protocolError, .requestTooLarge, .backendBindFailed, .startTLSRequired: return GNUTLS_A_ACCESS_DENIED.rawValue
        }
    }
}

/// Who issued a certificate or a CRL: the issuer's DER name and its key identifier (the
/// authority key identifier; empty when absent). The key identifier tells apart two CAs
/// of the same name, as during a CA key rollover.
struct IssuerKey: Sendable, Hashable {
    var name: [UInt8]
    var keyID: [UInt8] = []
}

/// One certificate of the client chain as the revocation check sees it.
struct ChainLink: Sendable, Hashable {
    var issuer: IssuerKey
    var serial: SerialNumber

    /// The same certificate without the key identifier: how the live-connection index
    /// files it, so that a CRL without one still finds it.
    var byName: ChainLink { ChainLink(issuer: IssuerKey(name: issuer.name), serial: serial) }
}

/// The decisions of verification, free of GnuTLS sessions so that they can be tested
/// on their own.
enum VerificationPolicy {
    /// Combines GnuTLS's chain status with our own revocation check. Order matters: a
    /// chain we cannot anchor says nothing trustworthy about revocation, and a revoked
    /// certificate is reported as revoked even when it has also expired.
    static func decide(
        chainStatus status: UInt32, chain: [ChainLink], crls: some CRLLookup, policy: CRLPolicy?, now: Int
    ) -> RefusalReason? {
        if status & (GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue | GNUTLS_CERT_SIGNER_NOT_CA.rawValue) != 0 {
            return .unknownCA
        }
        if status & ChainPath.untrustedBits != 0 {
            // A signature on the chain did not verify: it reached no anchor either.
            return .badCertificate
        }
        if let policy, let refusal = revocationRefusal(chain: chain, crls: crls, policy: policy, now: now) {
            return refusal
        }
        return refusal(forChainStatus: status)
    }

    /// GnuTLS status bits (other than the signer ones) to a reason; nil when clean.
    static func refusal(forChainStatus status: UInt32) -> RefusalReason? {
        if status == 0 { return nil }
        if status & GNUTLS_CERT_REVOKED.rawValue != 0 { return .revoked }
        if status & GNUTLS_CERT_EXPIRED.rawValue != 0 { return .expired }
        if status & GNUTLS_CERT_NOT_ACTIVATED.rawValue != 0 { return .notYetValid }
        if status & GNUTLS_CERT_PURPOSE_MISMATCH.rawValue != 0 { return .wrongPurpose }
        return .badCertificate
    }

    /// Each link must not be revoked by its issuer's CRL; under `strict` each issuer
    /// must also have a CRL that has not passed its nextUpdate.
    static func revocationRefusal(chain: [ChainLink], crls: some CRLLookup, policy: CRLPolicy, now: Int) -> RefusalReason? {
        var staleness: RefusalReason?
        for link in chain {
            guard let crl = crls.crl(for: link.issuer) else {
                if policy == .strict && staleness == nil { staleness = .crlMissing }
                continue
            }
            // Even a stale CRL revokes: it can only be missing newer revocations.
            if crl.revoked.contains(link.serial) { return .revoked }
            if policy == .strict && !crl.isCurrent(at: now) && staleness == nil { staleness = .crlExpired }
        }
        return staleness
    }
}
