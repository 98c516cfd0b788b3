import Glibc

/// recv and send on a non-blocking socket, one call at a time, for the callers that
/// loop over them (the directory client, the health endpoint). EINTR is retried here;
/// "would block" and the peer's close are values, not errors.
enum SocketIO {
    enum Transfer: Equatable {
        /// This many bytes (more than 0) moved.
        case moved(Int)
        case wouldBlock
        /// recv: the peer closed its side (end of stream).
        case closed
        /// Any other failure, with errno (a send that moved nothing counts as one).
        case failed(Int32)
    }

    /// Receives into `buffer` from its start, at most `buffer.count` bytes.
    static func receive(_ fd: Int32, into buffer: inout [UInt8]) -> Transfer {
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { return .moved(n) }
            if n == 0 { return .closed }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? .wouldBlock : .failed(errno)
        }
    }

    /// Sends `bytes` from `offset` on (at least one byte); never raises SIGPIPE.
    static func send(_ fd: Int32, _ bytes: [UInt8], from offset: Int = 0) -> Transfer {
        precondition(offset < bytes.count, "nothing to send")
        while true {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n > 0 { return .moved(n) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return .wouldBlock }
            return .failed(n < 0 ? errno : 0)
        }
    }
}
