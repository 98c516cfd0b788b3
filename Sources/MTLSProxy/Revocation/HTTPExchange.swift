import Glibc
import Synchronization

/// One HTTP/1.1 request and its response, on an event loop, never blocking it: a
/// non-blocking connect, the request written as the socket takes it, the response read
/// as it arrives, the whole within `timeout`. `done` runs once, on the loop. The loop's
/// handler table keeps the exchange alive until it finishes.
final class HTTPExchange: EventHandler {
    private unowned let loop: EventLoop
    private let url: HTTPURL
    private var output: [UInt8]
    private var input: [UInt8] = []
    private let maxBody: Int
    private var done: ((Result<HTTPReply, OCSPFailure>) -> Void)?
    private var socket: Descriptor?
    private var connected = false
    private var timer: LoopTimer?

    private init(loop: EventLoop, url: HTTPURL, request: [UInt8], maxBody: Int,
                 done: @escaping (Result<HTTPReply, OCSPFailure>) -> Void) {
        self.loop = loop
        self.url = url
        output = request
        self.maxBody = maxBody
        self.done = done
    }

    /// Sends `request` to `url` from `loop`; `done` gets the response or why there is none.
    static func start(on loop: EventLoop, url: HTTPURL, request: [UInt8], timeoutNanos: UInt64, maxBody: Int,
                      done: @escaping (Result<HTTPReply, OCSPFailure>) -> Void) {
        let exchange = HTTPExchange(loop: loop, url: url, request: request, maxBody: maxBody, done: done)
        exchange.timer = loop.after(timeoutNanos) { [exchange] _ in
            exchange.finish(.failure(.unavailable("\(url): no answer within \(ConfigDuration.describe(timeoutNanos))")))
        }
        HostResolver.shared.resolve(url.endpoint, from: loop) { [exchange] address in
            guard let address else { return exchange.finish(.failure(.unavailable("\(url): cannot resolve \(url.host)"))) }
            exchange.connect(to: address)
        }
    }

    private func connect(to address: SocketAddress) {
        guard done != nil else { return }  // timed out while resolving
        switch Socket.connect(to: address) {
        case .failed(let error):
            finish(.failure(.unavailable("\(url): \(error)")))
        case .connected(let fd):
            socket = fd
            loop.register(fd: fd.raw, events: Epoll.edgeTriggeredBoth, handler: self)
            handleEvent(fd: fd.raw, events: Epoll.output)
        case .inProgress(let fd):
            // Edge-triggered: writability (or an error) reports the connect's end.
            socket = fd
            loop.register(fd: fd.raw, events: Epoll.edgeTriggeredBoth, handler: self)
        }
    }

    func handleEvent(fd: Int32, events: UInt32) {
        guard let socket, done != nil else { return }
        if !connected {
            guard events & (Epoll.output | Epoll.error | Epoll.hangup) != 0 else { return }
            let error = Socket.pendingError(fd)
            guard error == 0 else { return finish(.failure(.unavailable("\(url): connect: \(SystemError.describe(error))"))) }
            connected = true
        }
        while !output.isEmpty {
            switch socket.send(output) {
            case .processed(let n): output.removeFirst(n)
            case .wouldBlock: return
            case .closed, .failed(_): return finish(.failure(.unavailable("\(url): the server closed the connection")))
            }
        }
        var chunk = [UInt8](repeating: 0, count: 16384)
        var closed = false
        reading: while true {
            switch socket.receive(into: &chunk) {
            case .processed(let n):
                input += chunk[0..<n]
                if input.count > maxBody + HTTPReplyParser.maxHeaderBytes + 1024 { break reading }
            case .wouldBlock: break reading
            case .closed, .failed(_):
                closed = true
                break reading
            }
        }
        switch HTTPReplyParser.parse(input, closed: closed, maxBody: maxBody) {
        case .incomplete: if closed { finish(.failure(.unavailable("\(url): the server closed mid-response"))) }
        case .invalid(let why): finish(.failure(.unavailable("\(url): \(why)")))
        case .complete(let response): finish(.success(response))
        }
    }

    private func finish(_ result: Result<HTTPReply, OCSPFailure>) {
        guard let done else { return }
        self.done = nil
        timer?.cancel()
        timer = nil
        if let socket {
            loop.deregister(fd: socket.raw)
            socket.close()
            self.socket = nil
        }
        done(result)
    }
}

/// Names of responders and distribution points to addresses. A literal address is used
/// at once; a name is looked up on a thread of its own (getaddrinfo blocks), and the
/// answer kept for a minute, so that no event loop waits for DNS.
final class HostResolver: Sendable {
    static let shared = HostResolver()
    static let ttlNanos: UInt64 = 60_000_000_000

    private struct Entry { var address: SocketAddress?; var until: UInt64 }
    private let cache = Mutex<[String: Entry]>([:])

    func resolve(_ endpoint: Endpoint, from loop: EventLoop, done: @escaping (SocketAddress?) -> Void) {
        let key = endpoint.description
        if Self.isLiteral(endpoint) { return done(try? SocketAddress.resolve(endpoint)) }
        let now = monotonicNanos()
        if let hit = cache.withLock({ $0[key] }), hit.until > now { return done(hit.address) }
        let callback = LoopBound(done)
        Threads.spawn { [self] in
            let address = try? SocketAddress.resolve(endpoint)
            cache.withLock { cache in
                if cache.count > 1024 { cache.removeAll() }
                cache[key] = Entry(address: address, until: monotonicNanos() + Self.ttlNanos)
            }
            loop.execute { callback.value(address) }
        }
    }

    /// Resolving from the reload thread, which may block.
    func resolveBlocking(_ endpoint: Endpoint) -> SocketAddress? { try? SocketAddress.resolve(endpoint) }

    static func isLiteral(_ endpoint: Endpoint) -> Bool {
        switch endpoint {
        case .inet6: return true
        case .inet(let host, _): return !host.isEmpty && host.allSatisfy { $0.isASCIIDigit || $0 == "." }
        case .unix: return true
        }
    }
}

/// A value confined to one event loop, carried through `EventLoop.execute` (which
/// needs Sendable) back to that loop. Only the loop it belongs to may touch it.
final class LoopBound<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
