import CGnuTLSShim
import SwiftASN1
import XCTest

@testable import MTLSProxy

/// Our DER reader against GnuTLS's own CRL decoder as the oracle, and the signature
/// check against GnuTLS's writer.
final class CRLReaderTests: XCTestCase {
    private let now = Int(time(nil))

    private func randomSerials(_ count: Int) -> [[UInt8]] {
        (0..<count).map { index in
            // Every length from 1 to 20 bytes, and high bits set (DER then prefixes 00).
            var bytes = (0..<(index % 20 + 1)).map { _ in UInt8.random(in: 0...255) }
            bytes[0] = index % 3 == 0 ? 0x80 | bytes[0] : max(bytes[0] & 0x7f, 1)
            return bytes
        }
    }

    func testReadsWhatGnuTLSReads() throws {
        let ca = TestCA(name: "CN=Reader CA,O=mtls-proxy test")
        let serials = randomSerials(300)
        let der = ca.crl(revoking: serials, thisUpdate: now - 100, nextUpdate: now + 3600, number: [0x00, 0x9f])
        let oracle = try XCTUnwrap(GnuTLSCRLView(der: der))
        let document = try CRLDocument.parse(der: der)

        XCTAssertEqual(document.issuerName, oracle.issuerName)
        XCTAssertEqual(Set(document.revoked), oracle.serials)
        XCTAssertEqual(document.revoked.count, 300)
        XCTAssertEqual(document.thisUpdate, oracle.thisUpdate)
        XCTAssertEqual(document.nextUpdate, oracle.nextUpdate)
        XCTAssertEqual(document.authorityKeyID, ca.subjectKeyID)
        XCTAssertEqual(document.number, [0x9f])
        XCTAssertNil(document.unsupported)
        XCTAssertEqual(CRLInfo(document, file: "x").issuer, "CN=Reader CA,O=mtls-proxy test")
    }

    func testEmptyCRLWithoutOptionalParts() throws {
        let ca = TestCA(name: "CN=Empty CA")
        let der = ca.crl(revoking: [], thisUpdate: now, nextUpdate: nil, number: nil, authorityKeyID: false)
        let document = try CRLDocument.parse(der: der)
        XCTAssertTrue(document.revoked.isEmpty)
        XCTAssertNil(document.nextUpdate)
        XCTAssertNil(document.authorityKeyID)
        XCTAssertNil(document.number)
        XCTAssertEqual(CRLSignature.verify(document, signer: ca.cert), .valid)
    }

    func testSignatureVerifiesOnlyWithTheSignersKey() throws {
        for (algorithm, bits) in [(GNUTLS_PK_ECDSA, UInt32(256)), (GNUTLS_PK_ECDSA, 384), (GNUTLS_PK_RSA, 2048), (GNUTLS_PK_EDDSA_ED25519, 256)] {
            let ca = TestCA(name: "CN=Signer CA", algorithm: algorithm, bits: bits)
            let other = TestCA(name: "CN=Signer CA", algorithm: algorithm, bits: bits)
            let document = try CRLDocument.parse(der: ca.crl(revoking: [[0x10]], thisUpdate: now, nextUpdate: now + 60))
            XCTAssertEqual(CRLSignature.verify(document, signer: ca.cert), .valid, "\(algorithm)")
            XCTAssertNotEqual(CRLSignature.verify(document, signer: other.cert), .valid, "another key of the same name")
            var tampered = document
            tampered.signedBytes[tampered.signedBytes.count - 1] ^= 0x01
            XCTAssertNotEqual(CRLSignature.verify(tampered, signer: ca.cert), .valid, "a changed byte in what was signed")
        }
    }

    func testSignerMustBeAllowedToSignCRLs() throws {
        let ca = TestCA(name: "CN=No CRL Sign", keyUsage: UInt32(GNUTLS_KEY_KEY_CERT_SIGN))
        let document = try CRLDocument.parse(der: ca.crl(revoking: [], thisUpdate: now, nextUpdate: now + 60))
        guard case .invalid(let why) = CRLSignature.verify(document, signer: ca.cert) else {
            return XCTFail("a CA without cRLSign must not sign CRLs")
        }
        XCTAssertTrue(why.contains("key usage"), why)
    }

    func testJudgeTrustsHoldsAndRejects() throws {
        let bundled = TestCA(name: "CN=Bundled CA")
        let forger = TestCA(name: "CN=Bundled CA")
        let clientCA = TestCA(name: "CN=Client CA")
        let cas = [(cert: bundled.cert, info: bundled.info)]
        let genuine = try CRLDocument.parse(der: bundled.crl(revoking: [], thisUpdate: now, nextUpdate: now + 60))
        XCTAssertEqual(CRLSet.judge(genuine, cas: cas), .trusted)
        let unknownIssuer = try CRLDocument.parse(der: clientCA.crl(revoking: [], thisUpdate: now, nextUpdate: now + 60))
        XCTAssertEqual(CRLSet.judge(unknownIssuer, cas: cas), .held(note: nil), "its CA may arrive in a handshake")
        // A forgery that copies the genuine name and key identifier is refused.
        var forged = try CRLDocument.parse(der: forger.crl(revoking: [[0x01]], thisUpdate: now, nextUpdate: now + 60))
        forged.authorityKeyID = bundled.subjectKeyID
        guard case .rejected = CRLSet.judge(forged, cas: cas) else { return XCTFail("a forgery naming the bundled key") }
        let anonymous = try CRLDocument.parse(
            der: forger.crl(revoking: [], thisUpdate: now, nextUpdate: now + 60, authorityKeyID: false))
        guard case .rejected = CRLSet.judge(anonymous, cas: cas) else { return XCTFail("a forgery naming no key") }
    }

    func testMalformedInputsAreErrorsNotCrashes() {
        let ca = TestCA(name: "CN=Cut CA")
        let der = ca.crl(revoking: randomSerials(20), thisUpdate: now, nextUpdate: now + 60)
        for length in stride(from: 0, to: der.count, by: 7) {
            XCTAssertThrowsError(try CRLDocument.parse(der: Array(der.prefix(length))), "truncated at \(length)")
        }
        XCTAssertThrowsError(try CRLDocument.parse(der: [0x30, 0x03, 0x02, 0x01, 0x01]))
        XCTAssertThrowsError(try CRLDocument.parse(der: der + [0x00]), "trailing bytes")
    }

    /// A CRL written by hand (not signed: the reader does not check signatures), with
    /// entry and CRL extensions of our choosing.
    private func handMadeCRL(entryExtensions: [(String, Bool, [UInt8])], crlExtensions: [(String, Bool, [UInt8])]) throws -> [UInt8] {
        func extensions(_ list: [(String, Bool, [UInt8])], into coder: inout DER.Serializer) throws {
            try coder.appendConstructedNode(identifier: .sequence) { coder in
                for (oid, critical, value) in list {
                    try coder.appendConstructedNode(identifier: .sequence) { coder in
                        try coder.serialize(try ASN1ObjectIdentifier(dotRepresentation: oid))
                        if critical { try coder.serialize(true) }
                        try coder.serialize(ASN1OctetString(contentBytes: value[...]))
                    }
                }
            }
        }
        var coder = DER.Serializer()
        try coder.appendConstructedNode(identifier: .sequence) { coder in
            try coder.appendConstructedNode(identifier: .sequence) { coder in  // TBSCertList
                try coder.serialize(1)
                try coder.appendConstructedNode(identifier: .sequence) { try $0.serialize(ASN1ObjectIdentifier("1.2.840.10045.4.3.2")) }
                coder.appendConstructedNode(identifier: .sequence) { _ in }  // empty issuer Name
                try coder.serialize(try UTCTime(year: 2026, month: 11, day: 30, hours: 0, minutes: 0, seconds: 0))
                try coder.serialize(GeneralizedTime(year: 2051, month: 1, day: 1, hours: 0, minutes: 0, seconds: 0, fractionalSeconds: 0))
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    for serial in [5, 6] {
                        try coder.appendConstructedNode(identifier: .sequence) { coder in
                            try coder.serialize(serial)
                            try coder.serialize(try UTCTime(year: 2026, month: 11, day: 1, hours: 0, minutes: 0, seconds: 0))
                            if !entryExtensions.isEmpty { try extensions(entryExtensions, into: &coder) }
                        }
                    }
                }
                if !crlExtensions.isEmpty {
                    try coder.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { coder in
                        try extensions(crlExtensions, into: &coder)
                    }
                }
            }
            try coder.appendConstructedNode(identifier: .sequence) { try $0.serialize(ASN1ObjectIdentifier("1.2.840.10045.4.3.2")) }
            try coder.serialize(ASN1BitString(bytes: [1, 2, 3]))
        }
        return coder.serializedBytes
    }

    func testEntryReasonCodesAndCRLScopes() throws {
        let keyCompromise: [UInt8] = [0x0a, 0x01, 0x01]
        let plain = try CRLDocument.parse(der: handMadeCRL(
            entryExtensions: [("2.5.29.21", false, keyCompromise)], crlExtensions: [("2.5.29.20", false, [0x02, 0x01, 0x2a])]))
        XCTAssertEqual(plain.revoked, [SerialNumber([5]), SerialNumber([6])])
        XCTAssertEqual(plain.number, [0x2a])
        XCTAssertEqual(plain.nextUpdate, UnixTime.seconds(year: 2051, month: 1, day: 1, hour: 0, minute: 0, second: 0))
        XCTAssertNil(plain.unsupported)
        let delta = try CRLDocument.parse(der: handMadeCRL(entryExtensions: [], crlExtensions: [("2.5.29.27", true, [0x02, 0x01, 0x01])]))
        XCTAssertEqual(delta.unsupported?.contains("delta"), true)
        let partitioned = try CRLDocument.parse(der: handMadeCRL(entryExtensions: [], crlExtensions: [("2.5.29.28", true, [0x30, 0x00])]))
        XCTAssertEqual(partitioned.unsupported?.contains("distribution point"), true)
        let unknownCritical = try CRLDocument.parse(der: handMadeCRL(entryExtensions: [], crlExtensions: [("1.2.3.4", true, [0x05, 0x00])]))
        XCTAssertEqual(unknownCritical.unsupported?.contains("1.2.3.4"), true)
        let unknownEntry = try CRLDocument.parse(der: handMadeCRL(entryExtensions: [("2.5.29.29", true, [0x30, 0x00])], crlExtensions: []))
        XCTAssertEqual(unknownEntry.unsupported?.contains("2.5.29.29"), true, "certificateIssuer belongs to indirect CRLs")
        XCTAssertNil(try CRLDocument.parse(der: handMadeCRL(entryExtensions: [("1.2.3.4", false, [0x05, 0x00])], crlExtensions: [])).unsupported,
                     "an unknown non-critical entry extension is ignored")
    }

    func testPEMFileWithSeveralCRLsAndOtherText() throws {
        let first = TestCA(name: "CN=First").crl(revoking: [[1]], thisUpdate: now, nextUpdate: now + 60)
        let second = TestCA(name: "CN=Second").crl(revoking: [[2], [3]], thisUpdate: now, nextUpdate: now + 60)
        func pem(_ der: [UInt8], _ label: String) -> String {
            "-----BEGIN \(label)-----\n" + base64(der, lineLength: 64) + "-----END \(label)-----\n"
        }
        let text = "Certificate Revocation List (CRL):\n  text openssl prints\n" + pem(first, "X509 CRL")
            + pem([0x30, 0x00], "CERTIFICATE") + "\n" + pem(second, "X509 CRL")
        let documents = CRLFile.documents(in: Array(text.utf8))
        XCTAssertEqual(documents.count, 2)
        XCTAssertEqual(try documents.map { try $0.get().revoked.count }, [1, 2])
        XCTAssertEqual(CRLFile.documents(in: first).count, 1, "DER")
        XCTAssertTrue(CRLFile.documents(in: Array("just some notes\n".utf8)).isEmpty)
        XCTAssertThrowsError(try CRLFile.documents(in: Array("-----BEGIN X509 CRL-----\n!!\n-----END X509 CRL-----\n".utf8))[0].get())
    }

    func testBase64() {
        XCTAssertEqual(Base64.decode(Array("".utf8)), [])
        XCTAssertEqual(Base64.decode(Array("Zg==".utf8)), Array("f".utf8))
        XCTAssertEqual(Base64.decode(Array("Zm8=".utf8)), Array("fo".utf8))
        XCTAssertEqual(Base64.decode(Array("Zm9v\r\nYmFy".utf8)), Array("foobar".utf8))
        XCTAssertNil(Base64.decode(Array("Zm9v!".utf8)))
        XCTAssertNil(Base64.decode(Array("Zg==Zg".utf8)), "data after padding")
        XCTAssertNil(Base64.decode(Array("Zh==".utf8)), "non-zero leftover bits")
        let bytes = (0..<1000).map { _ in UInt8.random(in: 0...255) }
        XCTAssertEqual(Base64.decode(Array(base64(bytes, lineLength: 76).utf8)), bytes)
    }

    func testUnixTime() {
        XCTAssertEqual(UnixTime.seconds(year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0), 0)
        XCTAssertEqual(UnixTime.seconds(year: 2000, month: 3, day: 1, hour: 0, minute: 0, second: 0), 951_868_800)
        XCTAssertEqual(UnixTime.seconds(year: 2038, month: 1, day: 19, hour: 3, minute: 14, second: 8), 2_147_483_648)
        XCTAssertEqual(UnixTime.seconds(year: 2024, month: 2, day: 29, hour: 12, minute: 0, second: 0), 1_709_208_000)
        XCTAssertEqual(UnixTime.seconds(year: 1961, month: 12, day: 30, hour: 2, minute: 16, second: 6), -252_625_434,
                       "UTCTime 61 is 1961 (RFC 5280); GnuTLS says 1970 for every earlier time")
    }

    private func base64(_ bytes: [UInt8], lineLength: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var out = ""
        var line = 0
        var index = 0
        while index < bytes.count {
            let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
            let value = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << UInt32(16 - 8 * $1.offset) }
            for position in 0..<4 {
                out.append(position <= chunk.count ? alphabet[Int((value >> UInt32(18 - 6 * position)) & 63)] : "=")
            }
            index += 3
            line += 4
            if line >= lineLength { out.append("\n"); line = 0 }
        }
        if line > 0 { out.append("\n") }
        return out
    }
}
