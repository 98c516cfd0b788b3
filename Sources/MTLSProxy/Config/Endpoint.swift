/// Where to listen or connect: `HOST:PORT`, `[V6]:PORT`, or (backends only) `unix:/path`.
public enum Endpoint: Equatable, Sendable, CustomStringConvertible {
    case inet(host: String, port: UInt16)
    case inet6(host: String, port: UInt16)
    case unix(path: String)

    /// Parses an endpoint; returns a message saying what is wrong otherwise.
    public static func parse(_ text: String, allowUnix: Bool) -> Result<Endpoint, ConfigError.Message> {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard allowUnix else { return .failure("a unix socket is only allowed for backends: '\(text)'") }
            guard path.hasPrefix("/") else { return .failure("unix socket path must be absolute: '\(text)'") }
            return .success(.unix(path: path))
        }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure("missing ']' in '\(text)'") }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let port = parsePort(rest.dropFirst()) else {
                return .failure("expected [V6]:PORT, got '\(text)'")
            }
            guard isIPv6Literal(host) else { return .failure("not an IPv6 address: '\(host)'") }
            return .success(.inet6(host: host, port: port))
        }
        guard let colon = text.lastIndex(of: ":") else { return .failure("expected HOST:PORT, got '\(text)'") }
        let host = String(text[..<colon])
        guard !host.isEmpty, !host.contains(":"), let port = parsePort(text[text.index(after: colon)...]) else {
            return .failure("expected HOST:PORT, got '\(text)'")
        }
        return .success(.inet(host: host, port: port))
    }

    private static func parsePort(_ text: Substring) -> UInt16? {
        guard !text.isEmpty, text.allSatisfy(\.isASCIIDigit), let port = UInt16(text), port > 0 else { return nil }
        return port
    }

    private static func isIPv6Literal(_ host: String) -> Bool {
        !host.isEmpty && host.contains(":") && host.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
    }

    public var description: String {
        switch self {
        case .inet(let host, let port): return "\(host):\(port)"
        case .inet6(let host, let port): return "[\(host)]:\(port)"
        case .unix(let path): return "unix:\(path)"
        }
    }
}
