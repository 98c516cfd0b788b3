import SwiftASN1

/// A client's LDAPMessage (RFC 4511 §4.1.1), parsed with swift-asn1 and checked element by
/// element against RFC 4511 (LDAPRequestGrammar); the proxy decodes what it acts on (the
/// envelope, binds, extended requests). The backend never gets the client's bytes: it
/// gets the canonical DER of what was checked, with at most the proxy's control added,
/// so that slapd reads exactly what the proxy read.
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
        /// The whole Control as parsed (checked: numericoid, BOOLEAN?, OCTET STRING?).
        var node: ASN1Node
        /// Its bytes as the client encoded them.
        package var encoded: ArraySlice<UInt8> { node.encodedBytes }
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
    private let messageIDNode: ASN1Node
    private let operationNode: ASN1Node

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
        try LDAPRequestGrammar.checkOperation(opNode, operation)
        var controls: [Control] = []
        if let controlsNode = iterator.next() {
            guard controlsNode.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific),
                  case .constructed(let list) = controlsNode.content
            else { throw .malformed("only controls [0] may follow the operation") }
            for control in list {
                controls.append(Control(type: try LDAPRequestGrammar.checkControl(control), node: control))
            }
            guard iterator.next() == nil else { throw .malformed("nothing may follow the controls") }
        }
        messageID = id
        self.operation = operation
        self.controls = controls
        messageIDNode = idNode
        operationNode = opNode
        bind = operation == .bind ? try Self.decodeBind(opNode) : nil
        extendedName = operation == .extended ? try Self.decodeExtendedName(opNode) : nil
    }

    /// Whether the client sent its own proxied authorization control.
    package var claimsProxiedAuthorization: Bool { controls.contains { Self.proxiedAuthorizationTypes.contains($0.type) } }

    /// The request as the backend gets it, with a critical proxied authorization control
    /// for `authzId` ("dn:..." or "" for anonymous) after the client's own controls: the
    /// canonical DER of the checked request, never the client's own bytes.
    package func withProxiedAuthorization(_ authzId: String) -> [UInt8] {
        let oid = Self.proxiedAuthorizationOID
        let authzLength = authzId.utf8.count
        // Control ::= SEQUENCE { controlType OCTET STRING, criticality BOOLEAN TRUE, controlValue OCTET STRING }
        let controlContent = LDAPDER.tlvSize(oid.count) + 3 + LDAPDER.tlvSize(authzLength)
        let listContent = controls.reduce(0) { $0 + LDAPDER.size($1.node) } + LDAPDER.tlvSize(controlContent)
        var out = envelope(controlsContent: listContent)
        for control in controls { LDAPDER.append(control.node, to: &out) }
        LDAPDER.appendHeader(0x30, controlContent, to: &out)
        LDAPDER.appendHeader(0x04, oid.count, to: &out)
        out.append(contentsOf: oid)
        out.append(contentsOf: [0x01, 0x01, 0xff] as [UInt8])  // criticality TRUE
        LDAPDER.appendHeader(0x04, authzLength, to: &out)
        out.append(contentsOf: authzId.utf8)
        return out
    }

    /// The request as the backend gets it with nothing added: canonical DER, with the
    /// client's controls or (an unbind) without any.
    package func reencoded(keepingControls: Bool = true) -> [UInt8] {
        let kept = keepingControls ? controls : []
        var out = envelope(controlsContent: kept.isEmpty ? nil : kept.reduce(0) { $0 + LDAPDER.size($1.node) })
        for control in kept { LDAPDER.append(control.node, to: &out) }
        return out
    }

    /// The message's SEQUENCE header, the messageID, the operation, and the header of
    /// the controls [0] when there are `controlsContent` bytes of them to follow.
    private func envelope(controlsContent: Int?) -> [UInt8] {
        let messageContent = LDAPDER.size(messageIDNode) + LDAPDER.size(operationNode) + (controlsContent.map(LDAPDER.tlvSize) ?? 0)
        var out: [UInt8] = []
        out.reserveCapacity(LDAPDER.tlvSize(messageContent))
        LDAPDER.appendHeader(0x30, messageContent, to: &out)
        LDAPDER.append(messageIDNode, to: &out)
        LDAPDER.append(operationNode, to: &out)
        if let controlsContent { LDAPDER.appendHeader(0xa0, controlsContent, to: &out) }
        return out
    }

    private static let proxiedAuthorizationOID: [UInt8] = Array("2.16.840.1.113730.3.4.18".utf8)

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
