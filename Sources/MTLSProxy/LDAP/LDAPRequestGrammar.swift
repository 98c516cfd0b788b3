import SwiftASN1

/// RFC 4511's requests, element by element, as slapd reads them: every operation the
/// proxy forwards is checked here at every depth before it is written again in DER.
///
/// Why the whole request and not only its envelope: slapd's BER reader (liblber) does not
/// skip what follows the last field it reads inside a SEQUENCE, and its control parser
/// looks right after that field. An element the client hides at the end of an operation
/// (or of a filter, an attribute list...) would be taken by slapd for the controls, and
/// the proxy's proxied authorization control, appended after the operation, would never
/// be read: the request would run as the proxy. So nothing unknown or extra is accepted
/// anywhere, controls are exactly `SEQUENCE { numericoid, BOOLEAN?, OCTET STRING? }`, and
/// the backend gets the canonical DER of what was checked, never the client's bytes.
enum LDAPRequestGrammar {
    typealias Failure = LDAPRequest.DecodeError

    static func checkOperation(_ node: ASN1Node, _ operation: LDAPRequest.Operation) throws(Failure) {
        switch operation {
        case .bind:
            let fields = try constructed(node, "BindRequest")
            try count(fields, 3, "BindRequest")
            try primitive(fields[0], .integer, "version", maxLength: 1)
            try primitive(fields[1], .octetString, "name")
            let auth = fields[2]
            if auth.identifier == context(0) {
                try primitive(auth, context(0), "simple password")
            } else if auth.identifier == context(3) {
                let sasl = try constructed(auth, "SaslCredentials")
                try count(sasl, 1...2, "SaslCredentials")
                for field in sasl { try primitive(field, .octetString, "SaslCredentials") }
            } else {
                throw .malformed("authentication is simple [0] or sasl [3]")
            }
        case .unbind:
            guard case .primitive(let content) = node.content, content.isEmpty else { throw .malformed("an UnbindRequest is NULL") }
        case .search:
            let fields = try constructed(node, "SearchRequest")
            try count(fields, 8, "SearchRequest")
            try primitive(fields[0], .octetString, "baseObject")
            try primitive(fields[1], .enumerated, "scope", maxLength: 1)
            try primitive(fields[2], .enumerated, "derefAliases", maxLength: 1)
            try primitive(fields[3], .integer, "sizeLimit", maxLength: 5)
            try primitive(fields[4], .integer, "timeLimit", maxLength: 5)
            try primitive(fields[5], .boolean, "typesOnly", maxLength: 1)
            try filter(fields[6])
            for attribute in try constructed(fields[7], .sequence, "attributes") { try primitive(attribute, .octetString, "attribute") }
        case .modify:
            let fields = try constructed(node, "ModifyRequest")
            try count(fields, 2, "ModifyRequest")
            try primitive(fields[0], .octetString, "object")
            for change in try constructed(fields[1], .sequence, "changes") {
                let parts = try constructed(change, .sequence, "change")
                try count(parts, 2, "change")
                try primitive(parts[0], .enumerated, "operation", maxLength: 1)
                try attribute(parts[1], valuesRequired: false)
            }
        case .add:
            let fields = try constructed(node, "AddRequest")
            try count(fields, 2, "AddRequest")
            try primitive(fields[0], .octetString, "entry")
            for item in try constructed(fields[1], .sequence, "attributes") { try attribute(item, valuesRequired: true) }
        case .delete:
            try primitive(node, node.identifier, "DelRequest")
        case .modifyDN:
            let fields = try constructed(node, "ModifyDNRequest")
            try count(fields, 3...4, "ModifyDNRequest")
            try primitive(fields[0], .octetString, "entry")
            try primitive(fields[1], .octetString, "newrdn")
            try primitive(fields[2], .boolean, "deleteoldrdn", maxLength: 1)
            if fields.count == 4 { try primitive(fields[3], context(0), "newSuperior") }
        case .compare:
            let fields = try constructed(node, "CompareRequest")
            try count(fields, 2, "CompareRequest")
            try primitive(fields[0], .octetString, "entry")
            try assertion(fields[1], .sequence)
        case .abandon:
            try primitive(node, node.identifier, "AbandonRequest", maxLength: 5)
        case .extended:
            let fields = try constructed(node, "ExtendedRequest")
            try count(fields, 1...2, "ExtendedRequest")
            try numericOID(try primitive(fields[0], context(0), "requestName"), "requestName")
            if fields.count == 2 { try primitive(fields[1], context(1), "requestValue") }
        }
    }

    /// Control ::= SEQUENCE { controlType LDAPOID, criticality BOOLEAN DEFAULT FALSE,
    ///   controlValue OCTET STRING OPTIONAL }; returns the controlType.
    static func checkControl(_ node: ASN1Node) throws(Failure) -> String {
        let fields = try constructed(node, .sequence, "Control")
        try count(fields, 1...3, "Control")
        let type = try numericOID(try primitive(fields[0], .octetString, "controlType"), "controlType")
        var rest = fields.dropFirst()
        if let first = rest.first, first.identifier == .boolean {
            try primitive(first, .boolean, "criticality", maxLength: 1)
            rest = rest.dropFirst()
        }
        if let value = rest.first {
            try primitive(value, .octetString, "controlValue")
            rest = rest.dropFirst()
        }
        guard rest.isEmpty else { throw .malformed("a Control is controlType, criticality, controlValue") }
        return type
    }

    // MARK: - Parts

    /// Filter ::= CHOICE { and [0] SET OF Filter, or [1], not [2] Filter, equalityMatch [3]
    ///   AVA, substrings [4], greaterOrEqual [5], lessOrEqual [6], present [7], approxMatch [8],
    ///   extensibleMatch [9] }. Depth is bounded by the BER parser (50 levels).
    private static func filter(_ node: ASN1Node) throws(Failure) {
        guard node.identifier.tagClass == .contextSpecific else { throw .malformed("a Filter is context-specific") }
        switch node.identifier.tagNumber {
        case 0, 1:
            for inner in try constructed(node, node.identifier, "and/or") { try filter(inner) }
        case 2:
            let inner = try constructed(node, node.identifier, "not")
            try count(inner, 1, "not")
            try filter(inner[0])
        case 3, 5, 6, 8:
            try assertion(node, node.identifier)
        case 4:
            let parts = try constructed(node, node.identifier, "substrings")
            try count(parts, 2, "substrings")
            try primitive(parts[0], .octetString, "type")
            let pieces = try constructed(parts[1], .sequence, "substrings")
            guard !pieces.isEmpty else { throw .malformed("substrings has at least one piece") }
            for piece in pieces {
                guard (0...2).contains(piece.identifier.tagNumber) else { throw .malformed("a substring is [0], [1] or [2]") }
                try primitive(piece, context(piece.identifier.tagNumber), "substring")
            }
        case 7:
            try primitive(node, node.identifier, "present")
        case 9:
            // MatchingRuleAssertion ::= SEQUENCE { matchingRule [1] OPTIONAL, type [2] OPTIONAL,
            //   matchValue [3], dnAttributes [4] BOOLEAN DEFAULT FALSE }, in that order.
            let parts = try constructed(node, node.identifier, "extensibleMatch")
            var expected: UInt = 1
            var sawValue = false
            for part in parts {
                let tag = part.identifier.tagNumber
                guard tag >= expected, tag <= 4, part.identifier.tagClass == .contextSpecific else {
                    throw .malformed("extensibleMatch is [1]? [2]? [3] [4]?")
                }
                try primitive(part, context(tag), "extensibleMatch", maxLength: tag == 4 ? 1 : nil)
                if tag == 3 { sawValue = true }
                expected = tag + 1
            }
            guard sawValue else { throw .malformed("extensibleMatch needs its matchValue [3]") }
        default:
            throw .malformed("Filter [\(node.identifier.tagNumber)] does not exist")
        }
    }

    /// AttributeValueAssertion ::= SEQUENCE { attributeDesc, assertionValue }
    private static func assertion(_ node: ASN1Node, _ identifier: ASN1Identifier) throws(Failure) {
        let parts = try constructed(node, identifier, "AttributeValueAssertion")
        try count(parts, 2, "AttributeValueAssertion")
        for part in parts { try primitive(part, .octetString, "AttributeValueAssertion") }
    }

    /// Attribute ::= SEQUENCE { type, vals SET OF value } (SIZE(1..MAX) in an add).
    private static func attribute(_ node: ASN1Node, valuesRequired: Bool) throws(Failure) {
        let parts = try constructed(node, .sequence, "Attribute")
        try count(parts, 2, "Attribute")
        try primitive(parts[0], .octetString, "attribute type")
        let values = try constructed(parts[1], .set, "attribute values")
        if valuesRequired && values.isEmpty { throw .malformed("an added attribute has values") }
        for value in values { try primitive(value, .octetString, "attribute value") }
    }

    // MARK: - Elements

    static func context(_ number: UInt) -> ASN1Identifier { ASN1Identifier(tagWithNumber: number, tagClass: .contextSpecific) }

    /// The operation itself: its APPLICATION tag was checked by the caller.
    private static func constructed(_ node: ASN1Node, _ name: String) throws(Failure) -> [ASN1Node] {
        try constructed(node, node.identifier, name)
    }

    private static func constructed(_ node: ASN1Node, _ identifier: ASN1Identifier, _ name: String) throws(Failure) -> [ASN1Node] {
        guard node.identifier == identifier, case .constructed(let children) = node.content else {
            throw .malformed("\(name) must be a constructed \(identifier)")
        }
        return Array(children)
    }

    @discardableResult
    private static func primitive(_ node: ASN1Node, _ identifier: ASN1Identifier, _ name: String, maxLength: Int? = nil)
        throws(Failure) -> ArraySlice<UInt8>
    {
        guard node.identifier == identifier, case .primitive(let content) = node.content else {
            throw .malformed("\(name) must be a primitive \(identifier)")
        }
        if let maxLength, content.isEmpty || content.count > maxLength { throw .malformed("\(name) has \(content.count) content bytes") }
        return content
    }

    private static func count(_ nodes: [ASN1Node], _ expected: Int, _ name: String) throws(Failure) {
        try count(nodes, expected...expected, name)
    }

    private static func count(_ nodes: [ASN1Node], _ expected: ClosedRange<Int>, _ name: String) throws(Failure) {
        guard expected.contains(nodes.count) else { throw .malformed("\(name) has \(nodes.count) elements, not \(expected)") }
    }

    /// numericoid (RFC 4512): digits and single dots, nothing else (not a NUL: liblber
    /// ends strings at one, so "1.2.3\0x" would be "1.2.3" to slapd).
    @discardableResult
    private static func numericOID(_ bytes: ArraySlice<UInt8>, _ name: String) throws(Failure) -> String {
        var previousDot = true
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): previousDot = false
            case UInt8(ascii: ".") where !previousDot: previousDot = true
            default: throw .malformed("\(name) is not a numeric OID")
            }
        }
        guard !bytes.isEmpty, !previousDot else { throw .malformed("\(name) is not a numeric OID") }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The canonical DER of a checked request's elements: definite, minimal lengths and
/// one-byte tags (every LDAP tag is below 31; the grammar admits no other). Written by
/// hand into one buffer of the final size: this runs for every forwarded request.
enum LDAPDER {
    static func size(_ node: ASN1Node) -> Int { tlvSize(contentSize(node)) }

    static func contentSize(_ node: ASN1Node) -> Int {
        switch node.content {
        case .primitive(let bytes): return bytes.count
        case .constructed(let children): return children.reduce(0) { $0 + size($1) }
        }
    }

    static func append(_ node: ASN1Node, to out: inout [UInt8]) {
        let identifier = node.identifier
        var tag = UInt8(truncatingIfNeeded: identifier.tagNumber)
        switch identifier.tagClass {
        case .universal: break
        case .application: tag |= 0x40
        case .contextSpecific: tag |= 0x80
        case .private: tag |= 0xc0
        }
        switch node.content {
        case .primitive(let bytes):
            appendHeader(tag, bytes.count, to: &out)
            out.append(contentsOf: bytes)
        case .constructed(let children):
            appendHeader(tag | 0x20, contentSize(node), to: &out)
            for child in children { append(child, to: &out) }
        }
    }

    /// The size of an element with a one-byte tag and `content` bytes.
    static func tlvSize(_ content: Int) -> Int { 1 + lengthSize(content) + content }

    static func lengthSize(_ length: Int) -> Int {
        guard length >= 0x80 else { return 1 }
        return 1 + (Int.bitWidth - length.leadingZeroBitCount + 7) / 8
    }

    /// A tag and a DER length: short form below 128, else the fewest big-endian octets.
    static func appendHeader(_ tag: UInt8, _ length: Int, to out: inout [UInt8]) {
        out.append(tag)
        guard length >= 0x80 else {
            out.append(UInt8(length))
            return
        }
        let octets = lengthSize(length) - 1
        out.append(0x80 | UInt8(octets))
        for shift in stride(from: (octets - 1) * 8, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: length >> shift)) }
    }
}
