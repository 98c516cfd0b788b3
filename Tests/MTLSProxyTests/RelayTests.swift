import XCTest

@testable import MTLSProxy

/// One side of a relay in memory: bytes the relay may read, what it wrote, and how the
/// side behaves (short reads, writes that take a few bytes, would-block at random).
final class MemoryStream: RelayStream {
    /// What the relay may read, in order; after it, EOF once `ended` is set.
    var incoming: [UInt8] = []
    private(set) var readCount = 0
    var ended = false
    private(set) var received: [UInt8] = []
    private(set) var finishCount = 0
    /// How many bytes had been written to this side when its writing was finished.
    private(set) var receivedAtFinish: Int?
    private(set) var wroteAfterFinish = false
    /// Reads offered no room: on a socket, recv(2) of 0 bytes returns 0, read as EOF.
    private(set) var readsWithoutRoom = 0

    var random: SeededRandom?
    var maxRead = Int.max
    /// The most one write takes.
    var writeBudget = Int.max
    /// The most all writes together take before the side blocks (a peer that stopped reading).
    var acceptTotal = Int.max
    var readFailure: String?
    var writeFailure: String?
    /// Writes as a TLS session does: a write that would block has queued a record of
    /// the bytes offered, and the next write must offer the same bytes again.
    var queuesLikeTLS = false
    /// The next write would block (a full socket at a chosen moment).
    var blockNextWrite = false
    private var queued: [UInt8]?
    /// A retry offered other bytes than the queued record (or fewer).
    private(set) var retryViolations = 0
    /// Bytes of the queued record: they go out whatever comes after.
    var queuedCount: Int { queued?.count ?? 0 }

    init(random: SeededRandom? = nil) { self.random = random }

    var unread: Int { incoming.count - readCount }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        if let readFailure { return .failed(readFailure) }
        if buffer.count == 0 { readsWithoutRoom += 1 }
        if random != nil && random!.chance(0.25) { return .wouldBlock }
        if unread == 0 { return ended ? .closed : .wouldBlock }
        var n = min(buffer.count, unread, maxRead)
        if random != nil { n = Int.random(in: 1...n, using: &random!) }
        guard n > 0 else { return .wouldBlock }
        incoming.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + readCount, byteCount: n) }
        readCount += n
        return .processed(n)
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        if let writeFailure { return .failed(writeFailure) }
        if finishCount > 0 { wroteAfterFinish = true }
        if let record = queued {
            // As a TLS session: the queued record goes first, and only the same bytes may
            // be offered for it.
            let same = bytes.count >= record.count && record.withUnsafeBytes { memcmp($0.baseAddress!, bytes.baseAddress!, record.count) == 0 }
            if !same {
                retryViolations += 1  // TLSSession stops the process here (a precondition)
                return .failed("a queued record was retried without its bytes")
            }
            if random != nil && random!.chance(0.25) { return .wouldBlock }
            received += record
            queued = nil
            return .processed(record.count)
        }
        let room = min(bytes.count, writeBudget, acceptTotal - received.count)
        if room <= 0 || blockNextWrite || random != nil && random!.chance(0.25) {
            blockNextWrite = false
            if queuesLikeTLS { queued = Array(bytes.prefix(min(bytes.count, writeBudget))) }
            return .wouldBlock
        }
        var n = room
        if random != nil && !queuesLikeTLS { n = Int.random(in: 1...n, using: &random!) }
        received.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
        return .processed(n)
    }

    func finishWriting() -> Bool {
        if random != nil && random!.chance(0.25) { return false }
        finishCount += 1
        receivedAtFinish = receivedAtFinish ?? received.count
        return true
    }

    var hasBufferedInput: Bool { false }
    var hasPendingWrite: Bool { queued != nil }
}

final class RelayTests: XCTestCase {
    private let pool = BufferPool()

    private func bytes(_ count: Int, _ random: inout SeededRandom) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { raw in
            for offset in stride(from: 0, to: count, by: 8) {
                var word = random.next()
                withUnsafeBytes(of: &word) { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: min(8, count - offset)) }
            }
        }
        return out
    }

    func testEveryByteArrivesOnceAndInOrderWhateverTheSchedule() {
        for seed: UInt64 in 1...80 {
            var random = SeededRandom(seed: seed)
            // Some runs carry more than a buffer's worth, so that buffers fill and slide.
            let sizes = [0...3000, 0...30_000, 100_000...200_000]
            let up = bytes(Int.random(in: sizes.randomElement(using: &random)!, using: &random), &random)
            let down = bytes(Int.random(in: sizes.randomElement(using: &random)!, using: &random), &random)
            let client = MemoryStream(random: SeededRandom(seed: seed &+ 1000))
            let backend = MemoryStream(random: SeededRandom(seed: seed &+ 2000))
            client.maxRead = [7, 300, 5000, .max].randomElement(using: &random)!
            backend.maxRead = [7, 300, 5000, .max].randomElement(using: &random)!
            client.writeBudget = [5, 1000, .max].randomElement(using: &random)!
            client.queuesLikeTLS = random.chance(0.5)
            backend.writeBudget = [5, 1000, .max].randomElement(using: &random)!
            let relay = Relay(client: client, backend: backend, pool: pool)
            // Each side's bytes arrive in random pieces over time, then its EOF.
            let outcome = drive(relay, rounds: 200_000, between: {
                for (stream, script) in [(client, up), (backend, down)] where !stream.ended {
                    let fed = stream.incoming.count
                    if fed == script.count {
                        if random.chance(0.1) { stream.ended = true }
                    } else if random.chance(0.5) {
                        stream.incoming += script[fed..<min(script.count, fed + Int.random(in: 1...9000, using: &random))]
                    }
                }
            }, until: { $0 == .finished })
            XCTAssertEqual(outcome, .finished, "seed \(seed)")
            assertSameBytes(backend.received, up, "seed \(seed): client to backend")
            assertSameBytes(client.received, down, "seed \(seed): backend to client")
            XCTAssertEqual(backend.receivedAtFinish, up.count, "seed \(seed): FIN before the last bytes")
            XCTAssertEqual(client.receivedAtFinish, down.count, "seed \(seed): close_notify before the last bytes")
            XCTAssertEqual(backend.finishCount, 1, "seed \(seed)")
            XCTAssertEqual(client.finishCount, 1, "seed \(seed)")
            XCTAssertFalse(backend.wroteAfterFinish || client.wroteAfterFinish, "seed \(seed)")
            XCTAssertEqual(client.readsWithoutRoom + backend.readsWithoutRoom, 0, "seed \(seed)")
            XCTAssertEqual(client.retryViolations, 0, "seed \(seed): a queued record was not retried with its bytes")
            XCTAssertEqual(relay.bytesFromClient, up.count, "seed \(seed)")
            XCTAssertEqual(relay.bytesToClient, down.count, "seed \(seed)")
            relay.release()
        }
    }

    func testBackendThatTakesNothingStopsReadingTheClientAtOneBuffer() {
        var random = SeededRandom(seed: 5)
        let up = bytes(4 * BufferPool.bufferSize, &random)
        let client = MemoryStream(), backend = MemoryStream()
        client.incoming = up
        backend.acceptTotal = 0
        let relay = Relay(client: client, backend: backend, pool: pool)
        drive(relay, rounds: 50)
        XCTAssertEqual(client.readCount, BufferPool.bufferSize, "read beyond one buffer while the backend takes nothing")
        XCTAssertEqual(relay.bytesFromClient, BufferPool.bufferSize)
        XCTAssertEqual(client.readsWithoutRoom, 0, "read the client into a full buffer")

        // The other way is not held up by it.
        backend.incoming = Array("response".utf8)
        drive(relay, rounds: 5)
        XCTAssertEqual(client.received, Array("response".utf8))

        backend.acceptTotal = .max
        drive(relay, rounds: 50)
        assertSameBytes(backend.received, up)
        relay.release()
    }

    func testClientEOFReachesTheBackendAfterItsBytesAndTheBackendStillAnswers() {
        let client = MemoryStream(), backend = MemoryStream()
        client.incoming = Array("request".utf8)
        client.ended = true
        backend.acceptTotal = 3
        let relay = Relay(client: client, backend: backend, pool: pool)
        XCTAssertEqual(drive(relay, rounds: 10), .open(moved: false))
        XCTAssertEqual(backend.finishCount, 0, "FIN while bytes before it wait")
        backend.acceptTotal = .max
        drive(relay, rounds: 10)
        XCTAssertEqual(backend.received, Array("request".utf8))
        XCTAssertEqual(backend.receivedAtFinish, 7)

        backend.incoming = Array("answer".utf8)
        XCTAssertEqual(drive(relay, rounds: 10), .open(moved: false), "finished while the backend is still open")
        XCTAssertEqual(client.received, Array("answer".utf8))
        XCTAssertEqual(client.finishCount, 0)
        backend.ended = true
        XCTAssertEqual(drive(relay, rounds: 10, until: { $0 == .finished }), .finished)
        XCTAssertEqual(client.receivedAtFinish, 6)
        relay.release()
    }

    func testBackendEOFBecomesCloseNotifyAfterTheLastBytes() {
        let client = MemoryStream(), backend = MemoryStream()
        backend.incoming = Array("last result".utf8)
        backend.ended = true
        client.acceptTotal = 4
        let relay = Relay(client: client, backend: backend, pool: pool)
        drive(relay, rounds: 10)
        XCTAssertEqual(client.finishCount, 0, "close_notify while bytes before it wait")
        XCTAssertFalse(relay.closeNotifySent)
        client.acceptTotal = .max
        XCTAssertEqual(drive(relay, rounds: 10), .open(moved: false), "finished while the client is still open")
        XCTAssertEqual(client.received, Array("last result".utf8))
        XCTAssertEqual(client.receivedAtFinish, 11)
        XCTAssertTrue(relay.closeNotifySent)
        // The client may still talk; its EOF ends the relay.
        client.incoming = Array("unbind".utf8)
        client.ended = true
        XCTAssertEqual(drive(relay, rounds: 10, until: { $0 == .finished }), .finished)
        XCTAssertEqual(backend.received, Array("unbind".utf8))
        relay.release()
    }

    /// An LDAPMessage: SEQUENCE, definite length, `contentLength` bytes of content.
    private func ldapMessage(contentLength: Int, fill: UInt8) -> [UInt8] {
        let length: [UInt8] = contentLength < 0x80
            ? [UInt8(contentLength)] : [0x82, UInt8(contentLength >> 8), UInt8(contentLength & 0xff)]
        return [0x30] + length + [UInt8](repeating: fill, count: contentLength)
    }

    func testNoticeGoesAtTheNextMessageBoundaryNeverInsideAMessage() {
        let notice: [UInt8] = [0x30, 0x03, 0x02, 0x01, 0x00]
        let messages = [300, 10, 2000, 5, 40_000, 1].enumerated().map { ldapMessage(contentLength: $1, fill: UInt8($0 + 1)) }
        let stream = Array(messages.joined())
        var ends: [Int] = []  // where each message ends in the stream
        for message in messages { ends.append((ends.last ?? 0) + message.count) }
        var sawMidMessage = false

        for seed: UInt64 in 1...60 {
            var random = SeededRandom(seed: seed)
            let client = MemoryStream(random: SeededRandom(seed: seed &+ 10)), backend = MemoryStream()
            client.incoming = Array(repeating: 0x42, count: 1000)
            client.writeBudget = [1, 37, 1000].randomElement(using: &random)!
            client.queuesLikeTLS = seed % 2 == 0
            backend.incoming = stream
            backend.maxRead = [3, 700, .max].randomElement(using: &random)!
            let relay = Relay(client: client, backend: backend, pool: pool)
            drive(relay, rounds: Int.random(in: 0...40, using: &random))
            if client.queuesLikeTLS {
                client.blockNextWrite = true  // the close begins with a record queued
                drive(relay, rounds: 1)
            }
            // A record the client's session queued before the close goes out whole: the
            // notice can only follow the first boundary after it.
            let before = client.received.count + client.queuedCount
            let readFromClient = client.readCount
            let first = relay.closeAtNextBoundary(with: notice)
            // The client goes on sending: none of it may be read any more.
            let outcome = first == .noticeDelivered ? first : drive(relay, rounds: 100_000, between: {
                client.incoming += [0x42, 0x42, 0x42]
            }, until: { $0 == .noticeDelivered })
            XCTAssertEqual(outcome, .noticeDelivered, "seed \(seed)")
            // The message in flight is finished, no further one is started (beyond what
            // a queued record already holds).
            let whole = before == 0 ? 0 : ends.first { $0 >= before }!
            if !ends.contains(before) && before > 0 { sawMidMessage = true }
            assertSameBytes(client.received, Array(stream[0..<whole]) + notice, "seed \(seed): closed at \(before)")
            XCTAssertEqual(client.readCount, readFromClient, "seed \(seed): read the client after closing")
            XCTAssertEqual(client.retryViolations, 0, "seed \(seed): a queued record was not retried with its bytes")
            relay.release()
        }
        XCTAssertTrue(sawMidMessage, "no schedule closed in the middle of a message")
    }

    func testBackendStreamThatIsNotLDAPHasNoBoundary() {
        let client = MemoryStream(), backend = MemoryStream()
        backend.incoming = Array("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".utf8)
        client.acceptTotal = 5
        let relay = Relay(client: client, backend: backend, pool: pool)
        drive(relay, rounds: 5)
        XCTAssertEqual(relay.closeAtNextBoundary(with: [0x30, 0x00]), .open(moved: false))
        client.acceptTotal = .max
        XCTAssertEqual(drive(relay, rounds: 10, until: { $0 != .open(moved: false) && $0 != .open(moved: true) }),
                       .boundaryUnreachable("backend stream is not LDAP"))
        relay.release()
    }

    func testBackendClosingMidMessageHasNoBoundary() {
        let client = MemoryStream(), backend = MemoryStream()
        backend.incoming = Array(ldapMessage(contentLength: 100, fill: 7).prefix(50))
        backend.ended = true
        let relay = Relay(client: client, backend: backend, pool: pool)
        drive(relay, rounds: 5)
        XCTAssertEqual(client.received.count, 50)
        XCTAssertEqual(relay.closeAtNextBoundary(with: [0x30, 0x00]), .boundaryUnreachable("backend closed mid-message"))
        relay.release()
    }

    func testFailuresNameTheSide() {
        let cases: [(String, (MemoryStream, MemoryStream) -> Void)] = [
            ("from client: reset", { client, _ in client.readFailure = "reset" }),
            ("to backend: broken pipe", { client, backend in client.incoming = [1]; backend.writeFailure = "broken pipe" }),
            ("from backend: reset", { _, backend in backend.readFailure = "reset" }),
            ("to client: broken pipe", { client, backend in backend.incoming = [1]; client.writeFailure = "broken pipe" }),
        ]
        for (expected, arrange) in cases {
            let client = MemoryStream(), backend = MemoryStream()
            arrange(client, backend)
            let relay = Relay(client: client, backend: backend, pool: pool)
            XCTAssertEqual(drive(relay, rounds: 3), .failed(expected))
            relay.release()
        }
    }

    func testPrefaceGoesToTheBackendBeforeTheClientsBytes() {
        let client = MemoryStream(), backend = MemoryStream()
        let preface = ProxyProtocolV2Preface.sample
        client.incoming = Array("bind request".utf8)
        backend.writeBudget = 3
        let relay = Relay(client: client, backend: backend, pool: pool, preface: preface)
        drive(relay, rounds: 20)
        XCTAssertEqual(backend.received, preface + Array("bind request".utf8))
        XCTAssertEqual(relay.bytesFromClient, 12, "the preface is not the client's")
        relay.release()
    }
}

private enum ProxyProtocolV2Preface {
    /// The v2 signature and a header of a LOCAL command: any fixed bytes do.
    static let sample: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00]
}
