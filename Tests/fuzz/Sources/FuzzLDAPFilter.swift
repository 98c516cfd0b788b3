import MTLSProxy

/// The filter parser (cert_map_filter): a filter that parses encodes into a SearchRequest
/// that frames as one message; any text, escaped, is a value that parses back to itself.
func fuzzLDAPFilter(_ data: [UInt8]) {
    let text = String(decoding: data, as: UTF8.self)
    if let filter = try? LDAPFilter.parse(text) {
        let request = LDAPMessages.searchRequest(
            id: 7, base: "dc=example,dc=com", scope: .subtree, filter: filter, attributes: ["userCertificate;binary"])
        if request.count <= DirectoryConnection.maxMessageBytes {
            check(DirectoryConnection.frame(request) == .message(length: request.count), "a SearchRequest is not one message")
        }
        if let decoded = try? LDAPMessages.decode(request) {
            check(decoded.messageID == 7 && decoded.operation == 3, "SearchRequest reads back as \(decoded)")
        }
    }
    let value = Array(text.utf8)
    let escaped = LDAPFilter.escape(text)
    check((try? LDAPFilter.parse("(cn=\(escaped))")) == .equality("cn", value), "escaped '\(escaped)' is not the value")
    if !value.isEmpty {
        check((try? LDAPFilter.parse("(cn=*\(escaped)*)")) == .substrings("cn", initial: nil, any: [value], final: nil),
              "escaped '\(escaped)' is not the substring")
    }
}
