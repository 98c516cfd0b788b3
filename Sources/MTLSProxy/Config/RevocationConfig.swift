/// Which certificates of a verified client chain OCSP is asked about.
public enum OCSPMode: String, Sendable, CaseIterable {
    case off
    /// The client's own certificate.
    case leaf
    /// Every certificate of the verified chain below the trust anchor.
    case chain
}

/// The revocation services of one listener: OCSP and CRL distribution points (the
/// listener keys `ocsp`, `ocsp_responder`, `ocsp_policy`, `ocsp_timeout`,
/// `ocsp_max_age`, `crl_fetch`).
public struct RevocationConfig: Sendable {
    public var ocsp = OCSPMode.off
    /// Asked instead of the responders the certificates name (AIA).
    public var ocspResponder: HTTPURL?
    /// `strict`: no usable answer refuses; `best-effort`: only `revoked` refuses.
    public var ocspPolicy = CRLPolicy.strict
    public var ocspTimeoutNanos: UInt64 = 2_000_000_000
    public var ocspMaxAgeNanos: UInt64 = 3_600_000_000_000
    public var crlFetch = false

    public init() {}
}

extension ConfigParser {
    static let revocationKeys: [String: ListenerSetter] = [
        "ocsp": { l, v, _ throws(ConfigError.Message) in l.revocation.ocsp = try choice(v, "ocsp") },
        "ocsp_responder": { l, v, _ throws(ConfigError.Message) in
            guard let url = HTTPURL(v) else { throw "ocsp_responder must be an http://HOST[:PORT][/PATH] URL, got '\(v)'" }
            l.revocation.ocspResponder = url
        },
        "ocsp_policy": { l, v, _ throws(ConfigError.Message) in l.revocation.ocspPolicy = try choice(v, "ocsp_policy") },
        "ocsp_timeout": { l, v, _ throws(ConfigError.Message) in l.revocation.ocspTimeoutNanos = try positiveDuration(v) },
        "ocsp_max_age": { l, v, _ throws(ConfigError.Message) in l.revocation.ocspMaxAgeNanos = try positiveDuration(v) },
        "crl_fetch": { l, v, _ throws(ConfigError.Message) in l.revocation.crlFetch = try bool(v) },
    ]

    /// What the revocation keys cannot check one by one.
    static func validateRevocation(_ listener: ListenerConfig) throws(ConfigError.Message) {
        let revocation = listener.revocation
        if revocation.crlFetch && listener.crlDir == nil {
            throw "crl_fetch needs crl_dir: the downloaded CRLs are written there"
        }
    }
}
