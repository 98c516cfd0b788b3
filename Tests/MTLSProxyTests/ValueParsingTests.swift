import XCTest

@testable import MTLSProxy

final class ValueParsingTests: XCTestCase {
    func testDurations() {
        XCTAssertEqual(ConfigDuration.parseNanoseconds("500ms"), 500_000_000)
        XCTAssertEqual(ConfigDuration.parseNanoseconds("10s"), 10_000_000_000)
        XCTAssertEqual(ConfigDuration.parseNanoseconds("5m"), 300_000_000_000)
        XCTAssertEqual(ConfigDuration.parseNanoseconds("1h"), 3_600_000_000_000)
        XCTAssertEqual(ConfigDuration.parseNanoseconds("0"), 0)
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "5d", "99999999999999999999h"] {
            XCTAssertNil(ConfigDuration.parseNanoseconds(bad), bad)
        }
        XCTAssertEqual(ConfigDuration.describe(90_000_000_000), "90s")
        XCTAssertEqual(ConfigDuration.describe(1_500_000_000), "1500ms")
    }

    func testEndpoints() throws {
        XCTAssertEqual(try Endpoint.parse("127.0.0.1:636", allowUnix: false).get(), .inet(host: "127.0.0.1", port: 636))
        XCTAssertEqual(try Endpoint.parse("ldap.example.com:389", allowUnix: false).get(),
                       .inet(host: "ldap.example.com", port: 389))
        XCTAssertEqual(try Endpoint.parse("[::1]:636", allowUnix: false).get(), .inet6(host: "::1", port: 636))
        XCTAssertEqual(try Endpoint.parse("unix:/run/slapd/ldapi", allowUnix: true).get(), .unix(path: "/run/slapd/ldapi"))
        for bad in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":636", "::1:636", "[::1]636", "[nothex]:1", "unix:relative"] {
            XCTAssertThrowsError(try Endpoint.parse(bad, allowUnix: true).get(), bad)
        }
        XCTAssertThrowsError(try Endpoint.parse("unix:/tmp/x", allowUnix: false).get())
    }

    func testHTTPRequestHead() {
        let get = Array("GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        XCTAssertEqual(HTTPRequestHead.parse(get), .request(HTTPRequestHead(method: "GET", path: "/readyz")))
        XCTAssertEqual(HTTPRequestHead.parse(Array("GET /readyz HTTP/1.1\r\nHost".utf8)), .incomplete)
        XCTAssertEqual(HTTPRequestHead.parse(Array("hello\r\n\r\n".utf8)), .invalid)
        XCTAssertEqual(HTTPRequestHead.parse(Array("GET readyz HTTP/1.1\r\n\r\n".utf8)), .invalid)
        XCTAssertEqual(HTTPRequestHead.parse(Array("GET / SPDY/3\r\n\r\n".utf8)), .invalid)
    }

    func testSerialsCompareWithoutLeadingZeros() {
        XCTAssertEqual(SerialNumber([0x00, 0x8f, 0x01]), SerialNumber([0x8f, 0x01]))
        XCTAssertNotEqual(SerialNumber([0x8f, 0x01]), SerialNumber([0x8f, 0x01, 0x00]))
        XCTAssertNotEqual(SerialNumber([0x01]), SerialNumber([0x01, 0x00]), "length is part of the value")
        XCTAssertEqual(SerialNumber([0x00]).bytes, [0x00])
        XCTAssertEqual(Hex.encode([0x0a, 0xff]), "0aff")
        let twenty = (1...20).map { UInt8($0) }
        XCTAssertEqual(SerialNumber(twenty).bytes, twenty)
        XCTAssertEqual(SerialNumber(twenty).description, Hex.encode(twenty))
        let long = [UInt8](repeating: 0x7f, count: 30)
        XCTAssertEqual(SerialNumber(long).bytes, long)
        XCTAssertNotEqual(SerialNumber(long), SerialNumber(Array(long.dropLast())))
        XCTAssertEqual(Set([SerialNumber([1, 2]), SerialNumber([0, 1, 2])]).count, 1)
    }

    func testTimerHeapPopsInDeadlineOrder() {
        var heap = TimerHeap()
        for (deadline, key) in [(50, 1), (10, 2), (30, 3), (10, 4), (70, 5), (20, 6)] {
            heap.push(deadline: UInt64(deadline), key: UInt64(key))
        }
        var order: [UInt64] = []
        while let entry = heap.pop() { order.append(entry.deadline) }
        XCTAssertEqual(order, [10, 10, 20, 30, 50, 70])
    }

    func testRelayBufferTakesStorageOnlyWhileBytesAreInFlight() {
        let pool = BufferPool(keep: 4)
        var buffer = RelayBuffer()
        XCTAssertNil(buffer.storage)
        let space = buffer.writable(from: pool)
        XCTAssertEqual(space.count, BufferPool.bufferSize)
        space.pointer.storeBytes(of: 0x42, as: UInt8.self)
        buffer.commit(1)
        buffer.releaseIfEmpty(to: pool)
        XCTAssertNotNil(buffer.storage, "bytes in flight keep the buffer")
        buffer.consume(1)
        buffer.releaseIfEmpty(to: pool)
        XCTAssertNil(buffer.storage)
    }

    func testRelayBufferSlidesTheTailWhenFull() {
        let pool = BufferPool()
        var buffer = RelayBuffer()
        _ = buffer.writable(from: pool)
        buffer.commit(BufferPool.bufferSize)
        XCTAssertFalse(buffer.hasSpace)
        buffer.consume(100)
        let space = buffer.writable(from: pool)
        XCTAssertEqual(space.count, 100)
        XCTAssertEqual(buffer.count, BufferPool.bufferSize - 100)
        buffer.discard(to: pool)
    }
}
