import SwiftASN1

/// A client's LDAPMessage (RFC 4511 §4.1.1), decoded with swift-asn1 as far as the proxy
/// acts on it: the envelope (messageID, the operation's tag, the controls), and the bind
/// and extended requests. Everything else stays as the client encoded it: a forwarded
/// request is its own bytes, with at most a control appended.
package struct LDAPRequest {
    /// The protocolOp CHOICE of requests, by APPLICATION tag.
    package enum Operation: UInt, Sendable {
        case bind = 0, unbind = 2, search = 3, modify = 6, add = 8, delete = 10, modifyDN = 12, compare = 14
        case abandon = 16, extended = 23

        /// The response's APPLICATION tag; nil for the requests that have none.
        var responseTag: UInt? {
            switch self {
            case .unbind, .abandon: return nil
            case .search: return 5  // SearchResultDone
            case .extended: return 24
            default: return rawValue + 1
            }
        }
    }

    package struct Control {
        package var type: String
        /// The whole Control as encoded, to be passed on unchanged.
        var encoded: ArraySlice<UInt8>
    }

    package enum Authentication: Equatable {
        case simple(password: [UInt8])
        case sasl(mechanism: String, credentials: [UInt8]?)
    }

    package struct Bind: Equatable {
        package var version: Int
        package var name: String
        package var authentication: Authentication

        /// RFC 4513 §5.1.1: no name and no password.
        package var isAnonymous: Bool { name.isEmpty && authentication == .simple(password: []) }
    }

    package enum DecodeError: Error, Equatable {
        case malformed(String)
    }

    package let messageID: Int
    package let operation: Operation
    package let controls: [Control]
    /// The operation, decoded only for bind requests.
    package let bind: Bind?
    /// The requestName of an extended request.
    package let extendedName: String?
    private let messageIDBytes: ArraySlice<UInt8>
    private let operationBytes: ArraySlice<UInt8>

    package static let startTLSName = "1.3.6.1.4.1.1466.20037"
    package static let whoAmIName = "1.3.6.1.4.1.4203.1.11.3"
    /// RFC 4370, and the draft's OID that slapd still honours: a client may send neither.
    package static let proxiedAuthorizationTypes: Set<String> = ["2.16.840.1.113730.3.4.18", "2.16.840.1.113730.3.4.12"]

    /// Decodes one whole message as framed by LDAPMessageFramer.
    package init(decoding message: [UInt8]) throws(DecodeError) {
        let root: ASN1Node
        do { root = try BER.parse(message) } catch { throw .malformed("not BER: \(error)") }
        guard root.identifier == .sequence, case .constructed(let parts) = root.content else {
            throw .malformed("an LDAPMessage is a SEQUENCE")
        }
        var iterator = parts.makeIterator()
        guard let idNode = iterator.next(), let opNode = iterator.next() else { throw .malformed("messageID and protocolOp are required") }
        guard idNode.identifier == .integer, let id = try? Int(berEncoded: idNode), (1...Int(Int32.max)).contains(id) else {
            throw .malformed("a request's messageID is an INTEGER from 1 to 2^31-1")
        }
        guard opNode.identifier.tagClass == .application, let operation = Operation(rawValue: opNode.identifier.tagNumber) else {
            throw .malformed("APPLICATION \(opNode.identifier.tagNumber) is not an LDAP request")
        }
        var controls: [Control] = []
        if let controlsNode = iterator.next() {
            guard controlsNode.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific),
                  case .constructed(let list) = controlsNode.content
            else { throw .malformed("only controls [0] may follow the operation") }
            for control in list {
                guard control.identifier == .sequence, case .constructed(let fields) = control.content,
                      let typeNode = fields.first(where: { _ in true }), case .primitive(let type) = typeNode.content
                else { throw .malformed("a Control is a SEQUENCE starting with its controlType") }
                controls.append(Control(type: String(decoding: type, as: UTF8.self), encoded: control.encodedBytes))
            }
            guard iterator.next() == nil else { throw .malformed("nothing may follow the controls") }
        }
        messageID = id
        self.operation = operation
        self.controls = controls
        messageIDBytes = idNode.encodedBytes
        operationBytes = opNode.encodedBytes
        bind = operation == .bind ? try Self.decodeBind(opNode) : nil
        extendedName = operation == .extended ? try Self.decodeExtendedName(opNode) : nil
    }

    /// Whether the client sent its own proxied authorization control.
    package var claimsProxiedAuthorization: Bool { controls.contains { Self.proxiedAuthorizationTypes.contains($0.type) } }

    /// The request as the backend gets it, with a critical proxied authorization control
    /// for `authzId` ("dn:..." or "" for anonymous) after the client's own controls.
    /// Only the envelope is written anew: the operation's bytes are the client's.
    package func withProxiedAuthorization(_ authzId: String) -> [UInt8] {
        var serializer = DER.Serializer()
        do {
            try serializer.appendConstructedNode(identifier: .sequence) { message in
                message.serializeRawBytes(messageIDBytes)
                message.serializeRawBytes(operationBytes)
                try message.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { list in
                    for control in controls { list.serializeRawBytes(control.encoded) }
                    try list.appendConstructedNode(identifier: .sequence) { control in
                        try control.serialize(ASN1OctetString(contentBytes: ArraySlice("2.16.840.1.113730.3.4.18".utf8)))
                        try control.serialize(true)
                        try control.serialize(ASN1OctetString(contentBytes: ArraySlice(authzId.utf8)))
                    }
                }
            }
        } catch {
            preconditionFailure("re-encoding a decoded request cannot fail: \(error)")
        }
        return serializer.serializedBytes
    }

    // MARK: - Operations

    /// BindRequest ::= [APPLICATION 0] SEQUENCE { version INTEGER, name LDAPDN,
    ///   authentication CHOICE { simple [0] OCTET STRING, sasl [3] SaslCredentials } }
    private static func decodeBind(_ node: ASN1Node) throws(DecodeError) -> Bind {
        guard case .constructed(let fields) = node.content else { throw .malformed("a BindRequest is constructed") }
        var iterator = fields.makeIterator()
        guard let versionNode = iterator.next(), versionNode.identifier == .integer, let version = try? Int(berEncoded: versionNode),
              let nameNode = iterator.next(), nameNode.identifier == .octetString, case .primitive(let name) = nameNode.content,
              let authNode = iterator.next(), iterator.next() == nil
        else { throw .malformed("a BindRequest is version, name, authentication") }
        let authentication: Authentication
        switch (authNode.identifier.tagClass, authNode.identifier.tagNumber, authNode.content) {
        case (.contextSpecific, 0, .primitive(let password)):
            authentication = .simple(password: Array(password))
        case (.contextSpecific, 3, .constructed(let sasl)):
            var saslFields = sasl.makeIterator()
            guard let mechanismNode = saslFields.next(), case .primitive(let mechanism) = mechanismNode.content else {
                throw .malformed("SaslCredentials start with the mechanism")
            }
            var credentials: [UInt8]?
            if let credentialsNode = saslFields.next() {
                guard case .primitive(let bytes) = credentialsNode.content, saslFields.next() == nil else {
                    throw .malformed("SaslCredentials are a mechanism and optional credentials")
                }
                credentials = Array(bytes)
            }
            authentication = .sasl(mechanism: String(decoding: mechanism, as: UTF8.self), credentials: credentials)
        default:
            throw .malformed("authentication is simple [0] or sasl [3]")
        }
        return Bind(version: version, name: String(decoding: name, as: UTF8.self), authentication: authentication)
    }

    /// ExtendedRequest ::= [APPLICATION 23] SEQUENCE { requestName [0] LDAPOID, requestValue [1] OPTIONAL }
    private static func decodeExtendedName(_ node: ASN1Node) throws(DecodeError) -> String {
        guard case .constructed(let fields) = node.content, let nameNode = fields.first(where: { _ in true }),
              nameNode.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific),
              case .primitive(let name) = nameNode.content
        else { throw .malformed("an ExtendedRequest starts with requestName [0]") }
        return String(decoding: name, as: UTF8.self)
    }
}

/// The responses the proxy writes itself (RFC 4511 §4.1.9).
package enum LDAPResponse {
    package enum ResultCode: Int, Sendable {
        case success = 0, operationsError = 1, protocolError = 2, confidentialityRequired = 13
        case inappropriateAuthentication = 48, invalidCredentials = 49, insufficientAccessRights = 50, unavailable = 52
        case unwillingToPerform = 53
    }

    /// The response to `request` (nil for unbind and abandon, which have none).
    package static func result(to request: LDAPRequest, _ code: ResultCode, _ diagnostic: String) -> [UInt8]? {
        guard let tag = request.operation.responseTag else { return nil }
        // An extended response names the operation it answers when the proxy knows it.
        let name = request.operation == .extended ? request.extendedName : nil
        return encode(id: request.messageID, tag: tag, code: code, diagnostic: diagnostic, responseName: name)
    }

    /// LDAPResult fields inside [APPLICATION tag]: resultCode, matchedDN, diagnosticMessage,
    /// and for an ExtendedResponse its responseName [10].
    package static func encode(id: Int, tag: UInt, code: ResultCode, diagnostic: String, responseName: String? = nil) -> [UInt8] {
        var serializer = DER.Serializer()
        do {
            try serializer.appendConstructedNode(identifier: .sequence) { message in
                try message.serialize(id)
                try message.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: tag, tagClass: .application)) { result in
                    try code.rawValue.serialize(into: &result, withIdentifier: .enumerated)
                    try result.serialize(ASN1OctetString(contentBytes: []))
                    try result.serialize(ASN1OctetString(contentBytes: ArraySlice(diagnostic.utf8)))
                    if let responseName {
                        result.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 10, tagClass: .contextSpecific)) {
                            $0.append(contentsOf: responseName.utf8)
                        }
                    }
                }
            }
        } catch {
            preconditionFailure("encoding an LDAP result cannot fail: \(error)")
        }
        return serializer.serializedBytes
    }
}
