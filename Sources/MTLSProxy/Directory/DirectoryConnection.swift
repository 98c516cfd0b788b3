import Glibc

/// What one directory search found.
enum DirectoryAnswer {
    /// The entries found (none when there is no entry).
    case entries([DirectoryEntry])
    case unavailable(String)
}

/// An entry a search found: its DN, and the certificate values asked for.
struct DirectoryEntry: Equatable {
    var dn: String
    var certificates: [[UInt8]]
}

/// One persistent LDAP connection to the directory, on an event loop: non-blocking
/// connect, optional simple bind, then searches multiplexed by message ID, each with
/// its own deadline. A broken connection fails what is in flight and reconnects, after a
/// backoff, when the next search needs it.
package final class DirectoryConnection: EventHandler {
    enum State { case disconnected, connecting, binding, ready }

    package static let maxMessageBytes = 16 << 20

    private unowned let loop: EventLoop
    private lazy var timer = loop.timer { [unowned self] now in self.timerFired(now: now) }
    private let address: SocketAddress
    private let bindDN: String?
    private let password: [UInt8]
    private let timeoutNanos: UInt64
    private let onStateChange: (Bool) -> Void
    private(set) var state = State.disconnected
    private var socket: Descriptor?
    private var output: [UInt8] = []
    private var input: [UInt8] = []
    private var nextID = 1
    private var waiting: [(build: (Int) -> [UInt8], deadline: UInt64, done: (DirectoryAnswer) -> Void)] = []
    private var inFlight: [Int: (deadline: UInt64, entries: [DirectoryEntry], done: (DirectoryAnswer) -> Void)] = [:]
    private var retryAfter: UInt64 = 0
    private var backoffNanos: UInt64 = 100_000_000
    private var connectDeadline: UInt64 = 0
    /// Why the last connection attempt or connection failed, for refusals during backoff.
    private var lastFailure = "not connected"

    init(loop: EventLoop, address: SocketAddress, bindDN: String?, password: [UInt8], timeoutNanos: UInt64,
         onStateChange: @escaping (Bool) -> Void) {
        self.loop = loop
        self.address = address
        self.bindDN = bindDN
        self.password = password
        self.timeoutNanos = timeoutNanos
        self.onStateChange = onStateChange
    }

    /// The worker is going away with the process: the directory sees the connection end.
    deinit { socket?.close() }

    var load: Int { inFlight.count + waiting.count }

    /// Runs a search built by `build(messageID)`; `done` gets the values or why not.
    func search(_ build: @escaping (Int) -> [UInt8], done: @escaping (DirectoryAnswer) -> Void) {
        let now = monotonicNanos()
        if state == .disconnected {
            if now < retryAfter { return done(.unavailable("directory unreachable, retrying soon: \(lastFailure)")) }
            connect(now: now)
            if state == .disconnected { return done(.unavailable(lastFailure)) }
        }
        waiting.append((build, now + timeoutNanos, done))
        if state == .ready { flushWaiting() }
        timer.arm(at: now + timeoutNanos)
    }

    func connect(now: UInt64) {
        guard state == .disconnected else { return }
        switch Socket.connect(to: address) {
        case .failed:
            fail("connect to the directory failed")
        case .connected(let connecting), .inProgress(let connecting):
            socket = connecting
            state = .connecting
            connectDeadline = now + timeoutNanos
            loop.register(fd: connecting.raw, events: Epoll.edgeTriggeredBoth, handler: self)
            timer.arm(at: connectDeadline)
        }
    }

    func handleEvent(fd: Int32, events: UInt32) {
        if state == .connecting {
            guard events & (Epoll.output | Epoll.error | Epoll.hangup) != 0 else { return }
            guard Socket.pendingError(fd) == 0 else { return fail("connect to the directory failed") }
            if let bindDN {
                state = .binding
                let id = takeID()
                output += LDAPMessages.bindRequest(id: id, dn: bindDN, password: password)
                inFlight[id] = (monotonicNanos() + timeoutNanos, [], { [unowned self] answer in
                    if case .unavailable(let why) = answer { return self.fail(why) }
                    self.becomeReady()
                })
            } else {
                becomeReady()
            }
        }
        if events & (Epoll.input | Epoll.readHangup | Epoll.error | Epoll.hangup) != 0 { readAll() }
        guard socket != nil else { return }
        writeAll()
    }

    private func becomeReady() {
        state = .ready
        backoffNanos = 100_000_000
        onStateChange(true)
        flushWaiting()
        writeAll()
    }

    private func flushWaiting() {
        for request in waiting {
            let id = takeID()
            output += request.build(id)
            inFlight[id] = (request.deadline, [], request.done)
        }
        waiting.removeAll()
        writeAll()
    }

    private func takeID() -> Int {
        defer { nextID = nextID == Int(Int32.max) ? 1 : nextID + 1 }
        return nextID
    }

    private func writeAll() {
        while !output.isEmpty, let socket {
            switch socket.send(output) {
            case .processed(let n): output.removeFirst(n)
            case .wouldBlock: return
            case .closed, .failed: return fail("lost the directory connection")
            }
        }
    }

    private func readAll() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        reading: while let socket {
            switch socket.receive(into: &chunk) {
            case .processed(let n): input.append(contentsOf: chunk[0..<n])
            case .wouldBlock: break reading
            case .closed, .failed: return fail("the directory closed the connection")
            }
        }
        while let message = nextMessage() {
            guard let response = try? LDAPMessages.decode(message) else { return fail("undecodable LDAP message from the directory") }
            handle(response)
        }
    }

    /// One complete LDAPMessage from the input, by BER length; nil when more is needed.
    private func nextMessage() -> [UInt8]? {
        switch Self.frame(input) {
        case .incomplete:
            return nil
        case .invalid(let why):
            fail(why)
            return nil
        case .message(let length):
            let message = Array(input[0..<length])
            input.removeFirst(length)
            return message
        }
    }

    package enum Frame: Equatable {
        case incomplete
        /// The first `length` bytes are one LDAPMessage, its tag and length included.
        case message(length: Int)
        case invalid(String)
    }

    /// Where the first LDAPMessage of the directory's answers ends: the relay's framing
    /// rule (LDAPMessageFramer), with the directory client's own size limit. A function
    /// of the bytes alone, so that the fuzz target can drive it.
    package static func frame(_ input: [UInt8]) -> Frame {
        switch LDAPMessageFramer.header(of: input) {
        case .incomplete:
            return .incomplete
        case .notLDAP:
            return .invalid(input[0] == 0x30 ? "bad BER length from the directory" : "not LDAP from the directory")
        case .message(let header, let content):
            guard content <= maxMessageBytes else { return .invalid("oversize LDAP message from the directory") }
            return input.count >= header + content ? .message(length: header + content) : .incomplete
        }
    }

    private func handle(_ response: LDAPMessages.Response) {
        guard var request = inFlight[response.messageID] else { return }
        switch response.operation {
        case 4:
            request.entries.append(DirectoryEntry(dn: response.objectName, certificates: response.values))
            inFlight[response.messageID] = request
        case 1:
            inFlight[response.messageID] = nil
            request.done(response.resultCode == 0 ? .entries([]) : .unavailable("bind as \(bindDN ?? "") failed (resultCode \(response.resultCode ?? -1))"))
        case 5:
            inFlight[response.messageID] = nil
            switch response.resultCode ?? -1 {
            case 0, 4, 32: request.done(.entries(request.entries))  // success, sizeLimitExceeded, noSuchObject
            case let code: request.done(.unavailable("search failed with resultCode \(code)"))
            }
        default:
            break
        }
    }

    private func timerFired(now: UInt64) {
        if state == .connecting && now >= connectDeadline { return fail("connect to the directory timed out") }
        if inFlight.values.contains(where: { $0.deadline <= now }) {
            return fail("the directory did not answer within the timeout")
        }
        for (index, request) in waiting.enumerated().reversed() where request.deadline <= now {
            waiting.remove(at: index)
            request.done(.unavailable("the directory did not answer within the timeout"))
        }
        let next = (inFlight.values.map(\.deadline) + waiting.map(\.deadline) + (state == .connecting ? [connectDeadline] : [])).min()
        if let next { timer.arm(at: next) }
    }

    /// Drops the connection and fails everything pending with `why`.
    private func fail(_ why: String) {
        lastFailure = why
        if let socket {
            loop.deregister(fd: socket.raw)
            socket.close()
            self.socket = nil
        }
        state = .disconnected
        retryAfter = monotonicNanos() + backoffNanos
        backoffNanos = min(backoffNanos * 2, 5_000_000_000)
        output.removeAll()
        input.removeAll()
        let pending = Array(inFlight.values.map(\.done)) + waiting.map(\.done)
        inFlight.removeAll()
        waiting.removeAll()
        timer.cancel()
        onStateChange(false)
        for done in pending { done(.unavailable(why)) }
    }
}
