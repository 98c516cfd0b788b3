import CGnuTLSShim
import Glibc

/// What one read or write on a descriptor (or a TLS session) came to. EINTR never
/// shows here: the calls below retry it themselves.
enum IOResult: Equatable {
    /// This many bytes moved (always more than 0).
    case processed(Int)
    /// Nothing can move now; the next readiness event says when to try again.
    case wouldBlock
    /// The peer closed its side: EOF on a read, close_notify in TLS.
    case closed
    /// Anything else, described for the log line.
    case failed(String)

    static func error(_ call: String, _ code: Int32 = errno) -> IOResult {
        .failed(SystemError.describe(code))  // the caller names the side and the call
    }
}

/// A file descriptor this process owns. It is closed exactly once: by `close()`, or,
/// if its owner forgot, when the last reference goes (a debug build stops there, since
/// a descriptor that outlives its purpose is a leak waiting for load).
final class Descriptor {
    let raw: Int32
    private(set) var isClosed = false

    init(_ raw: Int32) {
        precondition(raw >= 0, "not a descriptor: \(raw)")
        self.raw = raw
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        _ = Glibc.close(raw)
    }

    deinit {
        assert(isClosed, "descriptor \(raw) was dropped without close()")
        if !isClosed { _ = Glibc.close(raw) }
    }

    // MARK: - I/O, with EINTR handled here and only here

    func receive(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        while true {
            let n = recv(raw, buffer.baseAddress, buffer.count, 0)
            if n > 0 { return .processed(n) }
            if n == 0 { return .closed }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            case let code: return .error("recv", code)
            }
        }
    }

    func send(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        while true {
            let n = Glibc.send(raw, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return n > 0 ? .processed(n) : .wouldBlock }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            case let code: return .error("send", code)
            }
        }
    }

    /// One sendmsg(2) for several pieces (what GnuTLS hands over for a record).
    func send(vectors: UnsafePointer<iovec>, count: Int32) -> IOResult {
        var message = msghdr()
        message.msg_iov = UnsafeMutablePointer(mutating: vectors)
        message.msg_iovlen = Int(count)
        while true {
            let n = sendmsg(raw, &message, Int32(MSG_NOSIGNAL))
            if n >= 0 { return n > 0 ? .processed(n) : .wouldBlock }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            case let code: return .error("sendmsg", code)
            }
        }
    }

    /// Looks at what the peer sent without taking it (MSG_PEEK).
    func peek(into buffer: inout [UInt8]) -> IOResult {
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(raw, $0.baseAddress, $0.count, Int32(MSG_PEEK)) }
            if n > 0 { return .processed(n) }
            if n == 0 { return .closed }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            case let code: return .error("recv", code)
            }
        }
    }

    /// Our side is done writing: the peer reads EOF after what was sent.
    func shutdownWrite() {
        _ = shutdown(raw, Int32(SHUT_WR))
    }

    /// Reads and drops whatever the peer sends: .wouldBlock while it may send more,
    /// .closed at EOF, .failed on a reset.
    func discardInput() -> IOResult {
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while true {
            let result = withUnsafeMutableBytes(of: &scratch) { receive(into: $0) }
            guard case .processed = result else { return result }
        }
    }
}

extension Descriptor {
    /// Receives into `buffer` from its start, at most `buffer.count` bytes.
    func receive(into buffer: inout [UInt8]) -> IOResult {
        buffer.withUnsafeMutableBytes { receive(into: $0) }
    }

    /// Sends `bytes` from `offset` on.
    func send(_ bytes: [UInt8], from offset: Int = 0) -> IOResult {
        precondition(offset < bytes.count, "nothing to send")
        return bytes.withUnsafeBytes { send(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
    }
}

/// A connected stream socket, edge-triggered in an event loop, that remembers when the
/// kernel has nothing more for it.
///
/// A read that returns less than asked for emptied the socket's queue. New bytes after
/// it raise a new edge, so asking again before that edge would only return EAGAIN: one
/// wasted system call per message on a request/response connection. The exception is a
/// peer that has closed (EPOLLRDHUP seen): its EOF brings no further edge, so such a
/// socket is read until EOF.
final class StreamSocket: RelayStream {
    let descriptor: Descriptor
    private var drained = false
    private var peerClosing = false

    init(_ descriptor: Descriptor) { self.descriptor = descriptor }

    var raw: Int32 { descriptor.raw }

    /// The loop reported `events` for this socket.
    func noteEvents(_ events: UInt32) {
        if events & (Epoll.readHangup | Epoll.hangup | Epoll.error) != 0 { peerClosing = true }
        if events & (Epoll.input | Epoll.readHangup | Epoll.hangup | Epoll.error) != 0 { drained = false }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        if drained { return .wouldBlock }
        let result = descriptor.receive(into: buffer)
        switch result {
        case .processed(let n) where n < buffer.count && !peerClosing: drained = true
        case .wouldBlock: drained = true
        default: break
        }
        return result
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult { descriptor.send(bytes) }

    func finishWriting() -> Bool {
        descriptor.shutdownWrite()
        return true
    }

    var hasBufferedInput: Bool { false }
    var hasPendingWrite: Bool { false }
}
