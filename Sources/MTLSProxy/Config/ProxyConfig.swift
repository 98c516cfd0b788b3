/// The whole configuration: global settings and one or more listeners.
public struct ProxyConfig: Sendable {
    public var global = GlobalConfig()
    public var listeners: [ListenerConfig] = []
    /// The file it came from (nil for the flag-only form).
    public var sourcePath: String?

    public init() {}
}

public enum LogLevelSetting: String, Sendable, CaseIterable { case error, warn, info, debug }
public enum LogFormat: String, Sendable, CaseIterable { case text, json }

public struct GlobalConfig: Sendable {
    /// nil = `auto`: one event loop per core.
    public var workers: Int?
    public var logLevel: LogLevelSetting = .info
    public var logFormat: LogFormat = .text
    public var healthListen: Endpoint?
    public var shutdownGraceNanos: UInt64 = 30_000_000_000
    /// After SIGTERM, how long the listeners keep accepting while /readyz already says
    /// 503, so that a balancer's health check stops sending before the port goes away.
    public var drainDelayNanos: UInt64 = 0
    public var user: String?
    public var group: String?

    public init() {}
}

public enum CRLPolicy: String, Sendable, CaseIterable {
    /// Every issuing CA in the client chain must have a CRL that is not past its nextUpdate.
    case strict
    /// Check revocation where a CRL exists.
    case bestEffort = "best-effort"
}

public enum ProxyProtocol: String, Sendable, CaseIterable { case off, v2 }
/// Which PROXY header versions a listener reads before the TLS bytes.
public enum ProxyProtocolIn: String, Sendable, CaseIterable { case off, v1, v2, any }
public enum CertMap: String, Sendable, CaseIterable { case subject, search }
public enum DirectoryUnavailable: String, Sendable, CaseIterable { case reject, allow }
/// How TLS starts on a listener: from the first byte (LDAPS), or after the client's
/// StartTLS extended request on a plain LDAP port.
public enum TLSMode: String, Sendable, CaseIterable { case implicit, starttls }
/// What the client's certificate means to the backend.
public enum ClientAuth: String, Sendable, CaseIterable {
    /// Nothing: the bytes are relayed unchanged.
    case none
    /// A SASL EXTERNAL bind, answered by the proxy, makes requests run as the certificate's entry.
    case saslExternal = "sasl-external"
    /// Every request runs as the certificate's entry, with no bind.
    case certificate
}

public struct ListenerConfig: Sendable {
    /// TLS 1.2 and 1.3 only; X25519 first (the cheapest curve); AEAD ciphers only; in
    /// TLS 1.2 ECDHE key exchange only (static RSA has no forward secrecy, and DHE could
    /// never be chosen: no finite-field group is in the list); the server's order wins.
    /// Client-initiated renegotiation is refused by the connection, not here.
    public static let defaultPriority =
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305:+AES-256-GCM:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:%SERVER_PRECEDENCE"

    public var name: String
    /// Line of the `[name]` header, for messages about the whole section.
    public var line: Int?
    public var listen: Endpoint?
    public var backend: Endpoint?
    public var cert: String?
    public var key: String?
    public var caBundle: String?
    public var crlDir: String?
    /// nil = the default: `strict` when `crl_dir` is set.
    public var crlPolicySetting: CRLPolicy?
    public var revokeActive = true
    public var priority = ListenerConfig.defaultPriority
    public var handshakeTimeoutNanos: UInt64 = 10_000_000_000
    public var idleTimeoutNanos: UInt64 = 1_800_000_000_000
    public var connectTimeoutNanos: UInt64 = 5_000_000_000
    public var maxConnections = 10_000
    public var crlWarnBeforeNanos: UInt64 = 86_400_000_000_000
    public var sessionTickets = true
    public var ticketKeyFile: String?
    public var proxyProtocol = ProxyProtocol.off
    public var proxyProtocolIn = ProxyProtocolIn.off
    /// Who may send a PROXY header (required when proxy_protocol_in is on).
    public var trustedProxies: [CIDR] = []
    public var allowSubject: [String] = []
    public var allowCN: [String] = []
    public var allowOU: [String] = []
    public var allowSANDNS: [String] = []
    public var allowSANEmail: [String] = []
    public var allowSANURI: [String] = []
    public var certMap = CertMap.subject
    public var certMapBase: String?
    public var certMapFilter: String?
    public var verifyCertInDirectory = false
    public var directoryURL: String?
    public var directoryBindDN: String?
    public var directoryBindPasswordFile: String?
    public var directoryTimeoutNanos: UInt64 = 2_000_000_000
    public var directoryCacheTTLNanos: UInt64 = 60_000_000_000
    public var directoryUnavailable = DirectoryUnavailable.reject
    public var tls = TLSMode.implicit
    public var clientAuth = ClientAuth.none
    public var backendBindDN: String?
    public var backendBindPasswordFile: String?
    public var maxRequestSize = 4 << 20

    /// Whether the proxy reads the client's LDAP messages (StartTLS, or the certificate
    /// as the login), instead of relaying bytes unchanged.
    public var isMessageAware: Bool { tls == .starttls || clientAuth != .none }

    /// Whether connections ask the directory: to check the certificate is in its entry,
    /// or to find the entry that is the login (`cert_map = search`).
    public var usesDirectory: Bool { verifyCertInDirectory || (clientAuth != .none && certMap == .search) }
    /// OCSP and CRL distribution points (Config/RevocationConfig.swift).
    public var revocation = RevocationConfig()

    /// directory_url as an endpoint: ldap://HOST[:PORT] or ldapi://PATH (percent-encoded).
    public var directoryEndpoint: Endpoint? {
        guard let url = directoryURL else { return nil }
        if url.hasPrefix("ldapi://") {
            return .unix(path: String(url.dropFirst(8)).percentDecoded())
        }
        var hostPort = String(url.dropFirst(7))
        if hostPort.hasSuffix("/") { hostPort.removeLast() }
        if !hostPort.contains(":") || hostPort.hasSuffix("]") { hostPort += ":389" }
        return try? Endpoint.parse(hostPort, allowUnix: false).get()
    }

    public init(name: String, line: Int? = nil) {
        self.name = name
        self.line = line
    }

    /// The revocation policy in force, or nil when no CRL folder is configured
    /// (then no revocation check is made at all).
    public var crlPolicy: CRLPolicy? {
        crlDir == nil ? nil : (crlPolicySetting ?? .strict)
    }
}

extension String {
    /// %2F -> "/" and the like, for ldapi:// paths.
    func percentDecoded() -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(self.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == 0x25, utf8.count >= 2, let value = HexDigits.byte(utf8[utf8.startIndex], utf8[utf8.startIndex + 1]) {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
