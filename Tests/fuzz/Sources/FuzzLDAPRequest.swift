import MTLSProxy
import SwiftASN1

/// A client's byte stream on a message-aware listener: cut into messages as the proxy
/// does, each decoded as a request and put through the login of both client_auth modes.
/// Whatever goes to the backend must be canonical DER and decode again as the same
/// request, with exactly the proxy's proxied authorization control when it added one; a
/// client's own such control never goes on; whatever the proxy answers is an LDAP result
/// for that messageID.
func fuzzLDAPRequest(_ data: [UInt8]) {
    var rest = data[...]
    var logins = [ClientLogin(mode: .saslExternal, entryDN: "uid=alice,ou=people,dc=example,dc=com"),
                  ClientLogin(mode: .certificate, entryDN: "uid=alice,ou=people,dc=example,dc=com")]
    while case .message(let header, let content) = LDAPMessageFramer.header(of: rest), rest.count >= header + content {
        let message = Array(rest.prefix(header + content))
        rest = rest.dropFirst(header + content)
        guard let request = try? LDAPRequest(decoding: message) else { continue }
        for index in logins.indices {
            switch logins[index].step(request, message: message) {
            case .forward(let bytes):
                check(!request.claimsProxiedAuthorization, "a client's own proxied authorization control went on")
                guard let forwarded = try? LDAPRequest(decoding: bytes) else { return check(false, "a forwarded request does not decode") }
                // What slapd gets is canonical DER (swift-asn1's strict DER parser reads it whole),
                // so liblber reads the same elements the proxy checked.
                check((try? DER.parse(bytes)) != nil, "a forwarded request is not DER")
                check(forwarded.messageID == request.messageID && forwarded.operation == request.operation, "the request changed")
                let added = forwarded.controls.count - request.controls.count
                check(added == 0 || (added == 1 && forwarded.controls.last?.type == "2.16.840.1.113730.3.4.18"), "controls changed")
            case .answer(let bytes), .rebindThenAnswer(_, let bytes):
                guard let response = try? LDAPMessages.decode(bytes) else { return check(false, "an answer does not decode") }
                check(response.messageID == request.messageID && response.resultCode != nil, "an answer for another request")
            case .drop:
                check(request.operation == .abandon, "only an abandon is dropped")
            }
        }
    }
}
