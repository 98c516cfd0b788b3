import CGnuTLSShim
import XCTest

@testable import MTLSProxy

/// The client's chain as read once from a session, and the DN attribute reader.
final class PeerChainTests: XCTestCase {
    /// The key the verification cache used before PeerChain: each DER behind its length
    /// as a 4-byte big-endian number, written out here byte by byte.
    private func formerChainKey(_ der: [[UInt8]]) -> [UInt8] {
        var key: [UInt8] = []
        for cert in der {
            let n = cert.count
            key += [UInt8(truncatingIfNeeded: n >> 24), UInt8(truncatingIfNeeded: n >> 16),
                    UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
            key += cert
        }
        return key
    }

    func testCacheKeyIsTheLengthPrefixedDERAndKeepsTheDER() throws {
        let leaf = TestCA(name: "CN=Leaf,O=mtls-proxy test").der
        let ca = TestCA(name: "CN=Issuer,O=mtls-proxy test").der
        let big = [UInt8](repeating: 0xab, count: 70_000)  // a length above 16 bits
        let chain = try XCTUnwrap(PeerChain(der: [leaf, ca, big]))
        XCTAssertEqual(chain.der, [leaf, ca, big])
        XCTAssertEqual(chain.cacheKey, formerChainKey([leaf, ca, big]))
        XCTAssertEqual(Array(chain.cacheKey.prefix(4)), [0, 0, UInt8(leaf.count >> 8), UInt8(leaf.count & 0xff)])
        // The same bytes split differently must not give the same key.
        XCTAssertNotEqual(PeerChain(der: [leaf + ca])?.cacheKey, chain.cacheKey)
        XCTAssertNil(PeerChain(der: []), "no certificate, no chain")
    }

    func testNamesAndDirectoryValuesOfTheLeaf() throws {
        let leaf = TestCA(
            // In DER order (the reverse of this string): CN=Alice before CN=Alice Smith.
            name: "EMAIL=dn@example.com,O=mtls-proxy test,OU=staff,OU=people,CN=Alice Smith,CN=Alice,UID=alice",
            altNames: [(GNUTLS_SAN_DNSNAME, "alice.example.com"), (GNUTLS_SAN_RFC822NAME, "alice@example.com"),
                       (GNUTLS_SAN_URI, "urn:alice")])
        let chain = try XCTUnwrap(PeerChain(der: [leaf.der]))
        let read = try XCTUnwrap(chain.leaf)
        XCTAssertEqual(read.names.cn, ["Alice", "Alice Smith"])
        XCTAssertEqual(read.names.ou, ["people", "staff"])
        XCTAssertEqual(read.names.dns, ["alice.example.com"])
        XCTAssertEqual(read.names.email, ["alice@example.com"])
        XCTAssertEqual(read.names.uri, ["urn:alice"])
        XCTAssertEqual(read.names.subject, read.info.subject)
        XCTAssertEqual(read.uid, "alice")
        XCTAssertEqual(read.email, "alice@example.com", "the e-mail alternative name comes first")
        XCTAssertEqual(read.info.commonName, "Alice")

        let lookup = DirectoryLookup(
            chain: chain, identity: PeerIdentity(subject: "s", issuer: "i", serialHex: "0102", commonName: "Alice"))
        XCTAssertEqual(lookup.certificate, leaf.der)
        XCTAssertEqual(lookup.uid, "alice")
        XCTAssertEqual(lookup.email, "alice@example.com")

        let noAltName = try XCTUnwrap(PeerChain(der: [TestCA(name: "CN=Bob,EMAIL=bob@example.com").der])?.leaf)
        XCTAssertEqual(noAltName.email, "bob@example.com", "else the DN's emailAddress")
        XCTAssertNil(noAltName.uid)
    }

    func testCertificatesThatDoNotImportAreLeftOut() throws {
        let leaf = TestCA(name: "CN=Leaf")
        let ca = TestCA(name: "CN=CA")
        let garbage: [UInt8] = [0x30, 0x03, 0x02, 0x01, 0x00]
        let chain = try XCTUnwrap(PeerChain(der: [leaf.der, garbage, ca.der]))
        XCTAssertEqual(chain.certificates.map(\.info.subject), ["CN=Leaf", "CN=CA"])
        XCTAssertEqual(chain.certificates.map(\.der), [leaf.der, ca.der])
        XCTAssertEqual(chain.certificates.first?.info.rawSubject, leaf.info.rawSubject)

        let broken = try XCTUnwrap(PeerChain(der: [garbage, ca.der]))
        XCTAssertNil(broken.leaf, "a leaf that does not import has no names")
        XCTAssertEqual(broken.certificates.map(\.der), [ca.der], "as the verification always skipped it")
        XCTAssertEqual(broken.cacheKey, formerChainKey([garbage, ca.der]), "the key needs no import")
    }

    func testDNAttributeReadsEveryValueInOrder() throws {
        // The DER lists the RDNs in the reverse order of the RFC 4514 string.
        let ca = TestCA(name: "CN=Second,OU=b,OU=a,CN=First,O=mtls-proxy test")
        XCTAssertEqual(DNAttribute.values(ca.cert, oid: GNUTLS_OID_X520_COMMON_NAME), ["First", "Second"])
        XCTAssertEqual(DNAttribute.first(ca.cert, oid: GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME), "a")
        XCTAssertEqual(DNAttribute.values(ca.cert, oid: GNUTLS_OID_X520_ORGANIZATION_NAME), ["mtls-proxy test"])
        XCTAssertEqual(DNAttribute.values(ca.cert, oid: GNUTLS_OID_LDAP_UID), [])
        XCTAssertNil(DNAttribute.first(ca.cert, oid: GNUTLS_OID_PKCS9_EMAIL))
        let long = String(repeating: "x", count: 600)  // above the 256 bytes CertificateInfo read once
        XCTAssertEqual(TestCA(name: "CN=\(long)").info.commonName, long)
    }
}
