import CGnuTLSShim
import Glibc
import Logging
import Synchronization
import XCTest

@testable import MTLSProxy

/// A real ClientConnection in a Worker whose event loop runs on the test's thread, its
/// client a TLSSession on a thread of its own at the other end of a socketpair, its
/// backend a loopback listener of the test. The phases are watched from a loop timer.
final class ConnectionPhaseTests: XCTestCase {
    /// Made fresh for each test (ECDSA keys are quick), its folder removed after it.
    private var pki: TestPKI!

    override func setUp() { pki = TestPKI() }
    override func tearDown() { pki = nil }

    func testClientWithoutCertificateLingersThenClosesAsRefused() throws {
        let run = try PhaseRun(pki: pki!)
        let client = run.startClient(withCertificate: false) { tls, gate in
            var events = ["handshake \(tls.handshakeToEnd())"]
            var buffer = [UInt8](repeating: 0, count: 256)
            events.append("read \(buffer.withUnsafeMutableBytes { tls.read(into: $0) })")
            gate.wait()  // the proxy is lingering: now go
            return events
        }
        run.openGateWhen(.lingering)
        run.runLoop()
        let clientEvents = client.finish()

        XCTAssertEqual(run.phases, [.handshaking, .lingering, .closed])
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.message, "connection refused")
        XCTAssertEqual(line.metadata["end"], "refused")
        XCTAssertEqual(line.metadata["reason"], "no_certificate")
        XCTAssertEqual(run.counter("handshake_failures", label: "reason=\"no_certificate\""), 1)
        XCTAssertEqual(run.counter("connections", label: "outcome=\"refused\""), 1)
        XCTAssertFalse(clientEvents.contains { $0.contains("processed") }, "the refused client got data: \(clientEvents)")
        XCTAssertEqual(run.backend.acceptedCount, 0, "a refused client must never reach the backend")
    }

    func testGoodClientIsRelayedBothWaysThenClosedCleanly() throws {
        let run = try PhaseRun(pki: pki!)
        run.backend.serveUppercase()
        let client = run.startClient(withCertificate: true) { tls, gate in
            var events = ["handshake \(tls.handshakeToEnd())"]
            gate.wait()  // the proxy is relaying
            let request = Array("hello proxy".utf8)
            events.append("write \(request.withUnsafeBytes { tls.write($0) })")
            var answer: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 256)
            while answer.count < request.count {
                guard case .processed(let n) = buffer.withUnsafeMutableBytes({ tls.read(into: $0) }) else { break }
                answer += buffer[0..<n]
            }
            events.append("answer \(String(decoding: answer, as: UTF8.self))")
            events.append("finish \(tls.finishWriting())")
            events.append("then \(buffer.withUnsafeMutableBytes { tls.read(into: $0) })")  // close_notify from the proxy
            return events
        }
        run.openGateWhen(.relaying)
        run.runLoop()
        let clientEvents = client.finish()

        XCTAssertEqual(clientEvents, ["handshake completed", "write processed(11)", "answer HELLO PROXY", "finish true", "then closed"])
        XCTAssertEqual(run.phases, [.handshaking, .relaying, .closed])
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.message, "connection closed")
        XCTAssertEqual(line.metadata["end"], "closed")
        XCTAssertEqual(line.metadata["bytes_in"], "11")
        XCTAssertEqual(line.metadata["bytes_out"], "11")
        XCTAssertEqual(line.metadata["subject"], "CN=client,OU=tests")
        XCTAssertEqual(run.counter("connections", label: "outcome=\"closed\""), 1)
        XCTAssertEqual(run.backend.acceptedCount, 1)
    }

    func testSilentClientIsClosedAtTheHandshakeTimeout() throws {
        let run = try PhaseRun(pki: pki!) { $0.handshakeTimeoutNanos = 200_000_000 }
        run.runLoop()  // the client end stays open and says nothing
        XCTAssertEqual(run.phases, [.handshaking, .closed])
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.metadata["end"], "handshake_timeout")
        XCTAssertEqual(run.counter("handshake_failures", label: "reason=\"handshake_timeout\""), 1)
        XCTAssertEqual(run.counter("connections", label: "outcome=\"handshake_timeout\""), 1)
        XCTAssertEqual(run.backend.acceptedCount, 0)
    }

    func testQuietRelayIsClosedAtTheIdleTimeout() throws {
        let run = try PhaseRun(pki: pki!) { $0.idleTimeoutNanos = 300_000_000 }
        run.backend.serveUppercase()
        let client = run.startClient(withCertificate: true, handshakeThenReadOnce)  // nothing comes, then close_notify
        run.runLoop()
        XCTAssertEqual(client.finish(), ["handshake completed", "then closed"])
        XCTAssertEqual(run.phases, [.handshaking, .relaying, .closed])
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.metadata["end"], "idle_timeout")
        XCTAssertEqual(line.metadata["detail"], "no bytes either way for 300ms")
        XCTAssertEqual(run.backend.acceptedCount, 1)
    }

    func testBackendRefusingTheConnectEndsAsBackendUnavailable() throws {
        let run = try PhaseRun(pki: pki!) { $0.backend = .inet(host: "127.0.0.1", port: closedPort()) }
        let client = run.startClient(withCertificate: true, handshakeThenReadOnce)
        run.runLoop()
        XCTAssertEqual(client.finish(), ["handshake completed", "then closed"])
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.metadata["end"], "backend_unavailable")
        XCTAssertTrue(line.metadata["detail"]?.contains("refused") == true, "\(line.metadata)")
    }

    func testRevokedWhileRelayingGetsTheNoticeAtAMessageBoundary() throws {
        let run = try PhaseRun(pki: pki!)
        run.backend.serveUppercase()
        // An abandon request: no byte of it changes in upper case, so the echo is LDAP.
        let abandon: [UInt8] = [0x30, 0x06, 0x02, 0x01, 0x05, 0x50, 0x01, 0x01]
        let echoed = Gate()
        let client = run.startClient(withCertificate: true) { tls, _ in
            var events = ["handshake \(tls.handshakeToEnd())"]
            events.append("write \(abandon.withUnsafeBytes { tls.write($0) })")
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 256)
            while received.count < abandon.count, case .processed(let n) = buffer.withUnsafeMutableBytes({ tls.read(into: $0) }) {
                received += buffer[0..<n]
            }
            events.append("echo \(received == abandon)")
            echoed.open()
            received = []
            while case .processed(let n) = buffer.withUnsafeMutableBytes({ tls.read(into: $0) }) { received += buffer[0..<n] }
            events.append("notice \(received == NoticeOfDisconnection.revoked)")
            return events
        }
        var told = false
        run.onTick = { connection in
            guard echoed.isOpen, !told else { return }
            told = true
            connection.closeWithNotice(NoticeOfDisconnection.revoked, end: .revoked, detail: "certificate revoked by a new CRL")
        }
        run.runLoop()
        XCTAssertEqual(client.finish(), ["handshake completed", "write processed(8)", "echo true", "notice true"])
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.metadata["end"], "revoked")
        XCTAssertEqual(line.metadata["detail"], "certificate revoked by a new CRL; Notice of Disconnection sent")
    }

    func testSilentOCSPResponderUnderStrictPolicyIsRefusedAfterItsTimeout() throws {
        let responder = try TestBackend()
        defer { responder.close() }
        let run = try PhaseRun(pki: pki!) { $0.askOCSP(ofSilent: responder, timeoutNanos: 300_000_000) }
        let client = run.startClient(withCertificate: true, handshakeThenReadOnce)
        run.runLoop()
        let events = client.finish()
        XCTAssertEqual(events.first, "handshake completed")
        // The refusal's alert (TLSSession words what the peer sent as "client sent").
        XCTAssertTrue(events.last?.hasSuffix("alert: certificate_unknown\")") == true, "\(events)")
        // The lingering after the alert ends as soon as the client closes: too short to see.
        XCTAssertEqual(run.phases.filter { $0 != .lingering }, [.handshaking, .admitting, .closed])
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.metadata["reason"], "ocsp_unavailable")
        XCTAssertEqual(run.backend.acceptedCount, 0, "nothing reaches the backend before the admission says yes")
    }

    func testRevokedWhileTheAdmissionRunsIsRefusedWithTheRevokedAlert() throws {
        let responder = try TestBackend()
        defer { responder.close() }
        let run = try PhaseRun(pki: pki!) { $0.askOCSP(ofSilent: responder, timeoutNanos: 5_000_000_000) }
        let client = run.startClient(withCertificate: true, handshakeThenReadOnce)
        run.onTick = { connection in
            guard connection.phase == .admitting else { return }
            connection.closeWithNotice(NoticeOfDisconnection.revoked, end: .revoked, detail: "certificate revoked by a new CRL")
        }
        run.runLoop()
        let events = client.finish()
        XCTAssertEqual(events.first, "handshake completed")
        XCTAssertTrue(events.last?.hasSuffix("alert: certificate_revoked\")") == true, "\(events)")
        let line = try XCTUnwrap(run.logs.lines.last)
        XCTAssertEqual(line.metadata["reason"], "revoked")
        XCTAssertEqual(line.metadata["detail"], "certificate revoked by a new CRL")
        XCTAssertEqual(run.backend.acceptedCount, 0)
    }
}

extension ListenerConfig {
    /// OCSP on the leaf, asked of `responder`: a listening socket that takes the
    /// connection and never answers, so the admission waits until `timeoutNanos`.
    fileprivate mutating func askOCSP(ofSilent responder: TestBackend, timeoutNanos: UInt64) {
        revocation.ocsp = .leaf
        revocation.ocspResponder = HTTPURL("http://127.0.0.1:\(responder.port)/")
        revocation.ocspTimeoutNanos = timeoutNanos
    }
}

/// A client that completes its handshake, then reads once: what ends the connection.
private func handshakeThenReadOnce(_ tls: TLSSession, _ gate: Gate) -> [String] {
    var events = ["handshake \(tls.handshakeToEnd())"]
    var buffer = [UInt8](repeating: 0, count: 256)
    events.append("then \(buffer.withUnsafeMutableBytes { tls.read(into: $0) })")
    return events
}

/// A loopback port with nothing listening on it (bound, then closed).
private func closedPort() -> UInt16 {
    let fd = try! Socket.listen(on: SocketAddress.resolve(.inet(host: "127.0.0.1", port: 0)), reusePort: false)
    let port = Socket.localAddress(fd).ipBytesAndPort!.port
    Glibc.close(fd)
    return port
}

// MARK: - The parts of a run

/// One connection's world: worker, listener, backend, socketpair, logs.
private final class PhaseRun {
    let worker: Worker
    let listener: ListenerRuntime
    let metrics = ProxyMetrics()
    let logs = LogStore()
    let backend: TestBackend
    let connection: ClientConnection
    let clientFD: Int32
    let gate = Gate()
    private(set) var phases: [ClientConnection.Phase] = []
    private var gatePhase: ClientConnection.Phase?
    private let pki: TestPKI

    init(pki: TestPKI, configure: (inout ListenerConfig) -> Void = { _ in }) throws {
        self.pki = pki
        backend = try TestBackend()
        var config = pki.listenerConfig()
        config.listen = .inet(host: "127.0.0.1", port: 1)  // never bound: the test hands the connection over
        config.backend = .inet(host: "127.0.0.1", port: backend.port)
        configure(&config)
        worker = try Worker(index: 0)
        let logs = self.logs
        listener = try ListenerRuntime(
            config: config, trust: try TrustState(config: config), directoryPassword: [], backendPassword: [],
            metrics: metrics.listener("test"), logger: Logger(label: "test") { _ in CapturingLogHandler(store: logs) })
        var fds: [Int32] = [0, 0]
        precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        precondition(fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK) == 0)
        clientFD = fds[1]
        // A client thread never waits longer than this, whatever the proxy does.
        var timeout = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(clientFD, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        precondition(listener.reserveSlot())
        connection = ClientConnection(socket: Descriptor(fds[0]), peer: SocketAddress(), listener: listener,
                                      trust: listener.trust, worker: worker)
        worker.live.adopt(connection)
    }

    deinit {
        gate.open()
        Glibc.close(clientFD)
        backend.close()
    }

    /// A client TLSSession on its own thread over the client end; `body` returns what
    /// it saw.
    func startClient(withCertificate: Bool, _ body: @escaping (TLSSession, Gate) -> [String]) -> ClientThread {
        ClientThread(fd: clientFD, credentials: pki.clientCredentials(withCertificate: withCertificate), gate: gate, body: body)
    }

    /// Opens the client's gate once the connection is in `phase`.
    func openGateWhen(_ phase: ClientConnection.Phase) { gatePhase = phase }

    /// Runs on the loop every millisecond while the connection is open (what the
    /// operator's side does to it: a new CRL, a shutdown).
    var onTick: ((ClientConnection) -> Void)?

    /// Starts the connection and runs the loop until it is closed (10 s at most).
    func runLoop() {
        let loop = worker.loop
        let limit = monotonicNanos() + 10_000_000_000
        let watch = loop.every(1_000_000, startNow: true) { [unowned self] now in
            let phase = connection.phase
            if phases.last != phase { phases.append(phase) }
            if phase == gatePhase { gate.open() }
            if phase != .closed { onTick?(connection) }
            if phase == .closed || now > limit { loop.stop() }
        }
        phases.append(connection.phase)
        connection.start()
        loop.run()
        watch.cancel()
        // Stuck (a failing test): closing ends the client's and the backend's reads.
        if connection.phase != .closed { connection.close(.error, detail: "the test gave up") }
        gate.open()  // a client still waiting for a phase that never came goes on, and ends
    }

    /// A counter of the listener's metrics, by name and one label, as /metrics shows it.
    func counter(_ name: String, label: String) -> Int? {
        for line in metrics.registry.emitToString().split(separator: "\n")
        where line.hasPrefix("mtls_proxy_\(name)_total{") && line.contains(label) {
            return Int(line.split(separator: " ").last!)
        }
        return nil
    }
}

/// A pipe the client thread waits on until the test's loop opens it.
final class Gate: @unchecked Sendable {  // two descriptors, written once
    private let fds: [Int32]
    private let opened = Atomic<Bool>(false)

    init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0)
        self.fds = fds
    }

    deinit { fds.forEach { _ = Glibc.close($0) } }

    func open() {
        guard !opened.exchange(true, ordering: .relaxed) else { return }
        var byte: UInt8 = 1
        _ = Glibc.write(fds[1], &byte, 1)
    }

    var isOpen: Bool { opened.load(ordering: .relaxed) }

    func wait() {
        var byte: UInt8 = 0
        _ = Glibc.read(fds[0], &byte, 1)
    }
}

/// The client's TLS session on a thread of its own, over a blocking socket.
private final class ClientThread: @unchecked Sendable {  // handed to the thread whole, read after join
    private let fd: Int32
    private let credentials: ClientCredentials
    private let gate: Gate
    private let body: (TLSSession, Gate) -> [String]
    private var thread: pthread_t?
    private var events: [String] = []

    init(fd: Int32, credentials: ClientCredentials, gate: Gate, body: @escaping (TLSSession, Gate) -> [String]) {
        self.fd = fd
        self.credentials = credentials
        self.gate = gate
        self.body = body
        let box = UncheckedBox(self)
        thread = Threads.spawn { box.value.run() }
    }

    private func run() {
        do {
            let tls = try TLSSession(client: credentials.raw, owner: credentials, transport: BlockingSocketTransport(fd: fd))
            events = body(tls, gate)
        } catch {
            events = ["\(error)"]
        }
        shutdown(fd, Int32(SHUT_RDWR))  // the proxy reads EOF
    }

    /// Waits for the thread; what the client saw.
    func finish() -> [String] {
        if let thread { Threads.join(thread) }
        thread = nil
        return events
    }
}

extension TLSSession {
    /// The handshake over a blocking transport: one call runs it to the end.
    func handshakeToEnd() -> HandshakeStep {
        while true {
            let step = handshake()
            if step != .yielded && step != .wouldBlock { return step }
        }
    }
}

/// A blocking socket as a TLS transport, for a client on a thread of its own.
final class BlockingSocketTransport: TLSTransport {
    let fd: Int32

    init(fd: Int32) { self.fd = fd }

    var hasBufferedInput: Bool { false }

    func pull(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        let n = recv(fd, buffer.baseAddress, buffer.count, 0)
        return n > 0 ? .processed(n) : n == 0 ? .closed : .failed(SystemError.describe(errno))
    }

    func push(_ vectors: UnsafePointer<iovec>, count: Int32) -> IOResult {
        var message = msghdr()
        message.msg_iov = UnsafeMutablePointer(mutating: vectors)
        message.msg_iovlen = Int(count)
        let n = sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
        return n >= 0 ? .processed(n) : .failed(SystemError.describe(errno))
    }
}

/// The backend: a loopback listener; when asked, a thread that answers each read with
/// the same bytes in upper case until EOF.
private final class TestBackend: @unchecked Sendable {  // the counter is atomic; fd fixed
    let fd: Int32
    let port: UInt16
    private let accepted = Atomic<Int>(0)
    private var thread: pthread_t?

    init() throws {
        fd = try Socket.listen(on: SocketAddress.resolve(.inet(host: "127.0.0.1", port: 0)), reusePort: false)
        port = Socket.localAddress(fd).ipBytesAndPort!.port
    }

    var acceptedCount: Int {
        // A connection still in the queue counts too: the proxy reached the backend.
        var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return accepted.load(ordering: .relaxed) + (poll(&probe, 1, 0) > 0 ? 1 : 0)
    }

    func serveUppercase() {
        let box = UncheckedBox(self)
        thread = Threads.spawn {
            let me = box.value
            var probe = pollfd(fd: me.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&probe, 1, 10_000) == 1 else { return }
            let connection = accept(me.fd, nil, nil)  // blocking: O_NONBLOCK is not inherited
            guard connection >= 0 else { return }
            me.accepted.add(1, ordering: .relaxed)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = recv(connection, &buffer, buffer.count, 0)
                if n <= 0 { break }
                let upper = buffer[0..<n].map { $0 >= 0x61 && $0 <= 0x7a ? $0 - 0x20 : $0 }
                _ = send(connection, upper, n, Int32(MSG_NOSIGNAL))
            }
            Glibc.close(connection)
        }
    }

    func close() {
        if let thread { Threads.join(thread) }
        Glibc.close(fd)
    }
}

/// Log lines kept for the test to read.
final class LogStore: Sendable {
    struct Line: Sendable {
        let message: String
        let metadata: [String: String]
    }

    private let stored = Mutex<[Line]>([])

    var lines: [Line] { stored.withLock { $0 } }

    func append(_ line: Line) { stored.withLock { $0.append(line) } }
}

struct CapturingLogHandler: LogHandler {
    let store: LogStore
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        store.append(.init(message: "\(event.message)", metadata: merged.mapValues { "\($0)" }))
    }
}
