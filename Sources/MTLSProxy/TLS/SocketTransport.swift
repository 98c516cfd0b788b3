import Glibc

/// A TLS session's transport over the client's socket.
///
/// GnuTLS reads a record's header and body in two calls; the read-ahead serves both
/// (and several records) from one recv(2). Its buffer comes from the loop's pool and
/// goes back as soon as it is empty, so an idle connection holds none.
final class SocketTransport: TLSTransport {
    let socket: StreamSocket
    private unowned let pool: BufferPool
    private var readAhead = RelayBuffer()

    init(socket: StreamSocket, pool: BufferPool) {
        self.socket = socket
        self.pool = pool
    }

    var hasBufferedInput: Bool { !readAhead.isEmpty }

    func pull(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        if readAhead.isEmpty {
            let result = readAhead.fill(from: pool) { socket.read(into: $0) }
            guard case .processed = result else {
                readAhead.releaseIfEmpty(to: pool)
                return result
            }
        }
        let n = min(buffer.count, readAhead.count)
        buffer.baseAddress!.copyMemory(from: readAhead.readable, byteCount: n)
        readAhead.consume(n)
        readAhead.releaseIfEmpty(to: pool)
        return .processed(n)
    }

    func push(_ vectors: UnsafePointer<iovec>, count: Int32) -> IOResult {
        socket.descriptor.send(vectors: vectors, count: count)
    }

    /// Gives the read-ahead back (the session is over).
    func release() { readAhead.discard(to: pool) }
}
