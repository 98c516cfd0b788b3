import XCTest

@testable import MTLSProxy

final class InboundProxyHeaderTests: XCTestCase {
    private let signature = InboundProxyHeader.v2Signature

    func testV1Lines() {
        let line = Array("PROXY TCP4 192.0.2.1 198.51.100.2 51234 636\r\n".utf8)
        XCTAssertEqual(InboundProxyHeader.parse(line + [0x16, 0x03]),
                       .header(length: line.count, client: .init(address: [192, 0, 2, 1], port: 51234)))
        XCTAssertEqual(InboundProxyHeader.parse(Array(line.prefix(30))), .incomplete)
        XCTAssertEqual(InboundProxyHeader.parse(Array("PROXY UNKNOWN\r\n".utf8)), .header(length: 15, client: nil))
        let six = Array("PROXY TCP6 2001:db8::1 ::1 1 2\r\n".utf8)
        guard case .header(_, let client?) = InboundProxyHeader.parse(six) else { return XCTFail("v6 line") }
        XCTAssertEqual(client.address.count, 16)
        for bad in ["PROXY TCP4 2001:db8::1 ::1 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n",
                    "PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"] {
            guard case .invalid = InboundProxyHeader.parse(Array(bad.utf8)) else { return XCTFail("accepted \(bad)") }
        }
        guard case .invalid = InboundProxyHeader.parse(Array(("PROXY " + String(repeating: "9", count: 120)).utf8)) else {
            return XCTFail("a line over 107 bytes must be refused, not waited for")
        }
    }

    func testV2Headers() {
        let body: [UInt8] = [10, 1, 2, 3, 10, 9, 9, 9, 0x9c, 0x40, 0x02, 0x7c]
        let header = signature + [0x21, 0x11, 0, UInt8(body.count)] + body
        XCTAssertEqual(InboundProxyHeader.parse(header + [0x16]), .header(length: header.count, client: .init(address: [10, 1, 2, 3], port: 40000)))
        XCTAssertEqual(InboundProxyHeader.parse(Array(header.prefix(20))), .incomplete)
        XCTAssertEqual(InboundProxyHeader.parse(signature + [0x20, 0x00, 0, 0]), .header(length: 16, client: nil), "LOCAL")
        guard case .invalid = InboundProxyHeader.parse(signature + [0x31, 0x11, 0, 12] + body) else { return XCTFail("version 3") }
        guard case .invalid = InboundProxyHeader.parse(signature + [0x21, 0x12, 0, 12] + body) else { return XCTFail("UDP") }
        guard case .invalid = InboundProxyHeader.parse(signature + [0x21, 0x11, 0xff, 0xff]) else { return XCTFail("64 KiB header") }
    }

    func testOnlyTheVersionsTheListenerTakes() {
        guard case .invalid = InboundProxyHeader.parse(Array("PROXY UNKNOWN\r\n".utf8), v1: false, v2: true) else {
            return XCTFail("v1 on a v2 listener")
        }
        guard case .invalid = InboundProxyHeader.parse(signature + [0x20, 0, 0, 0], v1: true, v2: false) else {
            return XCTFail("v2 on a v1 listener")
        }
        guard case .invalid = InboundProxyHeader.parse([0x16, 0x03, 0x01]) else { return XCTFail("TLS without a header") }
    }

    func testCIDR() throws {
        let v4 = try XCTUnwrap(CIDR.parse("10.0.0.0/8"))
        XCTAssertTrue(v4.contains([10, 200, 3, 4]))
        XCTAssertFalse(v4.contains([11, 0, 0, 1]))
        XCTAssertTrue(v4.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 1, 1]), "IPv4-mapped IPv6")
        XCTAssertEqual(CIDR.parse("192.0.2.77/25")?.description, "192.0.2.0/25")
        XCTAssertTrue(try XCTUnwrap(CIDR.parse("127.0.0.1")).contains([127, 0, 0, 1]))
        XCTAssertFalse(try XCTUnwrap(CIDR.parse("127.0.0.1")).contains([127, 0, 0, 2]))
        let v6 = try XCTUnwrap(CIDR.parse("2001:db8::/32"))
        XCTAssertTrue(v6.contains([0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 7, count: 12)))
        XCTAssertFalse(v6.contains([10, 0, 0, 1]))
        for bad in ["10.0.0.0/33", "10.0.0.0/", "host.example", "10.0.0.0/8/8", "::1/129", "10.0.0.0/+8"] {
            XCTAssertNil(CIDR.parse(bad), bad)
        }
    }
}
