import SwiftASN1

/// The few LDAP operations the directory check needs (RFC 4511), encoded and decoded
/// with swift-asn1.
package enum LDAPMessages {
    package enum Scope: Int { case base = 0, subtree = 2 }

    package static func bindRequest(id: Int, dn: String, password: [UInt8]) -> [UInt8] {
        message(id: id) { op in
            try op.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .application)) { bind in
                try bind.serialize(3)
                try bind.serialize(ASN1OctetString(contentBytes: ArraySlice(dn.utf8)))
                bind.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) {
                    $0.append(contentsOf: password)
                }
            }
        }
    }

    /// UnbindRequest ::= [APPLICATION 2] NULL
    package static func unbindRequest(id: Int) -> [UInt8] {
        message(id: id) { op in
            op.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 2, tagClass: .application)) { _ in }
        }
    }

    package static func searchRequest(id: Int, base: String, scope: Scope, filter: LDAPFilter, attributes: [String], sizeLimit: Int = 16)
        -> [UInt8]
    {
        message(id: id) { op in
            try op.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 3, tagClass: .application)) { search in
                try search.serialize(ASN1OctetString(contentBytes: ArraySlice(base.utf8)))
                try scope.rawValue.serialize(into: &search, withIdentifier: .enumerated)
                try 0.serialize(into: &search, withIdentifier: .enumerated)  // neverDerefAliases
                try search.serialize(sizeLimit)
                try search.serialize(0)  // timeLimit: ours is directory_timeout
                try search.serialize(false)
                try filter.serialize(into: &search)
                try search.appendConstructedNode(identifier: .sequence) { list in
                    for attribute in attributes { try list.serialize(ASN1OctetString(contentBytes: ArraySlice(attribute.utf8))) }
                }
            }
        }
    }

    private static func message(id: Int, _ body: (inout DER.Serializer) throws -> Void) -> [UInt8] {
        var serializer = DER.Serializer()
        do {
            try serializer.appendConstructedNode(identifier: .sequence) { message in
                try message.serialize(id)
                try body(&message)
            }
        } catch {
            preconditionFailure("encoding an LDAP request cannot fail: \(error)")
        }
        return serializer.serializedBytes
    }

    /// What the directory check reads from a response.
    package struct Response {
        package var messageID: Int
        /// The protocolOp's APPLICATION tag: 1 BindResponse, 4 SearchResultEntry, 5 SearchResultDone.
        package var operation: UInt
        package var resultCode: Int?
        /// A SearchResultEntry's objectName: the entry's DN.
        package var objectName = ""
        /// Values of the entry's attributes, all attributes together.
        package var values: [[UInt8]] = []
    }

    package struct DecodeError: Error {}

    package static func decode(_ message: [UInt8]) throws -> Response {
        let root = try BER.parse(message)
        guard case .constructed(let parts) = root.content else { throw DecodeError() }
        var iterator = parts.makeIterator()
        guard let idNode = iterator.next(), let opNode = iterator.next() else { throw DecodeError() }
        let id = try Int(berEncoded: idNode)
        var response = Response(messageID: id, operation: opNode.identifier.tagNumber)
        guard opNode.identifier.tagClass == .application, case .constructed(let fields) = opNode.content else { return response }
        var fieldIterator = fields.makeIterator()
        switch opNode.identifier.tagNumber {
        case 1, 5, 24:  // LDAPResult: resultCode first
            if let code = fieldIterator.next(), case .primitive(let bytes) = code.content {
                response.resultCode = bytes.reduce(0) { $0 << 8 | Int($1) }
            }
        case 4:  // SearchResultEntry: objectName, attributes
            if let name = fieldIterator.next(), case .primitive(let bytes) = name.content {
                response.objectName = String(decoding: bytes, as: UTF8.self)
            }
            if let attributes = fieldIterator.next(), case .constructed(let list) = attributes.content {
                for attribute in list {
                    guard case .constructed(let pair) = attribute.content else { continue }
                    var pairIterator = pair.makeIterator()
                    _ = pairIterator.next()  // the type; we asked only for certificate attributes
                    if let set = pairIterator.next(), case .constructed(let values) = set.content {
                        for value in values {
                            if case .primitive(let bytes) = value.content { response.values.append(Array(bytes)) }
                        }
                    }
                }
            }
        default:
            break
        }
        return response
    }
}
