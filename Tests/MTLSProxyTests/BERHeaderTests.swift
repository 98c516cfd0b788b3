import XCTest

@testable import MTLSProxy

/// The one BER header rule that the relay's framer and the directory client share.
final class BERHeaderTests: XCTestCase {
    private func header(_ bytes: [UInt8]) -> LDAPMessageFramer.Header { LDAPMessageFramer.header(of: bytes) }

    func testShortForm() {
        XCTAssertEqual(header([0x30, 0x03, 0x02, 0x01, 0x05]), .message(headerLength: 2, contentLength: 3))
        XCTAssertEqual(header([0x30, 0x7f]), .message(headerLength: 2, contentLength: 127), "the content need not be there yet")
        XCTAssertEqual(header([0x30, 0x00, 0x30]), .message(headerLength: 2, contentLength: 0))
    }

    func testLongForm() {
        XCTAssertEqual(header([0x30, 0x81, 0x80]), .message(headerLength: 3, contentLength: 128))
        XCTAssertEqual(header([0x30, 0x82, 0x01, 0x00] + [UInt8](repeating: 0, count: 256)), .message(headerLength: 4, contentLength: 256))
        XCTAssertEqual(header([0x30, 0x84, 0x00, 0x01, 0x00, 0x00]), .message(headerLength: 6, contentLength: 65536))
        XCTAssertEqual(header([0x30, 0x84, 0x40, 0x00, 0x00, 0x00]), .message(headerLength: 6, contentLength: 1 << 30), "the limit itself")
        XCTAssertEqual(header([0x30, 0x82, 0x00, 0x00]), .message(headerLength: 4, contentLength: 0))
    }

    func testSplitHeadersAreIncomplete() {
        XCTAssertEqual(header([]), .incomplete)
        XCTAssertEqual(header([0x30]), .incomplete)
        XCTAssertEqual(header([0x30, 0x82]), .incomplete)
        XCTAssertEqual(header([0x30, 0x84, 0x00, 0x01, 0x00]), .incomplete)
        // A slice that does not start at index 0 reads the same.
        let stream: [UInt8] = [0xff, 0xff, 0x30, 0x81, 0x05]
        XCTAssertEqual(LDAPMessageFramer.header(of: stream[2...]), .message(headerLength: 3, contentLength: 5))
        XCTAssertEqual(LDAPMessageFramer.header(of: stream[2..<4]), .incomplete)
    }

    func testGarbageIsNotLDAP() {
        XCTAssertEqual(header([0x31, 0x00]), .notLDAP, "a SET, not a SEQUENCE")
        XCTAssertEqual(header([0x04]), .notLDAP, "one wrong tag byte is enough")
        XCTAssertEqual(header([0x30, 0x80]), .notLDAP, "indefinite length")
        XCTAssertEqual(header([0x30, 0x85, 1, 1, 1, 1, 1]), .notLDAP, "five length bytes")
        XCTAssertEqual(header([0x30, 0x84, 0x40, 0x00, 0x00, 0x01]), .notLDAP, "above maxMessageLength")
        XCTAssertEqual(header(Array("GET / HTTP/1.1\r\n".utf8)), .notLDAP)
    }

    func testDirectoryFramingUsesTheRuleWithItsOwnLimit() {
        XCTAssertEqual(DirectoryConnection.frame([0x30, 0x03, 0x02, 0x01, 0x05, 0x30]), .message(length: 5))
        XCTAssertEqual(DirectoryConnection.frame([0x30, 0x03, 0x02, 0x01]), .incomplete, "content still on its way")
        XCTAssertEqual(DirectoryConnection.frame([0x30, 0x82, 0x01]), .incomplete)
        XCTAssertEqual(DirectoryConnection.frame([0x30, 0x00]), .message(length: 2))
        let max = DirectoryConnection.maxMessageBytes
        let atMax: [UInt8] = [0x30, 0x84, UInt8(max >> 24), UInt8(max >> 16 & 0xff), UInt8(max >> 8 & 0xff), UInt8(max & 0xff)]
        XCTAssertEqual(DirectoryConnection.frame(atMax), .incomplete)
        let over = max + 1
        let overMax: [UInt8] = [0x30, 0x84, UInt8(over >> 24), UInt8(over >> 16 & 0xff), UInt8(over >> 8 & 0xff), UInt8(over & 0xff)]
        XCTAssertEqual(DirectoryConnection.frame(overMax), .invalid("oversize LDAP message from the directory"))
        XCTAssertEqual(DirectoryConnection.frame([0x31]), .invalid("not LDAP from the directory"))
        XCTAssertEqual(DirectoryConnection.frame([0x30, 0x80]), .invalid("bad BER length from the directory"))
    }
}
