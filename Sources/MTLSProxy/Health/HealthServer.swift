import Glibc
import Logging
import Prometheus

/// The HTTP health endpoint, served on the first event loop: `/healthz`, `/readyz`,
/// `/metrics`. Requests are limited in size and time; each connection answers one
/// request and closes.
final class HealthServer: EventHandler {
    static let maxRequestBytes = 8192
    static let requestTimeoutNanos: UInt64 = 5_000_000_000

    let fd: Int32
    private unowned let loop: EventLoop
    private let readiness: () -> ReadinessReport
    /// Indices of workers whose loop has not turned lately (empty when all are alive).
    private let stalledWorkers: () -> [Int]
    private let registry: PrometheusCollectorRegistry
    private var open: [Int32: HealthConnection] = [:]

    private var pause: AcceptPause!

    /// Brings the gauges that are read from elsewhere up to date, just before a scrape.
    private let beforeScrape: () -> Void

    init(fd: Int32, loop: EventLoop, registry: PrometheusCollectorRegistry, logger: Logger,
         stalledWorkers: @escaping () -> [Int], beforeScrape: @escaping () -> Void, readiness: @escaping () -> ReadinessReport) {
        self.fd = fd
        self.beforeScrape = beforeScrape
        self.stalledWorkers = stalledWorkers
        self.loop = loop
        self.registry = registry
        self.readiness = readiness
        var logger = logger
        logger[metadataKey: "listener"] = "health"
        pause = AcceptPause(fd: fd, handler: self, loop: loop, logger: logger)
    }

    func start() { loop.register(fd: fd, events: Epoll.input, handler: self) }

    /// The process is ending: requests still in flight (a balancer's check) go with it.
    deinit { for connection in open.values { connection.dropAtExit() } }

    func handleEvent(fd: Int32, events: UInt32) {
        for _ in 0..<16 {
            let result = Socket.accept(fd)
            if case .exhausted(let error) = result { return pause.failed(error) }  // see AcceptPause
            guard case .accepted(let socket, _) = result else { return }
            let connection = HealthConnection(socket: socket, server: self, loop: loop)
            open[socket.raw] = connection
            connection.start()
        }
    }

    func closed(_ connection: HealthConnection) { open[connection.fd] = nil }

    func respond(to result: HTTPRequestHead.ParseResult) -> HTTPResponse {
        guard case .request(let head) = result else {
            return HTTPResponse(status: 400, contentType: "text/plain", body: "bad request\n")
        }
        guard ["/healthz", "/readyz", "/metrics"].contains(head.path) else {
            return HTTPResponse(status: 404, contentType: "text/plain", body: "not found\n")
        }
        guard head.method == "GET" || head.method == "HEAD" else {
            return HTTPResponse(status: 405, contentType: "text/plain", body: "method not allowed\n")
        }
        var response: HTTPResponse
        switch head.path {
        case "/healthz":
            // This loop answers; every loop stamps a heartbeat each second.
            let stalled = stalledWorkers()
            response = stalled.isEmpty
                ? HTTPResponse(status: 200, contentType: "text/plain", body: "ok\n")
                : HTTPResponse(status: 503, contentType: "text/plain",
                               body: "event loop of worker \(stalled.map(String.init).joined(separator: ", ")) not answering\n")
        case "/readyz":
            let report = readiness()
            response = HTTPResponse(status: report.isReady ? 200 : 503, contentType: "application/json", body: report.json)
        default:
            beforeScrape()
            response = HTTPResponse(
                status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: registry.emitToString())
        }
        if head.method == "HEAD" { response.body = "" }
        return response
    }
}

final class HealthConnection: EventHandler {
    private let socket: Descriptor
    var fd: Int32 { socket.raw }
    private unowned let server: HealthServer
    private unowned let loop: EventLoop
    private var request: [UInt8] = []
    private var response: [UInt8] = []
    private var sent = 0
    private var closed = false
    private lazy var timer = loop.timer { [unowned self] now in self.timerFired(now: now) }

    init(socket: Descriptor, server: HealthServer, loop: EventLoop) {
        self.socket = socket
        self.server = server
        self.loop = loop
    }

    func start() {
        loop.register(fd: fd, events: Epoll.input, handler: self)
        timer.arm(at: monotonicNanos() + HealthServer.requestTimeoutNanos)
    }

    private var lingering = false

    func handleEvent(fd: Int32, events: UInt32) {
        if lingering { return drain() }
        if response.isEmpty { readRequest() } else { writeResponse() }
    }

    private func readRequest() {
        var chunk = [UInt8](repeating: 0, count: 2048)
        reading: while true {
            switch socket.receive(into: &chunk) {
            case .processed(let n):
                request.append(contentsOf: chunk[0..<n])
                if request.count > HealthServer.maxRequestBytes {
                    return reply(HTTPResponse(status: 431, contentType: "text/plain", body: "request too large\n"))
                }
            case .wouldBlock: break reading
            case .closed, .failed: return finish()
            }
        }
        let parsed = HTTPRequestHead.parse(request)
        if parsed != .incomplete { reply(server.respond(to: parsed)) }
    }

    private func reply(_ answer: HTTPResponse) {
        response = answer.serialized()
        loop.modify(fd: fd, events: Epoll.output)
        writeResponse()
    }

    private func writeResponse() {
        while sent < response.count {
            switch socket.send(response, from: sent) {
            case .processed(let n): sent += n
            case .wouldBlock: return
            case .closed, .failed: return finish()
            }
        }
        linger()
    }

    /// After the response: stop writing and drop what the client still sends (an
    /// oversized request) until it closes, so that it reads the answer instead of a reset.
    private func linger() {
        lingering = true
        socket.shutdownWrite()
        loop.modify(fd: fd, events: Epoll.input)
        timer.cancel()
        timer.arm(at: monotonicNanos() + 1_000_000_000)
        drain()
    }

    private func drain() {
        if socket.discardInput() != .wouldBlock { finish() }
    }

    private func timerFired(now: UInt64) {
        if response.isEmpty && !lingering {
            return reply(HTTPResponse(status: 408, contentType: "text/plain", body: "request timeout\n"))
        }
        finish()
    }

    func dropAtExit() {
        closed = true
        socket.close()
    }

    private func finish() {
        guard !closed else { return }
        closed = true
        timer.cancel()
        loop.deregister(fd: fd)
        socket.close()
        server.closed(self)
    }
}
