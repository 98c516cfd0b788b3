import CGnuTLSShim

/// A certificate the client sent, with its DER.
struct SentCertificate: Sendable {
    var info: CertificateInfo
    var der: [UInt8]
}

/// The path from the client's certificate to a trust anchor, as the revocation check
/// walks it: every certificate on it as (issuer, serial), and which CAs on it came from
/// the client rather than from the bundle.
///
/// Clients send chains out of order, with extra certificates, or with two certificates
/// of one CA (cross-signing); GnuTLS finds a path through them but does not say which.
/// The walk prefers the bundle, then the certificate whose subject key identifier
/// matches the authority key identifier, and backtracks until a path reaches the
/// bundle.
struct ChainPath: Sendable {
    var links: [ChainLink] = []
    var caFromClient: [SentCertificate] = []
    /// Whether the walk reached a CA of the bundle.
    var anchored = false

    /// Status bits that mean the chain did not reach a trust anchor.
    static let untrustedBits = GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue | GNUTLS_CERT_SIGNER_NOT_CA.rawValue
        | GNUTLS_CERT_SIGNATURE_FAILURE.rawValue | GNUTLS_CERT_INSECURE_ALGORITHM.rawValue
        | GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE.rawValue

    /// Certificates looked at, at most: a client cannot make the walk expensive by
    /// sending many certificates of one name.
    static let budget = 64

    static func walk(leaf: CertificateInfo, sent: [SentCertificate], bundle: [[UInt8]: CertificateInfo]) -> ChainPath {
        var budget = Self.budget
        let result = extend(leaf, ChainPath(), sent: sent, bundle: bundle, budget: &budget)
        var path = result.path
        path.anchored = result.anchored
        return path
    }

    static func walk(leaf: CertificateInfo, sent: [SentCertificate], trust: TrustState) -> ChainPath {
        walk(leaf: leaf, sent: sent, bundle: trust.caBySubject)
    }

    private static func extend(
        _ current: CertificateInfo, _ start: ChainPath, sent: [SentCertificate], bundle: [[UInt8]: CertificateInfo], budget: inout Int
    ) -> (path: ChainPath, anchored: Bool) {
        budget -= 1
        // A self-issued certificate is an anchor (or a stranger): nothing above it revokes it.
        if current.isSelfIssued { return (start, bundle[current.rawSubject] != nil) }
        var path = start
        path.links.append(ChainLink(issuer: current.issuerKey, serial: current.serial))
        guard path.links.count < 16, budget > 0 else { return (path, false) }
        if let bundled = bundle[current.rawIssuer] {
            // Bundled intermediates are walked up to the bundle's root: its CRL may revoke
            // them. One whose issuer is not in the bundle is itself the trust anchor, and
            // nothing checks an anchor's revocation (RFC 5280 §6.1).
            guard bundle[bundled.rawIssuer] != nil else { return (path, true) }
            return (extend(bundled, path, sent: sent, bundle: bundle, budget: &budget).path, true)
        }
        let named = sent.filter { candidate in
            candidate.info.rawSubject == current.rawIssuer && !path.caFromClient.contains { $0.der == candidate.der }
        }
        let keyMatches = { (candidate: SentCertificate) in
            !current.authorityKeyID.isEmpty && candidate.info.subjectKeyID == current.authorityKeyID
        }
        let candidates = named.filter(keyMatches) + named.filter { !keyMatches($0) }
        var fallback: ChainPath?
        for candidate in candidates where budget > 0 {
            var next = path
            next.caFromClient.append(candidate)
            let result = extend(candidate.info, next, sent: sent, bundle: bundle, budget: &budget)
            if result.anchored { return result }
            if fallback == nil { fallback = result.path }
        }
        return (fallback ?? path, false)
    }
}
