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
    private var reader: HTTPReplyReader
    private var done: ((Result<HTTPReply, OCSPFailure>) -> Void)?
    private var socket: Descriptor?
    private var connected = false
    private var timer: LoopTimer?

    private init(loop: EventLoop, url: HTTPURL, request: [UInt8], maxBody: Int,
                 done: @escaping (Result<HTTPReply, OCSPFailure>) -> Void) {
        self.loop = loop
        self.url = url
        output = request
        reader = HTTPReplyReader(maxBody: maxBody)
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
        while done != nil {
            var closed = false
            var received: ArraySlice<UInt8> = []
            switch socket.receive(into: &chunk) {
            case .processed(let n): received = chunk[0..<n]
            case .wouldBlock: return
            case .closed, .failed(_): closed = true
            }
            // Each read is fed as it comes: a verdict (complete, or over a limit) ends the
            // exchange at once, whatever the server still sends.
            switch reader.feed(received, closed: closed) {
            case .incomplete: if closed { return finish(.failure(.unavailable("\(url): the server closed mid-response"))) }
            case .invalid(let why): return finish(.failure(.unavailable("\(url): \(why)")))
            case .complete(let response): return finish(.success(response))
            }
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

/// Names of responders and distribution points to addresses. A literal address is
/// converted at once (inet_pton: no lookup, and "999.1.1.1" is not one); a name is looked
/// up on a thread of its own (getaddrinfo blocks), and the answer kept for a minute, so
/// that no event loop waits for DNS. Clients asking for a name already being looked up
/// join that lookup; at most `maxLookups` run at once, and a name asked for beyond that
/// is not resolved (the request fails: fail closed) rather than starting more threads.
final class HostResolver: Sendable {
    static let shared = HostResolver()
    static let ttlNanos: UInt64 = 60_000_000_000
    static let maxLookups = 8

    typealias Waiter = @Sendable (SocketAddress?) -> Void
    private struct Entry { var address: SocketAddress?; var until: UInt64 }
    private struct State {
        var cache: [String: Entry] = [:]
        var lookups = PendingLookups<Waiter>(limit: HostResolver.maxLookups)
    }
    private let state = Mutex(State())

    func resolve(_ endpoint: Endpoint, from loop: EventLoop, done: @escaping (SocketAddress?) -> Void) {
        if let literal = Self.literal(endpoint) { return done(literal) }
        let key = endpoint.description
        let now = monotonicNanos()
        let callback = LoopBound(done)
        let waiter: Waiter = { address in loop.execute { callback.value(address) } }
        enum Step { case cached(SocketAddress?), joined, look, refused }
        let step = state.withLock { state -> Step in
            if let hit = state.cache[key], hit.until > now { return .cached(hit.address) }
            switch state.lookups.join(key, waiter) {
            case .first: return .look
            case .joined: return .joined
            case .full: return .refused
            }
        }
        switch step {
        case .cached(let address): return done(address)
        case .joined: return
        case .refused: return done(nil)
        case .look: break
        }
        Threads.spawn { [self] in
            let address = try? SocketAddress.resolve(endpoint)
            let waiters = state.withLock { state -> [Waiter] in
                if state.cache.count > 1024 { state.cache.removeAll() }
                state.cache[key] = Entry(address: address, until: monotonicNanos() + Self.ttlNanos)
                return state.lookups.finish(key)
            }
            for waiter in waiters { waiter(address) }
        }
    }

    /// Resolving from the reload thread, which may block.
    func resolveBlocking(_ endpoint: Endpoint) -> SocketAddress? {
        Self.literal(endpoint) ?? (try? SocketAddress.resolve(endpoint))
    }

    /// The address when the host is a numeric IPv4 or IPv6 address (no lookup of any
    /// kind); nil for a name, or for something that only looks like an address.
    static func literal(_ endpoint: Endpoint) -> SocketAddress? {
        switch endpoint {
        case .inet(let host, let port), .inet6(let host, let port):
            return SocketAddress.ipBytes(host).flatMap { SocketAddress(ipBytes: $0, port: port) }
        case .unix:
            return try? SocketAddress.resolve(endpoint)
        }
    }
}

/// The lookups under way, by name, and who waits on each: the first asker makes the
/// lookup, later ones join it; no more than `limit` names at once.
struct PendingLookups<Waiter> {
    enum Joined { case first, joined, full }
    let limit: Int
    private var waiting: [String: [Waiter]] = [:]

    init(limit: Int) { self.limit = limit }

    var count: Int { waiting.count }

    mutating func join(_ key: String, _ waiter: Waiter) -> Joined {
        if waiting[key] != nil {
            waiting[key]!.append(waiter)
            return .joined
        }
        guard waiting.count < limit else { return .full }
        waiting[key] = [waiter]
        return .first
    }

    /// The lookup of `key` ended: everyone who waited on it.
    mutating func finish(_ key: String) -> [Waiter] { waiting.removeValue(forKey: key) ?? [] }
}

/// A value confined to one event loop, carried through `EventLoop.execute` (which
/// needs Sendable) back to that loop. Only the loop it belongs to may touch it.
final class LoopBound<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
