import SwiftASN1

/// A certificate revocation list as our own DER reader sees it (RFC 5280 §5.1).
///
/// GnuTLS decodes CRLs through libtasn1, whose cost grows with the square of the entry
/// count once entries carry extensions (a reason code on every entry, as OpenSSL's CA,
/// EJBCA, Dogtag and Microsoft's CA write them): 100,000 such entries take minutes. This
/// reader walks the same structure once, and keeps the signed bytes so that the
/// signature is checked against the issuer's public key (`CRLSignature`) without
/// GnuTLS ever parsing the list.
package struct CRLDocument: Sendable {
    /// The DER of the TBSCertList: exactly what the issuer signed.
    package var signedBytes: [UInt8]
    package var signatureAlgorithm: AlgorithmIdentifierBytes
    package var signature: [UInt8]
    /// The issuer Name as DER (tag and length included), comparable with a
    /// certificate's raw issuer.
    package var issuerName: [UInt8]
    package var thisUpdate: Int
    package var nextUpdate: Int?
    package var revoked: [SerialNumber]
    package var authorityKeyID: [UInt8]?
    /// The cRLNumber, as the bytes of a positive integer without leading zeros.
    package var number: [UInt8]?
    /// Set when the CRL's scope is not "every certificate of this issuer" or it carries
    /// a critical extension we do not understand: such a CRL is refused, not misread.
    package var unsupported: String?

    /// An AlgorithmIdentifier: its OID in dotted form and the DER of its parameters.
    package struct AlgorithmIdentifierBytes: Sendable, Equatable {
        package var oid: String
        package var parameters: [UInt8]?
    }

    package static func parse(der bytes: [UInt8]) throws(CRLParseError) -> CRLDocument {
        do {
            return try read(bytes)
        } catch let error as CRLParseError {
            throw error
        } catch {
            throw CRLParseError("not a DER CertificateList (\(error))")
        }
    }

    /// The outer structure and the list of entries are walked with `DERScanner`, which
    /// allocates nothing per entry; the small parts (names, times, algorithms,
    /// extensions) are parsed by swift-asn1.
    private static func read(_ bytes: [UInt8]) throws -> CRLDocument {
        var whole = DERScanner(bytes, 0..<bytes.count)
        let list = try whole.expect(0x30, "CertificateList")
        guard whole.isAtEnd else { throw CRLParseError("trailing data after the CertificateList") }
        var top = DERScanner(bytes, list.content)
        let tbsField = try top.expect(0x30, "TBSCertList")
        let signatureAlgorithm = try algorithm(DER.parse(bytes[try top.expect(0x30, "signatureAlgorithm").whole]))
        let signature = try ASN1BitString(derEncoded: DER.parse(bytes[try top.expect(0x03, "signatureValue").whole]))
        guard top.isAtEnd else { throw CRLParseError("a CertificateList has three parts") }
        guard signature.paddingBits == 0 else { throw CRLParseError("signature is not a whole number of bytes") }

        var tbs = DERScanner(bytes, tbsField.content)
        var field = try tbs.next("signature")
        if field.tag == 0x02 {
            // version v2 (1); v1 CRLs omit it. Nothing else is defined.
            guard bytes[field.content].elementsEqual([1]) else { throw CRLParseError("unsupported CRL version") }
            field = try tbs.next("signature")
        }
        guard field.tag == 0x30, try algorithm(DER.parse(bytes[field.whole])) == signatureAlgorithm else {
            throw CRLParseError("the signed and the outer signature algorithms differ")
        }
        let issuer = try tbs.expect(0x30, "issuer")
        let thisUpdate = try time(DER.parse(bytes[try tbs.next("thisUpdate").whole]))

        var document = CRLDocument(
            signedBytes: Array(bytes[tbsField.whole]), signatureAlgorithm: signatureAlgorithm,
            signature: Array(signature.bytes), issuerName: Array(bytes[issuer.whole]), thisUpdate: thisUpdate,
            nextUpdate: nil, revoked: [])
        var pending = tbs.isAtEnd ? nil : try tbs.next("")
        if let candidate = pending, candidate.tag == 0x17 || candidate.tag == 0x18 {
            document.nextUpdate = try time(DER.parse(bytes[candidate.whole]))
            pending = tbs.isAtEnd ? nil : try tbs.next("")
        }
        if let candidate = pending, candidate.tag == 0x30 {
            try document.readEntries(bytes, candidate.content)
            pending = tbs.isAtEnd ? nil : try tbs.next("")
        }
        if let candidate = pending, candidate.tag == 0xa0 {
            guard case .constructed(let wrapped) = try DER.parse(bytes[candidate.whole]).content, let extensions = Array(wrapped).first
            else { throw CRLParseError("crlExtensions is empty") }
            try document.readExtensions(extensions)
            pending = tbs.isAtEnd ? nil : try tbs.next("")
        }
        if pending != nil { throw CRLParseError("unexpected data at the end of the TBSCertList") }
        return document
    }

    /// The revokedCertificates list: the serial of each entry. Entry extensions (reason
    /// code, invalidity date, hold instruction) do not change whether a serial is
    /// revoked; a critical one we cannot read makes the CRL unusable (RFC 5280 §5.3).
    private mutating func readEntries(_ bytes: [UInt8], _ range: Range<Int>) throws {
        var entries = DERScanner(bytes, range)
        revoked.reserveCapacity(range.count / 40)
        while !entries.isAtEnd {
            var entry = DERScanner(bytes, try entries.expect(0x30, "a revoked entry").content)
            let serial = try entry.expect(0x02, "a revoked serial")
            let date = try entry.next("a revocation date")
            guard date.tag == 0x17 || date.tag == 0x18 else { throw CRLParseError("a revocation date is not a time") }
            revoked.append(SerialNumber(bytes[serial.content]))
            guard !entry.isAtEnd else { continue }
            var extensions = DERScanner(bytes, try entry.expect(0x30, "entry extensions").content)
            guard entry.isAtEnd else { throw CRLParseError("unexpected data in a revoked entry") }
            while !extensions.isAtEnd {
                var item = DERScanner(bytes, try extensions.expect(0x30, "an entry extension").content)
                let oid = try item.expect(0x06, "an extension's OID")
                var value = try item.next("an extension's value")
                var critical = false
                if value.tag == 0x01 {
                    critical = bytes[value.content].elementsEqual([0xff])
                    value = try item.next("an extension's value")
                }
                guard value.tag == 0x04, item.isAtEnd else { throw CRLParseError("a malformed entry extension") }
                if critical && unsupported == nil && !Self.knownEntryExtensions.contains(where: { bytes[oid.content].elementsEqual($0) }) {
                    let name = (try? ASN1ObjectIdentifier(derEncoded: DER.parse(bytes[oid.whole])).description) ?? "?"
                    unsupported = "a critical entry extension \(name) (not supported)"
                }
            }
        }
    }

    /// The DER contents of the OIDs of entry extensions we understand.
    private static let knownEntryExtensions: [[UInt8]] = [
        [0x55, 0x1d, 0x15],  // 2.5.29.21 reasonCode
        [0x55, 0x1d, 0x18],  // 2.5.29.24 invalidityDate
        [0x55, 0x1d, 0x17],  // 2.5.29.23 holdInstructionCode
    ]

    private mutating func readExtensions(_ extensions: ASN1Node) throws {
        try Self.forEachExtension(extensions) { oid, critical, value in
            switch oid {
            case "2.5.29.35":  // authorityKeyIdentifier: keyIdentifier [0] IMPLICIT OCTET STRING
                guard case .constructed(let fields) = try DER.parse(value).content else { break }
                for field in fields where field.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
                    if case .primitive(let id) = field.content { authorityKeyID = Array(id) }
                }
            case "2.5.29.20":  // cRLNumber
                let node = try DER.parse(value)
                guard node.identifier == .integer, case .primitive(let digits) = node.content else {
                    throw CRLParseError("cRLNumber is not an INTEGER")
                }
                number = Hex.normalizedSerial(digits)
            case "2.5.29.27":
                unsupported = unsupported ?? "a delta CRL (not supported: publish full CRLs)"
            case "2.5.29.28":
                unsupported = unsupported ?? "an issuing distribution point (partitioned or indirect CRLs are not supported)"
            default:
                if critical { unsupported = unsupported ?? "a critical extension \(oid) (not supported)" }
            }
        }
    }

    /// Calls `body` with (OID, critical, extnValue contents) for each Extension.
    private static func forEachExtension(_ node: ASN1Node, _ body: (String, Bool, ArraySlice<UInt8>) throws -> Void) throws {
        for item in try children(of: node, expecting: .sequence, what: "Extensions") {
            var fields = try children(of: item, expecting: .sequence, what: "Extension").makeIterator()
            let oid = try ASN1ObjectIdentifier(derEncoded: try next(&fields, "extnID")).description
            var field = try next(&fields, "extnValue")
            var critical = false
            if field.identifier == .boolean {
                critical = try Bool(derEncoded: field)
                field = try next(&fields, "extnValue")
            }
            let value = try ASN1OctetString(derEncoded: field)
            try body(oid, critical, value.bytes)
        }
    }

    private static func algorithm(_ node: ASN1Node) throws -> AlgorithmIdentifierBytes {
        var fields = try children(of: node, expecting: .sequence, what: "AlgorithmIdentifier").makeIterator()
        let oid = try ASN1ObjectIdentifier(derEncoded: try next(&fields, "algorithm")).description
        return AlgorithmIdentifierBytes(oid: oid, parameters: fields.next().map { Array($0.encodedBytes) })
    }

    private static func children(of node: ASN1Node, expecting identifier: ASN1Identifier, what: String) throws -> ASN1NodeCollection {
        guard node.identifier == identifier, case .constructed(let nodes) = node.content else {
            throw CRLParseError("\(what) is not a \(identifier)")
        }
        return nodes
    }

    private static func next(_ iterator: inout ASN1NodeCollection.Iterator, _ what: String) throws -> ASN1Node {
        guard let node = iterator.next() else { throw CRLParseError("\(what) is missing") }
        return node
    }

    /// UTCTime or GeneralizedTime as seconds since 1970.
    static func time(_ node: ASN1Node) throws -> Int {
        switch node.identifier {
        case .utcTime:
            let t = try UTCTime(derEncoded: node)
            return UnixTime.seconds(year: t.year, month: t.month, day: t.day, hour: t.hours, minute: t.minutes, second: t.seconds)
        case .generalizedTime:
            let t = try GeneralizedTime(derEncoded: node)
            return UnixTime.seconds(year: t.year, month: t.month, day: t.day, hour: t.hours, minute: t.minutes, second: t.seconds)
        default:
            throw CRLParseError("a time is neither UTCTime nor GeneralizedTime")
        }
    }
}

package struct CRLParseError: Error, CustomStringConvertible, Sendable {
    package let description: String
    init(_ description: String) { self.description = description }
}

enum UnixTime {
    /// Seconds since 1970-01-01T00:00:00Z of a UTC calendar time (proleptic Gregorian),
    /// by the days-from-civil method: no calendar library, no time zone.
    static func seconds(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return days * 86_400 + hour * 3_600 + minute * 60 + second
    }
}

/// A cursor over DER TLVs with one-byte tags (all that a CRL uses) and definite,
/// minimal lengths: it hands out ranges, never copies.
struct DERScanner {
    struct Field {
        var tag: UInt8
        var content: Range<Int>
        var whole: Range<Int>
    }

    private let bytes: [UInt8]
    private var position: Int
    private let end: Int

    init(_ bytes: [UInt8], _ range: Range<Int>) {
        self.bytes = bytes
        position = range.lowerBound
        end = range.upperBound
    }

    var isAtEnd: Bool { position >= end }

    mutating func expect(_ tag: UInt8, _ what: String) throws(CRLParseError) -> Field {
        let field = try next(what)
        guard field.tag == tag else { throw CRLParseError("\(what): unexpected tag 0x\(String(field.tag, radix: 16))") }
        return field
    }

    mutating func next(_ what: String) throws(CRLParseError) -> Field {
        let start = position
        guard end - position >= 2 else { throw CRLParseError("\(what) is missing or truncated") }
        let tag = bytes[position]
        guard tag & 0x1f != 0x1f else { throw CRLParseError("\(what): multi-byte tags are not used in CRLs") }
        var length = Int(bytes[position + 1])
        position += 2
        if length & 0x80 != 0 {
            let count = length & 0x7f
            guard count >= 1, count <= 4, end - position >= count, bytes[position] != 0 else {
                throw CRLParseError("\(what): bad length")
            }
            length = 0
            for _ in 0..<count {
                length = length << 8 | Int(bytes[position])
                position += 1
            }
            guard length >= 0x80 else { throw CRLParseError("\(what): length not minimal") }
        }
        guard end - position >= length else { throw CRLParseError("\(what) is truncated") }
        let content = position..<(position + length)
        position += length
        return Field(tag: tag, content: content, whole: start..<position)
    }
}
