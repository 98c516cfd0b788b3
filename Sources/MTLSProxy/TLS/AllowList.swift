/// The optional allow-lists of a listener (`allow_subject`, `allow_cn`, `allow_ou`,
/// `allow_san_dns`, `allow_san_email`, `allow_san_uri`), checked after the chain has
/// verified. They are OR'ed: a certificate passes when any of its names matches any
/// pattern of the list for that kind of name. With no list set, every verified client
/// passes. In a pattern, `*` matches within one label: it never crosses a `.` (nor a
/// `,` in a subject DN), so `*.example.com` allows `ldap.example.com` but not
/// `a.b.example.com`.
struct AllowList: Sendable {
    var subject: [String] = []
    var cn: [String] = []
    var ou: [String] = []
    var dns: [String] = []
    var email: [String] = []
    var uri: [String] = []

    init(_ config: ListenerConfig) {
        subject = config.allowSubject
        cn = config.allowCN
        ou = config.allowOU
        dns = config.allowSANDNS
        email = config.allowSANEmail
        uri = config.allowSANURI
    }

    init() {}

    var isEmpty: Bool {
        subject.isEmpty && cn.isEmpty && ou.isEmpty && dns.isEmpty && email.isEmpty && uri.isEmpty
    }

    func permits(_ names: CertificateNames) -> Bool {
        if isEmpty { return true }
        func any(_ patterns: [String], _ values: [String], separators: Set<Character>) -> Bool {
            patterns.contains { pattern in values.contains { Self.matches(pattern, $0, separators: separators) } }
        }
        return any(subject, [names.subject], separators: [","])
            || any(cn, names.cn, separators: ["."])
            || any(ou, names.ou, separators: ["."])
            || any(dns, names.dns, separators: ["."])
            || any(email, names.email, separators: ["."])
            || any(uri, names.uri, separators: ["/"])
    }

    /// Glob with `*` only; names compare case-insensitively except URIs' paths would
    /// (kept simple: DNS names and e-mail domains are case-insensitive, and a pattern
    /// is an operator's allow-list, so a case-insensitive match is what one expects).
    static func matches(_ pattern: String, _ value: String, separators: Set<Character>) -> Bool {
        let p = Array(pattern.lowercased()), v = Array(value.lowercased())
        func match(_ i: Int, _ j: Int) -> Bool {
            if i == p.count { return j == v.count }
            if p[i] == "*" {
                var k = j
                while true {
                    if match(i + 1, k) { return true }
                    if k == v.count || separators.contains(v[k]) { return false }
                    k += 1
                }
            }
            return j < v.count && p[i] == v[j] && match(i + 1, j + 1)
        }
        return match(0, 0)
    }
}

/// The names of a certificate that allow-lists look at.
struct CertificateNames: Sendable {
    var subject: String
    var cn: [String] = []
    var ou: [String] = []
    var dns: [String] = []
    var email: [String] = []
    var uri: [String] = []
}
