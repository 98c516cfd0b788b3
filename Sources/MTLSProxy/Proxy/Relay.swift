/// The bytes of one verified connection, both ways, between the client's stream (its
/// TLS session) and the backend's (a socket). No socket or TLS call is made here: the
/// streams do those, and tests drive a relay between streams in memory.
///
/// A side is read only while its buffer has room: that backpressure keeps the memory of
/// a connection bounded by two buffers. Each side's end travels on its own: the client's
/// close reaches the backend as a FIN once everything before it was delivered, and the
/// backend's as close_notify.
///
/// On a message-aware listener, `requests` stands between the client's bytes and the
/// backend (whole messages, some rewritten or answered by the proxy), and the proxy's
/// answers enter the backend's stream to the client between two of its messages.
final class Relay<Client: RelayStream, Backend: RelayStream> {
    enum Outcome: Equatable {
        /// Still relaying; `moved` says whether any bytes went either way.
        case open(moved: Bool)
        /// Both sides ended, and each end was passed on.
        case finished
        /// An I/O error; the detail names the side.
        case failed(String)
        /// Closing: the notice went out whole, at a message boundary.
        case noticeDelivered
        /// Closing: no message boundary can come (the detail says why).
        case boundaryUnreachable(String)
        /// The client's LDAP messages ended the connection (malformed, too large, or the
        /// backend refused the proxy's bind): close with the stop's notice.
        case stop(ClientRequests.Stop)
    }

    private let client: Client
    private let backend: Backend
    private unowned let pool: BufferPool
    private var toBackend = RelayBuffer()
    private var toClient = RelayBuffer()
    /// The message-aware path of the client's requests; nil relays bytes unchanged.
    let requests: ClientRequests?
    /// A write of the proxy's answers is queued in the client stream (retry with them).
    private var answerWritePending = false
    /// Readiness as the last events and calls left it: a side is tried only when set.
    var clientReadable = true, clientWritable = true, backendReadable = true, backendWritable = true
    private var clientDone = false  // close_notify or FIN from the client
    private var backendDone = false  // FIN from the backend
    private var backendWriteShut = false
    private(set) var closeNotifySent = false
    private(set) var bytesFromClient = 0
    private(set) var bytesToClient = 0
    /// Bytes went to the backend and nothing came back since.
    private(set) var awaitingBackend = false
    /// Message boundaries of what the client has received, so that a notice never lands
    /// inside another message.
    private var framer = LDAPMessageFramer()
    private enum Closing { case no, atNextBoundary([UInt8]), noticeQueued }
    private var closing = Closing.no

    /// `preface` goes to the backend before any byte of the client (a PROXY header).
    /// With `requests`, the preface is theirs to send.
    init(client: Client, backend: Backend, pool: BufferPool, preface: [UInt8] = [], requests: ClientRequests? = nil) {
        self.client = client
        self.backend = backend
        self.pool = pool
        self.requests = requests
        if !preface.isEmpty { toBackend.replace(with: preface, pool: pool) }
    }

    /// The loop reported `events` (epoll bits) for the client's or the backend's socket.
    func noteClientEvents(_ events: UInt32) {
        if events & Self.readableBits != 0 { clientReadable = true }
        if events & Self.writableBits != 0 { clientWritable = true }
    }

    func noteBackendEvents(_ events: UInt32) {
        if events & Self.readableBits != 0 { backendReadable = true }
        if events & Self.writableBits != 0 { backendWritable = true }
    }

    /// An error or hang-up counts as both: the next call says what happened.
    private static var readableBits: UInt32 { Epoll.input | Epoll.readHangup | Epoll.error | Epoll.hangup }
    private static var writableBits: UInt32 { Epoll.output | Epoll.error | Epoll.hangup }

    /// Stops taking the client's requests, lets the message in flight to the client
    /// finish, then sends `notice` in its place of the stream.
    func closeAtNextBoundary(with notice: [UInt8]) -> Outcome {
        if case .no = closing { closing = .atNextBoundary(notice) }
        return pump()
    }

    private var isClosing: Bool {
        if case .no = closing { return false }
        return true
    }

    /// Moves bytes both ways until nothing more can move.
    func pump() -> Outcome {
        var moved = false
        var progress = true
        while progress {
            progress = false

            fromClient: while !isClosing && !clientDone && toBackend.hasSpace && (clientReadable || client.hasBufferedInput) {
                switch toBackend.fill(from: client, pool: pool) {
                case .processed(let n): bytesFromClient += n
                case .closed: clientDone = true
                case .wouldBlock:
                    clientReadable = false
                    break fromClient
                case .failed(let why): return .failed("from client: \(why)")
                }
                progress = true
            }

            if let requests, !isClosing {
                let before = toBackend.count
                if let stop = requests.take(from: &toBackend) { return .stop(stop) }
                if toBackend.count != before { progress = true }
            }

            toBackendLoop: while backendWritable && (requests?.hasForward ?? !toBackend.isEmpty) {
                switch requests?.writeForward(to: backend) ?? toBackend.drain(to: backend) {
                case .processed:
                    awaitingBackend = true
                    progress = true
                case .wouldBlock, .closed:
                    backendWritable = false
                    break toBackendLoop
                case .failed(let why): return .failed("to backend: \(why)")
                }
            }
            if clientDone && toBackend.isEmpty && requests?.hasForward != true && !backendWriteShut {
                if backend.finishWriting() {
                    backendWriteShut = true
                    progress = true
                } else {
                    backendWritable = false
                }
            }

            fromBackend: while !backendDone && toClient.hasSpace && backendReadable && !noticeQueued {
                switch toClient.fill(from: backend, pool: pool) {
                case .processed:
                    awaitingBackend = false
                case .closed: backendDone = true
                case .wouldBlock:
                    backendReadable = false
                    break fromBackend
                case .failed(let why): return .failed("from backend: \(why)")
                }
                progress = true
            }

            toClientLoop: while clientWritable && (!toClient.isEmpty || requests?.hasAnswers == true) {
                var limit = Int.max
                if let requests, !isClosing {
                    switch messageStep(requests) {
                    case .wrote: progress = true; continue toClientLoop
                    case .blocked: clientWritable = false; break toClientLoop
                    case .waitForBackend: break toClientLoop
                    case .failed(let why): return .failed("to client: \(why)")
                    case .stop(let stop): return .stop(stop)
                    case .drain(let upTo): limit = upTo
                    }
                }
                if toClient.isEmpty { break toClientLoop }
                if case .atNextBoundary = closing, !client.hasPendingWrite,
                   let toBoundary = toClient.withReadable({ framer.bytesToBoundary(in: $0) })
                {
                    if toBoundary == 0 { break toClientLoop }
                    limit = toBoundary
                }
                switch toClient.drain(to: client, limit: limit, observe: { framer.advance($0) }) {
                case .processed(let n):
                    bytesToClient += n
                    progress = true
                case .wouldBlock, .closed:
                    clientWritable = false
                    break toClientLoop
                case .failed(let why): return .failed("to client: \(why)")
                }
            }

            switch closing {
            case .atNextBoundary(let notice) where !client.hasPendingWrite && clientWritable:
                if framer.isAtBoundary {
                    // What the backend sent after this boundary is dropped with the connection.
                    toClient.replace(with: notice, pool: pool)
                    closing = .noticeQueued
                    progress = true
                } else if framer.isBroken {
                    return .boundaryUnreachable("backend stream is not LDAP")
                } else if backendDone && toClient.isEmpty {
                    return .boundaryUnreachable("backend closed mid-message")
                }
            case .noticeQueued where toClient.isEmpty:
                return .noticeDelivered
            case .no where backendDone && toClient.isEmpty && !closeNotifySent && clientWritable:
                // The backend closed: end the TLS session properly with close_notify.
                if client.finishWriting() {
                    closeNotifySent = true
                    progress = true
                } else {
                    clientWritable = false
                }
            default:
                break
            }
            moved = moved || progress
        }
        toBackend.releaseIfEmpty(to: pool)
        toClient.releaseIfEmpty(to: pool)
        if clientDone && backendWriteShut && backendDone && closeNotifySent { return .finished }
        return .open(moved: moved)
    }

    private enum MessageStep {
        case wrote, blocked, waitForBackend, failed(String), stop(ClientRequests.Stop)
        /// Backend bytes may go, up to this many.
        case drain(upTo: Int)
    }

    /// Between two messages of the backend, the proxy's answers go first, and the
    /// response to the proxy's own bind is taken out (the response to a client's own bind
    /// is only noticed). Within a message, only its rest may go while any is waiting.
    private func messageStep(_ requests: ClientRequests) -> MessageStep {
        if client.hasPendingWrite && !answerWritePending { return .drain(upTo: .max) }  // the queued record first
        let waiting = requests.hasAnswers || requests.interceptedMessageID != nil || requests.ownBindInProgress != nil
        if !waiting { return .drain(upTo: .max) }
        if !framer.isAtBoundary {
            let toBoundary = toClient.withReadable { framer.bytesToBoundary(in: $0) }
            return .drain(upTo: toBoundary ?? .max)
        }
        if requests.hasAnswers {
            switch requests.writeAnswers(to: client) {
            case .processed:
                answerWritePending = false
                return .wrote
            case .wouldBlock, .closed:
                answerWritePending = client.hasPendingWrite
                return .blocked
            case .failed(let why): return .failed(why)
            }
        }
        if requests.interceptedMessageID == nil && requests.ownBindInProgress == nil { return .drain(upTo: .max) }
        switch toClient.withReadable({ LDAPResponseHead.read($0) }) {
        case .incomplete:
            if backendDone { return .failed("the backend closed before it answered the proxy's bind") }
            return .waitForBackend
        case .notLDAP:
            return .failed("the backend's answer is not LDAP")
        case .message(let messageID, let operationTag, let length):
            // Only a BindResponse answers a bind: another message of that ID (a misbehaving
            // client's search under the same ID) goes on to the client.
            let isBindResponse = operationTag == LDAPResponseHead.bindResponseTag
            if isBindResponse && messageID == requests.ownBindInProgress { requests.ownBindAnswered() }
            guard isBindResponse && messageID == requests.interceptedMessageID else { return .drain(upTo: length) }
            guard length <= toClient.count else {
                if length > BufferPool.bufferSize { return .failed("the backend's bind response is \(length) bytes") }
                return backendDone ? .failed("the backend closed within its bind response") : .waitForBackend
            }
            let response = toClient.withReadable { Array($0.prefix(length)) }
            toClient.consume(length)
            if let stop = requests.backendAnsweredBind(response) { return .stop(stop) }
            return .wrote
        }
    }

    private var noticeQueued: Bool {
        if case .noticeQueued = closing { return true }
        return false
    }

    /// The end of the connection: buffers go back to the pool.
    func release() {
        toBackend.discard(to: pool)
        toClient.discard(to: pool)
    }
}
