import XCTest

@testable import MTLSProxy

final class LDAPTests: XCTestCase {
    func testNoticeOfDisconnectionBytes() {
        let oid = Array("1.3.6.1.4.1.1466.20036".utf8)
        let text = Array("client certificate revoked".utf8)
        var response: [UInt8] = [0x0a, 0x01, 0x08, 0x04, 0x00, 0x04, UInt8(text.count)] + text
        response += [0x8a, UInt8(oid.count)] + oid
        let op: [UInt8] = [0x78, UInt8(response.count)] + response
        let body: [UInt8] = [0x02, 0x01, 0x00] + op
        XCTAssertEqual(NoticeOfDisconnection.revoked, [0x30, UInt8(body.count)] + body)
        XCTAssertEqual(NoticeOfDisconnection.shuttingDown[9], 52, "resultCode unavailable")
    }

    private func advance(_ framer: inout LDAPMessageFramer, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { framer.advance($0) }
    }

    private func toBoundary(_ framer: LDAPMessageFramer, _ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { framer.bytesToBoundary(in: $0) }
    }

    func testFramerFollowsShortAndLongLengths() {
        var framer = LDAPMessageFramer()
        XCTAssertTrue(framer.isAtBoundary)
        let short: [UInt8] = [0x30, 0x03, 0x02, 0x01, 0x05]
        let long: [UInt8] = [0x30, 0x82, 0x01, 0x00] + [UInt8](repeating: 0x41, count: 256)
        advance(&framer, short + long)
        XCTAssertTrue(framer.isAtBoundary)
        advance(&framer, Array(long.prefix(3)))  // inside a length
        XCTAssertFalse(framer.isAtBoundary)
        advance(&framer, Array(long.dropFirst(3).prefix(100)))
        XCTAssertFalse(framer.isAtBoundary)
        advance(&framer, Array(long.dropFirst(103)))
        XCTAssertTrue(framer.isAtBoundary)
    }

    func testBytesToBoundaryLooksAheadWithoutMoving() {
        var framer = LDAPMessageFramer()
        let message: [UInt8] = [0x30, 0x05, 1, 2, 3, 4, 5]
        advance(&framer, Array(message.prefix(3)))
        XCTAssertEqual(toBoundary(framer, Array(message.dropFirst(3)) + [0x30, 0x00]), 4)
        XCTAssertNil(toBoundary(framer, [4]), "the message continues past what is held")
        XCTAssertFalse(framer.isAtBoundary, "looking ahead does not consume")
        XCTAssertEqual(toBoundary(LDAPMessageFramer(), [0x30]), 0)
    }

    func testFramerRefusesWhatIsNotLDAP() {
        for bytes: [UInt8] in [[0x31, 0x00], [0x30, 0x80], [0x30, 0x85, 1, 1, 1, 1, 1], [0x30, 0x84, 0x7f, 0xff, 0xff, 0xff]] {
            var framer = LDAPMessageFramer()
            advance(&framer, bytes)
            XCTAssertTrue(framer.isBroken, "\(bytes)")
            XCTAssertNil(toBoundary(framer, [0x30, 0x00]))
        }
    }
}

final class AllowListAndProxyProtocolTests: XCTestCase {
    func testWildcardStaysWithinOneLabel() {
        XCTAssertTrue(AllowList.matches("*.example.com", "ldap.example.com", separators: ["."]))
        XCTAssertFalse(AllowList.matches("*.example.com", "a.b.example.com", separators: ["."]))
        XCTAssertFalse(AllowList.matches("*.example.com", "example.com", separators: ["."]))
        XCTAssertTrue(AllowList.matches("svc-*", "svc-backup", separators: ["."]))
        XCTAssertTrue(AllowList.matches("UID=*,OU=people,DC=example,DC=com", "UID=alice,OU=people,DC=example,DC=com", separators: [","]))
        XCTAssertFalse(AllowList.matches("UID=*,DC=com", "UID=alice,OU=people,DC=com", separators: [","]))
        XCTAssertTrue(AllowList.matches("Alice", "alice", separators: ["."]), "case-insensitive")
        XCTAssertFalse(AllowList.matches("alice", "alice2", separators: ["."]))
    }

    func testListsAreOred() {
        var list = AllowList()
        XCTAssertTrue(list.permits(CertificateNames(subject: "CN=x")), "no list: every verified client")
        list.cn = ["backup"]
        list.dns = ["*.example.com"]
        XCTAssertTrue(list.permits(CertificateNames(subject: "CN=backup", cn: ["backup"])))
        XCTAssertTrue(list.permits(CertificateNames(subject: "CN=x", cn: ["x"], dns: ["a.example.com"])))
        XCTAssertFalse(list.permits(CertificateNames(subject: "CN=x", cn: ["x"], dns: ["a.example.org"])))
    }

    func testProxyProtocolV2Header() {
        let header = ProxyProtocolV2.header(
            client: ([127, 0, 0, 1], 50000), local: ([127, 0, 0, 2], 636), tlsVersion: "TLSv1.3", commonName: "alice")
        XCTAssertEqual(Array(header.prefix(12)), ProxyProtocolV2.signature)
        XCTAssertEqual(header[12], 0x21, "version 2, PROXY")
        XCTAssertEqual(header[13], 0x11, "TCP over IPv4")
        let length = Int(header[14]) << 8 | Int(header[15])
        XCTAssertEqual(header.count, 16 + length)
        XCTAssertEqual(Array(header[16..<28]), [127, 0, 0, 1, 127, 0, 0, 2, 0xC3, 0x50, 0x02, 0x7C])
        XCTAssertEqual(header[28], 0x20, "PP2_TYPE_SSL")
        XCTAssertLessThan(header.count, 520 - 16)
        let long = ProxyProtocolV2.header(client: nil, local: nil, tlsVersion: nil, commonName: String(repeating: "x", count: 500))
        XCTAssertEqual(long[13], 0x00, "no addresses: UNSPEC")
        XCTAssertLessThan(long.count, 120, "the CN is capped")
    }
}

final class LDAPFilterTests: XCTestCase {
    func testParsesAndEncodesLikeLdapsearch() throws {
        // (&(objectClass=person)(|(uid=jdoe)(!(cn=x)))) as ldapsearch sends it.
        let filter = try LDAPFilter.parse("(&(objectClass=person)(|(uid=jdoe)(!(cn=x))))")
        XCTAssertEqual(filter, .and([.equality("objectClass", Array("person".utf8)),
                                     .or([.equality("uid", Array("jdoe".utf8)), .not(.equality("cn", Array("x".utf8)))])]))
        XCTAssertEqual(try LDAPFilter.parse("(cn=*)"), .present("cn"))
        XCTAssertEqual(try LDAPFilter.parse("(cn=a*b*c)"), .substrings("cn", initial: Array("a".utf8), any: [Array("b".utf8)], final: Array("c".utf8)))
        XCTAssertEqual(try LDAPFilter.parse("(cn=\\2a)"), .equality("cn", [0x2a]), "an escaped star is a value")
        for bad in ["cn=x", "(cn=x", "(cn=x))", "(=x)", "(cn=a(b)"] {
            XCTAssertThrowsError(try LDAPFilter.parse(bad), bad)
        }
    }

    func testAnEscapeIsTwoHexDigits() throws {
        XCTAssertEqual(try LDAPFilter.parse("(cn=\\2A\\ff)"), .equality("cn", [0x2a, 0xff]))
        // UInt8("+f", radix: 16) is 15: a sign must not pass for a digit (RFC 4515: HEX HEX).
        for bad in ["(cn=\\+f)", "(cn=\\-0)", "(cn=\\ g)", "(cn=\\4)"] {
            XCTAssertThrowsError(try LDAPFilter.parse(bad), bad)
        }
    }

    func testEscapingKeepsCertificateValuesInert() throws {
        let evil = "*)(uid=*"
        let text = "(uid=\(LDAPFilter.escape(evil)))"
        XCTAssertEqual(text, "(uid=\\2a\\29\\28uid=\\2a)")
        XCTAssertEqual(try LDAPFilter.parse(text), .equality("uid", Array(evil.utf8)))
        XCTAssertEqual(LDAPFilter.escape("back\\slash"), "back\\5cslash")
    }

    func testSearchRequestEncoding() {
        let bytes = LDAPMessages.searchRequest(id: 2, base: "", scope: .base, filter: .present("objectClass"), attributes: ["+"], sizeLimit: 0)
        // The root DSE search of GNUTLS-NOTES.md section 6 asks for "*" and "+"; with "+" only:
        XCTAssertEqual(Array(bytes.prefix(2)), [0x30, UInt8(bytes.count - 2)])
        XCTAssertEqual(Array(bytes[2..<7]), [0x02, 0x01, 0x02, 0x63, UInt8(bytes.count - 7)])
        XCTAssertTrue(bytes.starts(with: [0x30]) && bytes.contains(0x87))
    }

    func testDecodesEntryAndDone() throws {
        // SearchResultEntry: id 3, dn "uid=a", one attribute with one value [1,2,3].
        let entry: [UInt8] = [0x30, 0x1e, 0x02, 0x01, 0x03, 0x64, 0x19, 0x04, 0x05] + Array("uid=a".utf8)
            + [0x30, 0x10, 0x30, 0x0e, 0x04, 0x05] + Array("attr1".utf8) + [0x31, 0x05, 0x04, 0x03, 1, 2, 3]
        let decoded = try LDAPMessages.decode(entry)
        XCTAssertEqual(decoded.messageID, 3)
        XCTAssertEqual(decoded.operation, 4)
        XCTAssertEqual(decoded.values, [[1, 2, 3]])
        let done: [UInt8] = [0x30, 0x0c, 0x02, 0x01, 0x03, 0x65, 0x07, 0x0a, 0x01, 0x20, 0x04, 0x00, 0x04, 0x00]
        XCTAssertEqual(try LDAPMessages.decode(done).resultCode, 32)
    }
}
