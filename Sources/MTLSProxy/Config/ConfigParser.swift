/// Reads the `key = value` configuration format that proxy.conf.example documents.
///
/// Every error names the file and the line. Paths are taken relative to the folder of
/// the config file, so that a config and its certificates can move together.
public enum ConfigParser {
    public static func parse(text: String, path: String?) throws(ConfigError) -> ProxyConfig {
        var config = ProxyConfig()
        config.sourcePath = path
        let baseDir = path.map(FilePath.parent(of:)) ?? ""
        var current: ListenerConfig?
        var seenKeys: Set<String> = []

        func finishSection() throws(ConfigError) {
            guard let listener = current else { return }
            try validate(listener, file: path)
            config.listeners.append(listener)
        }

        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = stripComment(rawLine).trimmingSpaces()
            if line.isEmpty { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else {
                    throw ConfigError(file: path, line: lineNumber, "a section header looks like [name], got '\(line)'")
                }
                let name = String(line.dropFirst().dropLast()).trimmingSpaces()
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                    throw ConfigError(file: path, line: lineNumber, "bad listener name '\(name)' (letters, digits, - _ . only)")
                }
                if config.listeners.contains(where: { $0.name == name }) || current?.name == name {
                    throw ConfigError(file: path, line: lineNumber, "listener [\(name)] is defined twice")
                }
                try finishSection()
                current = ListenerConfig(name: name, line: lineNumber)
                seenKeys = []
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw ConfigError(file: path, line: lineNumber, "expected 'key = value', got '\(line)'")
            }
            let key = String(line[..<equals]).trimmingSpaces()
            let value = String(line[line.index(after: equals)...]).trimmingSpaces()
            guard !seenKeys.contains(key) else {
                throw ConfigError(file: path, line: lineNumber, "'\(key)' is set twice")
            }
            seenKeys.insert(key)
            do {
                if var listener = current {
                    guard let setter = listenerKeys[key] ?? revocationKeys[key] else {
                        let hint = globalKeys[key] != nil ? " (it is a global key: put it before the first [section])" : ""
                        throw ConfigError.Message("unknown key '\(key)'\(hint)")
                    }
                    try setter(&listener, value, baseDir)
                    current = listener
                } else {
                    guard let setter = globalKeys[key] else {
                        let hint = listenerKeys[key] ?? revocationKeys[key] != nil ? " (it is a listener key: put it in a [name] section)" : ""
                        throw ConfigError.Message("unknown key '\(key)'\(hint)")
                    }
                    try setter(&config.global, value)
                }
            } catch {
                throw ConfigError(file: path, line: lineNumber, error.text)
            }
        }
        try finishSection()
        guard !config.listeners.isEmpty else {
            throw ConfigError(file: path, line: nil, "no listener: add a [name] section with listen, backend, cert, key and ca_bundle")
        }
        return config
    }

    /// Checks what a single key cannot: required keys and combinations.
    public static func validate(_ listener: ListenerConfig, file: String?) throws(ConfigError) {
        func fail(_ message: String) -> ConfigError {
            ConfigError(file: file, line: listener.line, "[\(listener.name)]: \(message)")
        }
        let required: [(String, Bool)] = [
            ("listen", listener.listen != nil), ("backend", listener.backend != nil), ("cert", listener.cert != nil),
            ("key", listener.key != nil), ("ca_bundle", listener.caBundle != nil),
        ]
        for (key, present) in required where !present {
            throw fail("missing required key '\(key)'")
        }
        if listener.crlPolicySetting != nil && listener.crlDir == nil {
            throw fail("crl_policy needs crl_dir")
        }
        do { try validateRevocation(listener) } catch { throw fail(error.text) }
        if listener.proxyProtocolIn != .off && listener.trustedProxies.isEmpty {
            throw fail("proxy_protocol_in needs trusted_proxies: the addresses allowed to send a PROXY header")
        }
        if listener.clientAuth != .none {
            guard listener.backendBindDN != nil, listener.backendBindPasswordFile != nil else {
                throw fail("client_auth = \(listener.clientAuth.rawValue) needs backend_bind_dn and backend_bind_password_file: the proxy's own identity on the backend, which the directory lets proxy for users")
            }
        }
        if listener.backendBindDN != nil && listener.backendBindPasswordFile == nil {
            throw fail("backend_bind_dn needs backend_bind_password_file")
        }
        if listener.usesDirectory {
            if listener.certMap == .search && (listener.certMapBase == nil || listener.certMapFilter == nil) {
                throw fail("cert_map = search needs cert_map_base and cert_map_filter")
            }
            if listener.directoryURL != nil && listener.directoryEndpoint == nil {
                throw fail("directory_url '\(listener.directoryURL!)' is not ldap://HOST:PORT or ldapi://PATH")
            }
            if listener.directoryURL == nil && listener.proxyProtocol == .v2 {
                throw fail("with proxy_protocol = v2 the backend expects a PROXY header: set directory_url for the check")
            }
            if listener.directoryBindDN != nil && listener.directoryBindPasswordFile == nil {
                throw fail("directory_bind_dn needs directory_bind_password_file")
            }
        }
    }

    // MARK: - Keys

    typealias GlobalSetter = @Sendable (inout GlobalConfig, String) throws(ConfigError.Message) -> Void
    typealias ListenerSetter = @Sendable (inout ListenerConfig, String, String) throws(ConfigError.Message) -> Void

    static let globalKeys: [String: GlobalSetter] = [
        "workers": { config, value throws(ConfigError.Message) in
            if value == "auto" { config.workers = nil; return }
            guard let count = Int(value), (1...256).contains(count) else { throw "workers must be 'auto' or 1..256" }
            config.workers = count
        },
        "log_level": { config, value throws(ConfigError.Message) in config.logLevel = try choice(value, "log_level") },
        "log_format": { config, value throws(ConfigError.Message) in config.logFormat = try choice(value, "log_format") },
        "health_listen": { config, value throws(ConfigError.Message) in
            config.healthListen = try Endpoint.parse(value, allowUnix: false).get()
        },
        "shutdown_grace": { config, value throws(ConfigError.Message) in config.shutdownGraceNanos = try duration(value) },
        "drain_delay": { config, value throws(ConfigError.Message) in config.drainDelayNanos = try duration(value) },
        "user": { config, value throws(ConfigError.Message) in config.user = try nonEmpty(value) },
        "group": { config, value throws(ConfigError.Message) in config.group = try nonEmpty(value) },
    ]

    static let listenerKeys: [String: ListenerSetter] = [
        "listen": { l, v, _ throws(ConfigError.Message) in l.listen = try Endpoint.parse(v, allowUnix: false).get() },
        "backend": { l, v, base throws(ConfigError.Message) in
            l.backend = try Endpoint.parse(v, allowUnix: true).get()
        },
        "cert": { l, v, base throws(ConfigError.Message) in l.cert = try path(v, base) },
        "key": { l, v, base throws(ConfigError.Message) in l.key = try path(v, base) },
        "ca_bundle": { l, v, base throws(ConfigError.Message) in l.caBundle = try path(v, base) },
        "crl_dir": { l, v, base throws(ConfigError.Message) in l.crlDir = try path(v, base) },
        "crl_policy": { l, v, _ throws(ConfigError.Message) in l.crlPolicySetting = try choice(v, "crl_policy") },
        "revoke_active": { l, v, _ throws(ConfigError.Message) in l.revokeActive = try bool(v) },
        "priority": { l, v, _ throws(ConfigError.Message) in l.priority = try nonEmpty(v) },
        "handshake_timeout": { l, v, _ throws(ConfigError.Message) in l.handshakeTimeoutNanos = try positiveDuration(v) },
        "idle_timeout": { l, v, _ throws(ConfigError.Message) in l.idleTimeoutNanos = try duration(v) },
        "connect_timeout": { l, v, _ throws(ConfigError.Message) in l.connectTimeoutNanos = try positiveDuration(v) },
        "max_connections": { l, v, _ throws(ConfigError.Message) in
            guard let n = Int(v), n >= 1, n <= 1_000_000 else { throw "max_connections must be 1..1000000" }
            l.maxConnections = n
        },
        "crl_warn_before": { l, v, _ throws(ConfigError.Message) in l.crlWarnBeforeNanos = try duration(v) },
        "session_tickets": { l, v, _ throws(ConfigError.Message) in l.sessionTickets = try bool(v) },
        "ticket_key_file": { l, v, base throws(ConfigError.Message) in l.ticketKeyFile = try path(v, base) },
        "proxy_protocol": { l, v, _ throws(ConfigError.Message) in l.proxyProtocol = try choice(v, "proxy_protocol") },
        "proxy_protocol_in": { l, v, _ throws(ConfigError.Message) in l.proxyProtocolIn = try choice(v, "proxy_protocol_in") },
        "trusted_proxies": { l, v, _ throws(ConfigError.Message) in
            l.trustedProxies = try list(v).map { item throws(ConfigError.Message) -> CIDR in
                guard let cidr = CIDR.parse(item) else { throw "'\(item)' is not an address or address/prefix (10.0.0.0/8, 2001:db8::/32)" }
                return cidr
            }
        },
        // Subject DNs contain commas: several are separated by ';'.
        "allow_subject": { l, v, _ throws(ConfigError.Message) in l.allowSubject = try list(v, separator: ";") },
        "allow_cn": { l, v, _ throws(ConfigError.Message) in l.allowCN = try list(v) },
        "allow_ou": { l, v, _ throws(ConfigError.Message) in l.allowOU = try list(v) },
        "allow_san_dns": { l, v, _ throws(ConfigError.Message) in l.allowSANDNS = try list(v) },
        "allow_san_email": { l, v, _ throws(ConfigError.Message) in l.allowSANEmail = try list(v) },
        "allow_san_uri": { l, v, _ throws(ConfigError.Message) in l.allowSANURI = try list(v) },
        "cert_map": { l, v, _ throws(ConfigError.Message) in l.certMap = try choice(v, "cert_map") },
        "cert_map_base": { l, v, _ throws(ConfigError.Message) in l.certMapBase = try nonEmpty(v) },
        "cert_map_filter": { l, v, _ throws(ConfigError.Message) in l.certMapFilter = try nonEmpty(v) },
        "verify_cert_in_directory": { l, v, _ throws(ConfigError.Message) in l.verifyCertInDirectory = try bool(v) },
        "directory_url": { l, v, _ throws(ConfigError.Message) in
            guard v.hasPrefix("ldap://") || v.hasPrefix("ldapi://") else { throw "directory_url must be ldap://HOST:PORT or ldapi://PATH" }
            l.directoryURL = v
        },
        "directory_bind_dn": { l, v, _ throws(ConfigError.Message) in l.directoryBindDN = try nonEmpty(v) },
        "directory_bind_password_file": { l, v, base throws(ConfigError.Message) in
            l.directoryBindPasswordFile = try path(v, base)
        },
        "directory_timeout": { l, v, _ throws(ConfigError.Message) in l.directoryTimeoutNanos = try positiveDuration(v) },
        "directory_cache_ttl": { l, v, _ throws(ConfigError.Message) in l.directoryCacheTTLNanos = try duration(v) },
        "directory_unavailable": { l, v, _ throws(ConfigError.Message) in
            l.directoryUnavailable = try choice(v, "directory_unavailable")
        },
        "tls": { l, v, _ throws(ConfigError.Message) in l.tls = try choice(v, "tls") },
        "client_auth": { l, v, _ throws(ConfigError.Message) in l.clientAuth = try choice(v, "client_auth") },
        "backend_bind_dn": { l, v, _ throws(ConfigError.Message) in l.backendBindDN = try nonEmpty(v) },
        "backend_bind_password_file": { l, v, base throws(ConfigError.Message) in l.backendBindPasswordFile = try path(v, base) },
        "max_request_size": { l, v, _ throws(ConfigError.Message) in
            guard let size = ByteSize.parse(v), (64...(1 << 30)).contains(size) else {
                throw "max_request_size must be a size from 64 to 1GiB (a number with an optional unit: 512KiB, 4MiB), got '\(v)'"
            }
            l.maxRequestSize = size
        },
    ]

    // MARK: - Value parsers

    static func choice<T: RawRepresentable & CaseIterable>(_ value: String, _ key: String) throws(ConfigError.Message) -> T
    where T.RawValue == String {
        guard let parsed = T(rawValue: value) else {
            throw "\(key) must be one of \(T.allCases.map(\.rawValue).joined(separator: "|")), got '\(value)'"
        }
        return parsed
    }

    static func bool(_ value: String) throws(ConfigError.Message) -> Bool {
        switch value {
        case "yes", "true", "on": return true
        case "no", "false", "off": return false
        default: throw "expected yes or no, got '\(value)'"
        }
    }

    static func duration(_ value: String) throws(ConfigError.Message) -> UInt64 {
        guard let nanos = ConfigDuration.parseNanoseconds(value) else {
            throw "'\(value)' is not a duration (a number with a unit: 500ms, 10s, 5m, 1h)"
        }
        return nanos
    }

    static func positiveDuration(_ value: String) throws(ConfigError.Message) -> UInt64 {
        let nanos = try duration(value)
        guard nanos > 0 else { throw "this duration must be more than 0" }
        return nanos
    }

    static func nonEmpty(_ value: String) throws(ConfigError.Message) -> String {
        guard !value.isEmpty else { throw "a value is required" }
        return value
    }

    static func path(_ value: String, _ baseDir: String) throws(ConfigError.Message) -> String {
        let value = try nonEmpty(value)
        if value.hasPrefix("/") || baseDir.isEmpty { return value }
        return baseDir + "/" + value
    }

    static func list(_ value: String, separator: Character = ",") throws(ConfigError.Message) -> [String] {
        let items = value.split(separator: separator).map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
        guard !items.isEmpty else { throw "expected a comma-separated list" }
        return items
    }

    // MARK: - Text helpers

    /// `#` starts a comment at the start of a line or after white space.
    static func stripComment(_ line: Substring) -> Substring {
        var previous: Character = " "
        for index in line.indices {
            if line[index] == "#" && (previous == " " || previous == "\t") { return line[..<index] }
            previous = line[index]
        }
        return line
    }
}

extension Error {
    /// The message of a ConfigError.Message, or a description of anything else.
    var text: String { (self as? ConfigError.Message)?.text ?? "\(self)" }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" || first == "\r" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" || last == "\r" { slice = slice.dropLast() }
        return String(slice)
    }
}
