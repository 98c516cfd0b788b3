import SwiftASN1

/// The LDAP Notice of Disconnection (RFC 4511 section 4.4.1): an unsolicited
/// ExtendedResponse with messageID 0 that tells the client why the server is about to
/// close, so that it reports a reason instead of a broken connection.
enum NoticeOfDisconnection {
    static let oid = "1.3.6.1.4.1.1466.20036"

    /// resultCode values of RFC 4511 that the proxy sends.
    enum ResultCode: Int {
        case protocolError = 2
        case strongerAuthRequired = 8
        case unavailable = 52
    }

    static let revoked = encode(.strongerAuthRequired, diagnostic: "client certificate revoked")
    static let shuttingDown = encode(.unavailable, diagnostic: "mtls-proxy is shutting down")
    static let backendBindFailed = encode(.unavailable, diagnostic: "the proxy cannot bind to the directory")
    static let removedFromDirectory = encode(.strongerAuthRequired, diagnostic: "client certificate no longer in the directory")

    /// LDAPMessage ::= SEQUENCE { messageID 0, extendedResp [APPLICATION 24] SEQUENCE {
    ///   resultCode ENUMERATED, matchedDN "", diagnosticMessage, responseName [10] OID } }
    static func encode(_ code: ResultCode, diagnostic: String) -> [UInt8] {
        var serializer = DER.Serializer()
        do {
            try serializer.appendConstructedNode(identifier: .sequence) { message in
                try message.serialize(0)
                try message.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 24, tagClass: .application)) { response in
                    try code.rawValue.serialize(into: &response, withIdentifier: .enumerated)
                    try response.serialize(ASN1OctetString(contentBytes: []))
                    try response.serialize(ASN1OctetString(contentBytes: ArraySlice(diagnostic.utf8)))
                    response.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 10, tagClass: .contextSpecific)) {
                        $0.append(contentsOf: oid.utf8)
                    }
                }
            }
        } catch {
            preconditionFailure("encoding a fixed LDAP message cannot fail: \(error)")
        }
        return serializer.serializedBytes
    }
}
