/// DNs compared as DNs, not as strings (RFC 4514 syntax; RFC 4517 caseIgnoreMatch for
/// values): `UID=Alice, ou=People,dc=example,dc=com` names the same entry as
/// `uid=alice,ou=people,dc=example,dc=com`. Attribute types compare case-insensitively
/// and by OID for the common ones; values without case and without insignificant space.
/// Enough for the names in certificates and directory entries; not a schema-aware matcher.
extension DistinguishedName {
    /// One attribute value assertion of an RDN: its type and its value, unescaped.
    struct Assertion: Hashable, Comparable {
        var type: String
        var value: String
        static func < (a: Assertion, b: Assertion) -> Bool { (a.type, a.value) < (b.type, b.value) }
    }

    /// The RDNs as structured values (each RDN's assertions sorted), or nil when `text`
    /// is not a DN. Structured, not a string: `uid=a\,ou=b` (one RDN) stays apart from
    /// `uid=a,ou=b` (two), which a joined string with the escapes undone would confuse.
    static func normalized(_ text: String) -> [[Assertion]]? {
        var rdns: [[Assertion]] = []
        for rdn in split(Array(text.unicodeScalars)[...], at: [",", ";"]) {
            var avas: [Assertion] = []
            for ava in split(rdn, at: ["+"]) {
                guard let equals = ava.firstIndex(of: "=") else { return nil }
                let type = String(String.UnicodeScalarView(ava[..<equals])).trimmingSpaces().lowercased()
                guard !type.isEmpty, let value = value(ava[(equals + 1)...]) else { return nil }
                avas.append(Assertion(type: aliases[type] ?? type, value: value))
            }
            rdns.append(avas.sorted())
        }
        return rdns
    }

    static func same(_ a: String, _ b: String) -> Bool {
        guard let a = normalized(a), let b = normalized(b) else { return false }
        return a == b
    }

    /// Splits at unescaped separators; an empty DN has no RDNs.
    private static func split(_ scalars: ArraySlice<Unicode.Scalar>, at separators: Set<Unicode.Scalar>) -> [ArraySlice<Unicode.Scalar>] {
        if scalars.allSatisfy({ $0 == " " }) { return [] }
        var parts: [ArraySlice<Unicode.Scalar>] = []
        var start = scalars.startIndex
        var index = start
        while index < scalars.endIndex {
            if scalars[index] == "\\" {
                index += 2
                continue
            }
            if separators.contains(scalars[index]) {
                parts.append(scalars[start..<index])
                start = index + 1
            }
            index += 1
        }
        parts.append(scalars[start..<min(index, scalars.endIndex)])
        return parts
    }

    /// The value unescaped (`\,` and `\2C` alike), trimmed, in lower case, with runs of
    /// spaces as one; nil for a dangling escape.
    private static func value(_ scalars: ArraySlice<Unicode.Scalar>) -> String? {
        var bytes: [UInt8] = []
        var index = scalars.startIndex
        var trailingEscapedSpace = false
        while index < scalars.endIndex {
            let scalar = scalars[index]
            if scalar == "\\" {
                guard index + 1 < scalars.endIndex else { return nil }
                let next = scalars[index + 1]
                if index + 2 < scalars.endIndex, next.isASCII, scalars[index + 2].isASCII,
                   let byte = HexDigits.byte(UInt8(next.value), UInt8(scalars[index + 2].value)) {
                    bytes.append(byte)
                    index += 3
                } else {
                    bytes.append(contentsOf: Array(String(next).utf8))
                    index += 2
                }
                trailingEscapedSpace = next == " " && index == scalars.endIndex
                continue
            }
            bytes.append(contentsOf: Array(String(scalar).utf8))
            index += 1
        }
        var text = String(decoding: bytes, as: UTF8.self).lowercased()
        text = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        if trailingEscapedSpace { text += " " }
        return text
    }

    private static let aliases: [String: String] = [
        "0.9.2342.19200300.100.1.1": "uid", "userid": "uid", "2.5.4.3": "cn", "2.5.4.11": "ou", "2.5.4.10": "o",
        "0.9.2342.19200300.100.1.25": "dc", "2.5.4.6": "c", "2.5.4.7": "l", "2.5.4.8": "st", "2.5.4.5": "serialnumber",
        "1.2.840.113549.1.9.1": "emailaddress", "email": "emailaddress",
    ]
}
