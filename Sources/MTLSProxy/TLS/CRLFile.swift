import CGnuTLSShim

/// The CRLs of one file: DER (one CRL), or PEM with any number of
/// `-----BEGIN X509 CRL-----` blocks and anything else around them (openssl's `-text`
/// output, certificates, comments), which is ignored.
package enum CRLFile {
    static let pemBegin = Array("-----BEGIN X509 CRL-----".utf8)
    static let pemEnd = Array("-----END X509 CRL-----".utf8)

    /// Every CRL the file holds, each parsed or with why not; empty when the file holds
    /// no CRL at all (neither a PEM block nor something that starts like DER).
    package static func documents(in bytes: [UInt8]) -> [Result<CRLDocument, CRLParseError>] {
        let blocks = pemBlocks(in: bytes)
        if blocks.isEmpty {
            guard bytes.first == 0x30 else { return [] }
            return [parse(bytes)]
        }
        return blocks.map { block in
            guard let der = Base64.decode(block) else { return .failure(CRLParseError("bad base64 in a PEM block")) }
            return parse(der)
        }
    }

    private static func parse(_ der: [UInt8]) -> Result<CRLDocument, CRLParseError> {
        do { return .success(try CRLDocument.parse(der: der)) } catch { return .failure(error) }
    }

    /// The text between each BEGIN/END X509 CRL pair.
    static func pemBlocks(in bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var blocks: [ArraySlice<UInt8>] = []
        var position = bytes.startIndex
        while let begin = find(pemBegin, in: bytes, from: position) {
            let start = begin + pemBegin.count
            guard let end = find(pemEnd, in: bytes, from: start) else { break }
            blocks.append(bytes[start..<end])
            position = end + pemEnd.count
        }
        return blocks
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0] && haystack[index..<index + needle.count].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}

/// RFC 4648 base64 as PEM uses it: white space between characters is skipped, padding
/// only at the end.
package enum Base64 {
    private static let values: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (index, char) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            table[Int(char)] = Int8(index)
        }
        return table
    }()

    package static func decode<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        var accumulator: UInt32 = 0
        var bits = 0
        var padding = 0
        for char in text {
            switch char {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"):
                continue
            case UInt8(ascii: "="):
                padding += 1
                guard padding <= 2 else { return nil }
                continue
            default:
                let value = values[Int(char)]
                guard value >= 0, padding == 0 else { return nil }
                accumulator = (accumulator << 6) | UInt32(value)
                bits += 6
                if bits >= 8 {
                    bits -= 8
                    out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                }
            }
        }
        // What is left over must be the zero bits of a partial last group.
        guard bits < 6, accumulator & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }
}

enum DistinguishedName {
    /// The RFC 4514 string of a DER Name, for logs. GnuTLS parses this small structure.
    static func string(fromDER name: [UInt8]) -> String {
        var out = gnutls_datum_t()
        let rc = GnuTLS.withDatum(name) { datum in gnutls_x509_rdn_get2(&datum, &out, 0) }
        return rc == 0 ? GnuTLS.takeString(&out) : Hex.encode(name)
    }
}
