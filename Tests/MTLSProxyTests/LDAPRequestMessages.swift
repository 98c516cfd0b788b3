import SwiftASN1

@testable import MTLSProxy

/// LDAP requests and responses as clients and servers encode them, built here with
/// swift-asn1 independently of the proxy's own encoders.
enum TestLDAP {
    static func message(_ id: Int, controls: [(type: String, critical: Bool, value: [UInt8]?)] = [],
                        _ operation: (inout DER.Serializer) throws -> Void) -> [UInt8] {
        var serializer = DER.Serializer()
        try! serializer.appendConstructedNode(identifier: .sequence) { message in
            try message.serialize(id)
            try operation(&message)
            if !controls.isEmpty {
                try message.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { list in
                    for control in controls {
                        try list.appendConstructedNode(identifier: .sequence) { node in
                            try node.serialize(ASN1OctetString(contentBytes: ArraySlice(control.type.utf8)))
                            if control.critical { try node.serialize(true) }
                            if let value = control.value { try node.serialize(ASN1OctetString(contentBytes: ArraySlice(value))) }
                        }
                    }
                }
            }
        }
        return serializer.serializedBytes
    }

    static func app(_ tag: UInt) -> ASN1Identifier { ASN1Identifier(tagWithNumber: tag, tagClass: .application) }

    static func saslBind(_ id: Int, mechanism: String = "EXTERNAL", credentials: String? = nil, version: Int = 3) -> [UInt8] {
        message(id) { op in
            try op.appendConstructedNode(identifier: app(0)) { bind in
                try bind.serialize(version)
                try bind.serialize(ASN1OctetString(contentBytes: []))
                try bind.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 3, tagClass: .contextSpecific)) { sasl in
                    try sasl.serialize(ASN1OctetString(contentBytes: ArraySlice(mechanism.utf8)))
                    if let credentials { try sasl.serialize(ASN1OctetString(contentBytes: ArraySlice(credentials.utf8))) }
                }
            }
        }
    }

    static func simpleBind(_ id: Int, name: String, password: String) -> [UInt8] {
        LDAPMessages.bindRequest(id: id, dn: name, password: Array(password.utf8))
    }

    static func search(_ id: Int, controls: [(type: String, critical: Bool, value: [UInt8]?)] = []) -> [UInt8] {
        message(id, controls: controls) { op in
            try op.appendConstructedNode(identifier: app(3)) { search in
                try search.serialize(ASN1OctetString(contentBytes: ArraySlice("dc=example,dc=com".utf8)))
                try 0.serialize(into: &search, withIdentifier: .enumerated)
                try 0.serialize(into: &search, withIdentifier: .enumerated)
                try search.serialize(0)
                try search.serialize(0)
                try search.serialize(false)
                search.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 7, tagClass: .contextSpecific)) {
                    $0.append(contentsOf: "objectClass".utf8)
                }
                search.appendConstructedNode(identifier: .sequence) { _ in }
            }
        }
    }

    static func extended(_ id: Int, name: String) -> [UInt8] {
        message(id) { op in
            op.appendConstructedNode(identifier: app(23)) { ext in
                ext.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { $0.append(contentsOf: name.utf8) }
            }
        }
    }

    static func unbind(_ id: Int) -> [UInt8] { LDAPMessages.unbindRequest(id: id) }

    static func abandon(_ id: Int, controls: [(type: String, critical: Bool, value: [UInt8]?)] = []) -> [UInt8] {
        message(id, controls: controls) { op in
            op.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 16, tagClass: .application)) { $0.append(1) }
        }
    }

    /// A SearchResultEntry of about `size` bytes, then SearchResultDone: a backend's answer.
    static func searchResult(_ id: Int, size: Int) -> [UInt8] {
        let entry = message(id) { op in
            try op.appendConstructedNode(identifier: app(4)) { entry in
                try entry.serialize(ASN1OctetString(contentBytes: ArraySlice("uid=alice,ou=people,dc=example,dc=com".utf8)))
                try entry.appendConstructedNode(identifier: .sequence) { attributes in
                    try attributes.appendConstructedNode(identifier: .sequence) { pair in
                        try pair.serialize(ASN1OctetString(contentBytes: ArraySlice("description".utf8)))
                        try pair.appendConstructedNode(identifier: .set) { values in
                            try values.serialize(ASN1OctetString(contentBytes: ArraySlice(repeating: UInt8(ascii: "x"), count: size)))
                        }
                    }
                }
            }
        }
        return entry + LDAPResponse.encode(id: id, tag: 5, code: .success, diagnostic: "")
    }

    /// The proxied authorization control a forwarded request carries, if any.
    static func proxiedAuthorization(of message: [UInt8]) -> String? {
        guard let request = try? LDAPRequest(decoding: message) else { return nil }
        guard let control = request.controls.first(where: { $0.type == "2.16.840.1.113730.3.4.18" }) else { return nil }
        guard let node = try? BER.parse(control.encoded), case .constructed(let fields) = node.content else { return nil }
        let parts = Array(fields)
        guard parts.count == 3, case .primitive(let critical) = parts[1].content, critical == [0xff],
              case .primitive(let value) = parts[2].content
        else { return "(malformed control)" }
        return String(decoding: value, as: UTF8.self)
    }

    /// Cuts a stream into whole messages; nil when it does not end at a message boundary.
    static func messages(in stream: [UInt8]) -> [[UInt8]]? {
        var out: [[UInt8]] = []
        var rest = stream[...]
        while !rest.isEmpty {
            guard case .message(let header, let content) = LDAPMessageFramer.header(of: rest), rest.count >= header + content else { return nil }
            out.append(Array(rest.prefix(header + content)))
            rest = rest.dropFirst(header + content)
        }
        return out
    }

    static func result(of message: [UInt8]) -> (id: Int, tag: UInt, code: Int?) {
        let response = try! LDAPMessages.decode(message)
        return (response.messageID, response.operation, response.resultCode)
    }
}
