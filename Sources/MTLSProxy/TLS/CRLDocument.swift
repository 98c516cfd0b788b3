import SwiftASN1

/// A certificate revocation list as our own DER reader sees it (RFC 5280 §5.1).
///
/// GnuTLS decodes CRLs through libtasn1, whose cost grows with the square of the entry
/// count once entries carry extensions (a reason code on every entry, as OpenSSL's CA,
/// EJBCA, Dogtag and Microsoft's CA write them): 100,000 such entries take minutes. This
/// reader walks the same structure once, and keeps the signed bytes so that the
/// signature is checked against the issuer's public key (`CRLSignature`) without
/// GnuTLS ever parsing the list.
struct CRLDocument: Sendable {
    /// The DER of the TBSCertList: exactly what the issuer signed.
    var signedBytes: [UInt8]
    var signatureAlgorithm: AlgorithmIdentifierBytes
    var signature: [UInt8]
    /// The issuer Name as DER (tag and length included), comparable with a
    /// certificate's raw issuer.
    var issuerName: [UInt8]
    var thisUpdate: Int
    var nextUpdate: Int?
    var revoked: [SerialNumber]
    var authorityKeyID: [UInt8]?
    /// The cRLNumber, as the bytes of a positive integer without leading zeros.
    var number: [UInt8]?
    /// Set when the CRL's scope is not "every certificate of this issuer" or it carries
    /// a critical extension we do not understand: such a CRL is refused, not misread.
    var unsupported: String?

    /// An AlgorithmIdentifier: its OID in dotted form and the DER of its parameters.
    struct AlgorithmIdentifierBytes: Sendable, Equatable {
        var oid: String
        var parameters: [UInt8]?
    }

    static func parse(der bytes: [UInt8]) throws(CRLParseError) -> CRLDocument {
        do {
            return try read(DER.parse(bytes))
        } catch let error as CRLParseError {
            throw error
        } catch {
            throw CRLParseError("not a DER CertificateList (\(error))")
        }
    }

    private static func read(_ root: ASN1Node) throws -> CRLDocument {
        var top = try children(of: root, expecting: .sequence, what: "CertificateList").makeIterator()
        guard let tbsNode = top.next(), let algorithmNode = top.next(), let signatureNode = top.next(), top.next() == nil
        else { throw CRLParseError("a CertificateList has three parts") }
        let signatureAlgorithm = try algorithm(algorithmNode)
        let signature = try ASN1BitString(derEncoded: signatureNode)
        guard signature.paddingBits == 0 else { throw CRLParseError("signature is not a whole number of bytes") }

        var tbs = try children(of: tbsNode, expecting: .sequence, what: "TBSCertList").makeIterator()
        var node = try next(&tbs, "signature")
        if node.identifier == .integer {
            // version v2 (1); v1 CRLs omit it. Nothing else is defined.
            guard case .primitive(let version) = node.content, version.elementsEqual([1]) else {
                throw CRLParseError("unsupported CRL version")
            }
            node = try next(&tbs, "signature")
        }
        guard try algorithm(node) == signatureAlgorithm else {
            throw CRLParseError("the signed and the outer signature algorithms differ")
        }
        let issuer = try next(&tbs, "issuer")
        guard issuer.identifier == .sequence else { throw CRLParseError("issuer is not a Name") }
        let thisUpdate = try time(try next(&tbs, "thisUpdate"))

        var document = CRLDocument(
            signedBytes: Array(tbsNode.encodedBytes), signatureAlgorithm: signatureAlgorithm,
            signature: Array(signature.bytes), issuerName: Array(issuer.encodedBytes), thisUpdate: thisUpdate,
            nextUpdate: nil, revoked: [])
        var pending = tbs.next()
        if let candidate = pending, candidate.identifier == .utcTime || candidate.identifier == .generalizedTime {
            document.nextUpdate = try time(candidate)
            pending = tbs.next()
        }
        if let candidate = pending, candidate.identifier == .sequence {
            try document.readEntries(candidate)
            pending = tbs.next()
        }
        if let candidate = pending, candidate.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
            guard case .constructed(let wrapped) = candidate.content, let extensions = Array(wrapped).first else {
                throw CRLParseError("crlExtensions is empty")
            }
            try document.readExtensions(extensions)
            pending = tbs.next()
        }
        if pending != nil { throw CRLParseError("unexpected data at the end of the TBSCertList") }
        return document
    }

    /// The revokedCertificates list: the serial of each entry. Entry extensions (reason
    /// code, invalidity date, hold instruction) do not change whether a serial is
    /// revoked; a critical one we cannot read makes the CRL unusable (RFC 5280 §5.3).
    private mutating func readEntries(_ list: ASN1Node) throws {
        guard case .constructed(let entries) = list.content else { throw CRLParseError("revokedCertificates is not a list") }
        for entry in entries {
            guard entry.identifier == .sequence, case .constructed(let parts) = entry.content else {
                throw CRLParseError("a revoked entry is not a SEQUENCE")
            }
            var fields = parts.makeIterator()
            guard let serialNode = fields.next(), serialNode.identifier == .integer,
                case .primitive(let serial) = serialNode.content, let dateNode = fields.next()
            else { throw CRLParseError("a revoked entry lacks its serial or date") }
            _ = try Self.time(dateNode)
            revoked.append(SerialNumber(serial))
            if let entryExtensions = fields.next(), unsupported == nil {
                try Self.forEachExtension(entryExtensions) { oid, critical, _ in
                    if critical && !Self.knownEntryExtensions.contains(oid) {
                        unsupported = "a critical entry extension \(oid) (not supported)"
                    }
                }
            }
        }
    }

    private static let knownEntryExtensions: Set<String> = [
        "2.5.29.21",  // reasonCode
        "2.5.29.24",  // invalidityDate
        "2.5.29.23",  // holdInstructionCode
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

struct CRLParseError: Error, CustomStringConvertible, Sendable {
    let description: String
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
