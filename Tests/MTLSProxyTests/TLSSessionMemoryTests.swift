import CGnuTLSShim
import XCTest

@testable import MTLSProxy

/// Two real TLSSessions, a server under a TrustState and a client with GnuTLS client
/// credentials, joined by memory instead of a socket: the session's handshake loop, its
/// records and its close, under any cut of the bytes.
final class TLSSessionMemoryTests: XCTestCase {
    /// Made fresh for each test (ECDSA keys are quick), its folder removed after it.
    private var pki: TestPKI!

    override func setUp() { pki = TestPKI() }
    override func tearDown() { pki = nil }

    /// Both ends of one connection, with what the server's verify callback saw.
    private final class Pair {
        let trust: TrustState
        let credentials: ClientCredentials
        let serverTransport: MemoryTransport
        let clientTransport: MemoryTransport
        let server: TLSSession
        let client: TLSSession
        var peerCertificateCalls = 0

        init(pki: TestPKI, clientCertificate: Bool = true, clientPriority: String = "NORMAL",
             seed: UInt64? = nil, accept: Bool = true) throws {
            trust = try TrustState(config: pki.listenerConfig())
            credentials = pki.clientCredentials(withCertificate: clientCertificate)
            (serverTransport, clientTransport) = MemoryTransport.pair(seed: seed)
            server = try TLSSession(server: trust, transport: serverTransport)
            client = try TLSSession(client: credentials.raw, owner: credentials, priority: clientPriority,
                                    transport: clientTransport)
            server.onPeerCertificates = { [unowned self] in
                peerCertificateCalls += 1
                return accept
            }
        }

        /// Runs both handshakes in turn until each has ended. A side that would block is
        /// called again only when its inbox was signalled (an edge-triggered event), so
        /// a handshake that stops while bytes wait for it stalls here as it would in the
        /// proxy.
        func handshake() -> (server: HandshakeStep, client: HandshakeStep) {
            var serverStep = HandshakeStep.yielded, clientStep = HandshakeStep.yielded
            for _ in 0..<100_000 {
                var called = false
                if !Self.ended(clientStep) && (clientStep == .yielded || clientTransport.inbox.signalled) {
                    clientTransport.inbox.signalled = false
                    clientStep = client.handshake()
                    called = true
                }
                if !Self.ended(serverStep) && (serverStep == .yielded || serverTransport.inbox.signalled) {
                    serverTransport.inbox.signalled = false
                    serverStep = server.handshake()
                    called = true
                }
                if Self.ended(serverStep) && Self.ended(clientStep) || !called { break }
                // A failed side is gone: the other reads EOF rather than waiting forever.
                if case .failed = serverStep { serverTransport.outbox.close() }
                if case .failed = clientStep { clientTransport.outbox.close() }
            }
            return (serverStep, clientStep)
        }

        private static func ended(_ step: HandshakeStep) -> Bool {
            switch step {
            case .completed, .failed: return true
            case .wouldBlock, .yielded: return false
            }
        }
    }

    /// Writes all of `bytes` from one session while the other reads, until the reader
    /// has them all; a write that would block is retried with the same bytes. The reader
    /// reads until it would block, and again only when its inbox was signalled.
    private func transfer(_ bytes: [UInt8], from writer: TLSSession,
                          to reader: TLSSession, readerTransport: MemoryTransport,
                          file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
        var sent = 0
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while received.count < bytes.count {
            var moved = false
            if sent < bytes.count {
                let result = bytes[sent...].withUnsafeBytes { writer.write($0) }
                switch result {
                case .processed(let n): sent += n; moved = true
                case .wouldBlock: break
                default: XCTFail("write: \(result)", file: file, line: line); return received
                }
            }
            guard readerTransport.inbox.signalled || reader.hasBufferedInput else {
                if !moved { break }  // nothing will ever come
                continue
            }
            readerTransport.inbox.signalled = false
            reading: while true {
                let result = buffer.withUnsafeMutableBytes { reader.read(into: $0) }
                switch result {
                case .processed(let n): received += buffer[0..<n]
                case .wouldBlock: break reading
                default: XCTFail("read: \(result)", file: file, line: line); return received
                }
            }
        }
        return received
    }

    private func payload(_ count: Int, seed: UInt64) -> [UInt8] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    func testTLS13HandshakeWithClientCertificateThenDataBothWays() throws {
        let pair = try Pair(pki: pki!)
        let steps = pair.handshake()
        XCTAssertEqual(steps.server, .completed)
        XCTAssertEqual(steps.client, .completed)
        XCTAssertTrue(pair.server.isTLS13)
        XCTAssertEqual(pair.peerCertificateCalls, 1, "the verify callback decides once per handshake")

        let request = Array("hello from the client".utf8)
        assertSameBytes(transfer(request, from: pair.client, to: pair.server, readerTransport: pair.serverTransport), request)
        let response = payload(3 * TLSSession.maxRecordSize + 123, seed: 1)  // several records
        assertSameBytes(transfer(response, from: pair.server, to: pair.client, readerTransport: pair.clientTransport), response)
    }

    func testHandshakeAndDataUnderRandomShortReadsAndSpuriousWouldBlock() throws {
        for seed: UInt64 in 1...8 {
            let pair = try Pair(pki: pki!, seed: seed)
            let steps = pair.handshake()
            XCTAssertEqual(steps.server, .completed, "seed \(seed)")
            XCTAssertEqual(steps.client, .completed, "seed \(seed)")
            XCTAssertEqual(pair.peerCertificateCalls, 1, "seed \(seed)")
            let up = payload(20_000, seed: seed &* 7)
            let down = payload(40_000, seed: seed &* 11)
            assertSameBytes(transfer(up, from: pair.client, to: pair.server, readerTransport: pair.serverTransport), up, "seed \(seed)")
            assertSameBytes(transfer(down, from: pair.server, to: pair.client, readerTransport: pair.clientTransport), down, "seed \(seed)")
        }
    }

    /// Handshake messages cut into several records (each side asks for records of at
    /// most 512 bytes, the least GnuTLS allows; each Certificate message holds two): GnuTLS answers AGAIN after each record that does not finish a
    /// message, and the handshake must read on rather than wait for an event that the
    /// bytes already waiting will never raise.
    func testHandshakeMessagesSpanningManyRecords() throws {
        let pair = try Pair(pki: pki!)
        XCTAssertEqual(gnutls_record_set_max_recv_size(pair.server.handle, 512), 0)
        XCTAssertEqual(gnutls_record_set_max_recv_size(pair.client.handle, 512), 0)
        let steps = pair.handshake()
        XCTAssertEqual(steps.server, .completed)
        XCTAssertEqual(steps.client, .completed)
        XCTAssertEqual(pair.peerCertificateCalls, 1)
        let data = payload(1000, seed: 4)
        assertSameBytes(transfer(data, from: pair.server, to: pair.client, readerTransport: pair.clientTransport), data)
    }

    /// A TLS 1.3 KeyUpdate is a record without data: the read after it must go on to the
    /// data record behind it instead of reporting "would block".
    func testDataAfterAKeyUpdateIsRead() throws {
        let pair = try Pair(pki: pki!)
        XCTAssertEqual(pair.handshake().server, .completed)
        XCTAssertEqual(gnutls_session_key_update(pair.server.handle, 0), 0)
        let data = Array("after the key update".utf8)
        assertSameBytes(transfer(data, from: pair.server, to: pair.client, readerTransport: pair.clientTransport), data)
        assertSameBytes(transfer(data, from: pair.client, to: pair.server, readerTransport: pair.serverTransport), data)
    }

    func testTLS12Handshake() throws {
        let pair = try Pair(pki: pki!, clientPriority: "NORMAL:-VERS-ALL:+VERS-TLS1.2", seed: 42)
        let steps = pair.handshake()
        XCTAssertEqual(steps.server, .completed)
        XCTAssertEqual(steps.client, .completed)
        XCTAssertFalse(pair.server.isTLS13)
        XCTAssertEqual(pair.server.protocolName, "TLS1.2")
        XCTAssertEqual(pair.peerCertificateCalls, 1)
        let data = payload(TLSSession.maxRecordSize + 1, seed: 3)
        assertSameBytes(transfer(data, from: pair.server, to: pair.client, readerTransport: pair.clientTransport), data)
        assertSameBytes(transfer(data, from: pair.client, to: pair.server, readerTransport: pair.serverTransport), data)
    }

    func testClientWithoutCertificateIsRefusedAsNoCertificate() throws {
        for priority in ["NORMAL", "NORMAL:-VERS-ALL:+VERS-TLS1.2"] {
            let pair = try Pair(pki: pki!, clientCertificate: false, clientPriority: priority)
            let steps = pair.handshake()
            guard case .failed(let rc) = steps.server else {
                XCTFail("\(priority): the server must refuse a client without a certificate, got \(steps.server)")
                continue
            }
            XCTAssertEqual(pair.server.refusal(afterHandshakeError: rc).reason, .noCertificate, priority)
            XCTAssertEqual(pair.peerCertificateCalls, 0, priority)
        }
    }

    func testVerifyCallbackSayingNoFailsTheHandshake() throws {
        let pair = try Pair(pki: pki!, accept: false)
        let steps = pair.handshake()
        guard case .failed = steps.server else { return XCTFail("server: \(steps.server)") }
        XCTAssertEqual(pair.peerCertificateCalls, 1)
    }

    func testCloseNotifyReadsAsClosed() throws {
        let pair = try Pair(pki: pki!)
        XCTAssertEqual(pair.handshake().server, .completed)
        let last = Array("last words".utf8)
        assertSameBytes(transfer(last, from: pair.server, to: pair.client, readerTransport: pair.clientTransport), last)
        XCTAssertTrue(pair.server.finishWriting())
        var buffer = [UInt8](repeating: 0, count: 100)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { pair.client.read(into: $0) }, .closed)
        // The other way is still open: a half-close, not the end of the session.
        let reply = Array("still here".utf8)
        assertSameBytes(transfer(reply, from: pair.client, to: pair.server, readerTransport: pair.serverTransport), reply)
    }

    /// Java ends a TLS 1.3 session with user_canceled, then close_notify: a closure
    /// alert (RFC 8446 §6.1), so a normal end, named for the log line, whatever level
    /// it comes at. Any other fatal alert is a failure that names the alert.
    func testUserCanceledThenCloseNotifyIsANormalEnd() throws {
        for level in [GNUTLS_AL_WARNING, GNUTLS_AL_FATAL] {
            let pair = try Pair(pki: pki!)
            XCTAssertEqual(pair.handshake().server, .completed)
            XCTAssertEqual(gnutls_alert_send(pair.client.handle, level, GNUTLS_A_USER_CANCELED), 0)
            if level == GNUTLS_AL_WARNING { XCTAssertTrue(pair.client.finishWriting()) }
            var buffer = [UInt8](repeating: 0, count: 100)
            XCTAssertEqual(buffer.withUnsafeMutableBytes { pair.server.read(into: $0) }, .closed, "level \(level)")
            XCTAssertEqual(pair.server.receivedAlert, "user_canceled")
        }
        let pair = try Pair(pki: pki!)
        XCTAssertEqual(pair.handshake().server, .completed)
        XCTAssertEqual(gnutls_alert_send(pair.client.handle, GNUTLS_AL_FATAL, GNUTLS_A_INTERNAL_ERROR), 0)
        var buffer = [UInt8](repeating: 0, count: 100)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { pair.server.read(into: $0) }, .failed("client sent alert: internal_error"))
    }

    func testWriteThatWouldBlockIsRetriedWithTheSameBytes() throws {
        let pair = try Pair(pki: pki!)
        XCTAssertEqual(pair.handshake().server, .completed)
        let data = payload(TLSSession.maxRecordSize + 5000, seed: 9)
        pair.serverTransport.outboxCapacity = pair.serverTransport.outbox.count + 100  // room for a fraction of a record
        let first = data.withUnsafeBytes { pair.server.write($0) }
        XCTAssertEqual(first, .wouldBlock)
        XCTAssertTrue(pair.server.hasPendingWrite, "the record is queued inside GnuTLS")
        pair.serverTransport.outboxCapacity = .max
        let retry = data.withUnsafeBytes { pair.server.write($0) }
        XCTAssertEqual(retry, .processed(TLSSession.maxRecordSize), "the retry sends the queued record, once")
        XCTAssertFalse(pair.server.hasPendingWrite)
        let rest = data[TLSSession.maxRecordSize...].withUnsafeBytes { pair.server.write($0) }
        XCTAssertEqual(rest, .processed(5000))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while case .processed(let n) = buffer.withUnsafeMutableBytes({ pair.client.read(into: $0) }) {
            received += buffer[0..<n]
        }
        XCTAssertEqual(received, data, "every byte exactly once, in order")
    }
}
