import Glibc

/// A GET for the CRL fetcher's own thread, which may block (never an event loop): a
/// connect, the request and the response each wait with poll(2) within one deadline.
enum BlockingHTTP {
    static func get(_ url: HTTPURL, headers: [(String, String)], timeoutNanos: UInt64, maxBody: Int) -> Result<HTTPReply, OCSPFailure> {
        let deadline = monotonicNanos() + timeoutNanos
        guard let address = HostResolver.shared.resolveBlocking(url.endpoint) else {
            return .failure(.unavailable("\(url): cannot resolve \(url.host)"))
        }
        let socket: Descriptor
        switch Socket.connect(to: address) {
        case .failed(let error): return .failure(.unavailable("\(url): \(error)"))
        case .connected(let fd), .inProgress(let fd): socket = fd
        }
        defer { socket.close() }
        func wait(_ events: Int16) -> Bool {
            let now = monotonicNanos()
            guard now < deadline else { return false }
            var fds = [pollfd(fd: socket.raw, events: events, revents: 0)]
            return poll(&fds, 1, Int32(max(1, (deadline - now) / 1_000_000))) > 0
        }
        guard wait(Int16(POLLOUT)) else { return .failure(.unavailable("\(url): no connection within the timeout")) }
        let error = Socket.pendingError(socket.raw)
        guard error == 0 else { return .failure(.unavailable("\(url): connect: \(SystemError.describe(error))")) }
        var output = HTTPClientRequest.get(url, extraHeaders: headers)
        while !output.isEmpty {
            switch socket.send(output) {
            case .processed(let n): output.removeFirst(n)
            case .wouldBlock: guard wait(Int16(POLLOUT)) else { return .failure(.unavailable("\(url): timed out sending")) }
            case .closed, .failed(_): return .failure(.unavailable("\(url): the server closed the connection"))
            }
        }
        var input: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            var closed = false
            switch socket.receive(into: &chunk) {
            case .processed(let n): input += chunk[0..<n]
            case .wouldBlock:
                guard wait(Int16(POLLIN)) else { return .failure(.unavailable("\(url): no complete answer within the timeout")) }
                continue
            case .closed, .failed(_): closed = true
            }
            switch HTTPReplyParser.parse(input, closed: closed, maxBody: maxBody) {
            case .incomplete: if closed { return .failure(.unavailable("\(url): the server closed mid-response")) }
            case .invalid(let why): return .failure(.unavailable("\(url): \(why)"))
            case .complete(let reply): return .success(reply)
            }
        }
    }
}
