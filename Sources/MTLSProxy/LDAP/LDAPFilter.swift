import SwiftASN1

/// An LDAP search filter (RFC 4511 section 4.5.1), parsed from its string form
/// (RFC 4515) and encoded in BER for a SearchRequest.
package indirect enum LDAPFilter: Equatable {
    case and([LDAPFilter])
    case or([LDAPFilter])
    case not(LDAPFilter)
    case equality(String, [UInt8])
    case substrings(String, initial: [UInt8]?, any: [[UInt8]], final: [UInt8]?)
    case greaterOrEqual(String, [UInt8])
    case lessOrEqual(String, [UInt8])
    case present(String)
    case approx(String, [UInt8])

    package struct ParseError: Error, CustomStringConvertible {
        package let description: String
    }

    /// Escapes a value for a filter string (RFC 4515 section 3): what comes from a
    /// certificate can then never add filter syntax.
    package static func escape(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            if [0x2A, 0x28, 0x29, 0x5C, 0x00].contains(byte) || byte >= 0x80 {
                out += "\\" + Hex.encode([byte])
            } else {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return out
    }

    package static func parse(_ text: String) throws(ParseError) -> LDAPFilter {
        var parser = Parser(bytes: Array(text.utf8))
        let filter = try parser.filter()
        guard parser.index == parser.bytes.count else { throw ParseError(description: "trailing text in filter '\(text)'") }
        return filter
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        mutating func expect(_ byte: UInt8) throws(ParseError) {
            guard index < bytes.count, bytes[index] == byte else {
                throw ParseError(description: "expected '\(Character(Unicode.Scalar(byte)))' at offset \(index)")
            }
            index += 1
        }

        mutating func filter() throws(ParseError) -> LDAPFilter {
            try expect(0x28)  // (
            guard index < bytes.count else { throw ParseError(description: "filter ends early") }
            let result: LDAPFilter
            switch bytes[index] {
            case 0x26: index += 1; result = .and(try list())  // &
            case 0x7C: index += 1; result = .or(try list())  // |
            case 0x21: index += 1; result = .not(try filter())  // !
            default: result = try item()
            }
            try expect(0x29)  // )
            return result
        }

        mutating func list() throws(ParseError) -> [LDAPFilter] {
            var items: [LDAPFilter] = []
            while index < bytes.count && bytes[index] == 0x28 { items.append(try filter()) }
            return items
        }

        mutating func item() throws(ParseError) -> LDAPFilter {
            let start = index
            while index < bytes.count && !"=~<>()".utf8.contains(bytes[index]) { index += 1 }
            let attribute = String(decoding: bytes[start..<index], as: UTF8.self)
            guard !attribute.isEmpty, index < bytes.count else { throw ParseError(description: "missing attribute at \(start)") }
            var kind = bytes[index]
            if kind != 0x3D {  // ~= >= <=
                index += 1
                try expect(0x3D)
            } else {
                index += 1
                kind = 0x3D
            }
            // The raw value up to ')', split on unescaped '*'.
            var pieces: [[UInt8]] = [[]]
            while index < bytes.count && bytes[index] != 0x29 {
                let byte = bytes[index]
                if byte == 0x2A {
                    pieces.append([])
                    index += 1
                } else if byte == 0x5C {
                    guard index + 2 < bytes.count, let value = HexDigits.byte(bytes[index + 1], bytes[index + 2])
                    else { throw ParseError(description: "bad escape at \(index)") }
                    pieces[pieces.count - 1].append(value)
                    index += 3
                } else if byte == 0x28 {
                    throw ParseError(description: "unescaped '(' in a value at \(index)")
                } else {
                    pieces[pieces.count - 1].append(byte)
                    index += 1
                }
            }
            switch kind {
            case 0x7E: guard pieces.count == 1 else { throw ParseError(description: "'*' in ~=") }; return .approx(attribute, pieces[0])
            case 0x3E: guard pieces.count == 1 else { throw ParseError(description: "'*' in >=") }; return .greaterOrEqual(attribute, pieces[0])
            case 0x3C: guard pieces.count == 1 else { throw ParseError(description: "'*' in <=") }; return .lessOrEqual(attribute, pieces[0])
            default:
                if pieces.count == 1 { return .equality(attribute, pieces[0]) }
                if pieces.count == 2 && pieces[0].isEmpty && pieces[1].isEmpty { return .present(attribute) }
                return .substrings(
                    attribute, initial: pieces.first!.isEmpty ? nil : pieces.first!,
                    any: Array(pieces.dropFirst().dropLast()).filter { !$0.isEmpty },
                    final: pieces.last!.isEmpty ? nil : pieces.last!)
            }
        }
    }

    package func serialize(into serializer: inout DER.Serializer) throws {
        func context(_ tag: UInt) -> ASN1Identifier { ASN1Identifier(tagWithNumber: tag, tagClass: .contextSpecific) }
        func assertion(_ tag: UInt, _ attribute: String, _ value: [UInt8]) throws {
            try serializer.appendConstructedNode(identifier: context(tag)) { node in
                try node.serialize(ASN1OctetString(contentBytes: ArraySlice(attribute.utf8)))
                try node.serialize(ASN1OctetString(contentBytes: ArraySlice(value)))
            }
        }
        switch self {
        case .and(let items), .or(let items):
            let tag: UInt = { if case .and = self { return 0 } else { return 1 } }()
            try serializer.appendConstructedNode(identifier: context(tag)) { node in
                for item in items { try item.serialize(into: &node) }
            }
        case .not(let inner):
            try serializer.appendConstructedNode(identifier: context(2)) { try inner.serialize(into: &$0) }
        case .equality(let a, let v): try assertion(3, a, v)
        case .greaterOrEqual(let a, let v): try assertion(5, a, v)
        case .lessOrEqual(let a, let v): try assertion(6, a, v)
        case .approx(let a, let v): try assertion(8, a, v)
        case .present(let a):
            serializer.appendPrimitiveNode(identifier: context(7)) { $0.append(contentsOf: a.utf8) }
        case .substrings(let a, let initial, let any, let final):
            try serializer.appendConstructedNode(identifier: context(4)) { node in
                try node.serialize(ASN1OctetString(contentBytes: ArraySlice(a.utf8)))
                node.appendConstructedNode(identifier: .sequence) { parts in
                    if let initial { parts.appendPrimitiveNode(identifier: context(0)) { $0.append(contentsOf: initial) } }
                    for piece in any { parts.appendPrimitiveNode(identifier: context(1)) { $0.append(contentsOf: piece) } }
                    if let final { parts.appendPrimitiveNode(identifier: context(2)) { $0.append(contentsOf: final) } }
                }
            }
        }
    }
}
