/// The client-to-backend direction of a message-aware listener (`tls = starttls` or
/// `client_auth`): the client's bytes are cut into whole LDAPMessages, at most
/// `max_request_size` each, and each one is forwarded, rewritten or answered as
/// ClientLogin decides. The relay moves the bytes; nothing here touches a socket.
///
/// With `client_auth`, the backend connection is first bound as the proxy: that bind
/// goes out before any request, its response is taken out of the backend's stream (the
/// relay asks `interceptedMessageID`), and no request goes on until it has come.
final class ClientRequests {
    /// Why the connection must end, with the Notice of Disconnection that says so.
    struct Stop: Equatable {
        var notice: [UInt8]
        var reason: RefusalReason
        var end: ConnectionEnd
        var detail: String
    }

    private(set) var login: ClientLogin
    private let maxRequestSize: Int
    private let bindDN: String
    private let bindPassword: [UInt8]
    /// The message being collected from the client's bytes.
    private var message: [UInt8] = []
    private var messageLength: Int?
    /// Bytes for the backend, sent from `forwardSent` on.
    private var forward: [UInt8] = []
    private var forwardSent = 0
    /// Responses of the proxy's own for the client, written between the backend's messages.
    private var answers: [UInt8] = []
    private var answersSent = 0
    /// The proxy's bind on the backend is under way with this messageID.
    private(set) var interceptedMessageID: Int?
    /// A bind of the client's own went to the backend with this messageID and its
    /// response has not come yet: any request now is a protocol error (RFC 4511 §4.2.1:
    /// nothing may follow a BindRequest until its response). An abandon of that bind, or
    /// a request slapd holds back while it waits to write, could otherwise leave the
    /// backend connection bound as the proxy while no control is sent any more.
    private(set) var ownBindInProgress: Int?
    /// When the proxy's bind (opening or rebind) went out, for its deadline.
    private var bindSentAt: UInt64 = 0
    /// What the client is told once that bind succeeds (nil for the opening bind).
    private var answerAfterBind: [UInt8]?
    /// The backend refused the proxy's bind: nothing more goes to it.
    private var bindRefused = false

    /// The messageID of the proxy's opening bind: no request of the client is on the
    /// connection yet, so no ID can clash with it.
    static let openingBindID = 1
    /// Answers the client has not read yet stop the reading of its requests at this size.
    static let answerBacklogLimit = 64 * 1024
    /// Requests the backend has not taken yet stop the reading at this size: pipelined
    /// requests go out together, and memory stays bounded.
    static let forwardBacklogLimit = 64 * 1024

    init(login: ClientLogin, maxRequestSize: Int, bindDN: String?, bindPassword: [UInt8], preface: [UInt8]) {
        self.login = login
        self.maxRequestSize = maxRequestSize
        self.bindDN = bindDN ?? ""
        self.bindPassword = bindPassword
        forward = preface
        if login.mode != .none {
            forward += LDAPMessages.bindRequest(id: Self.openingBindID, dn: self.bindDN, password: bindPassword)
            interceptedMessageID = Self.openingBindID
            bindSentAt = monotonicNanos()
        }
    }

    /// The requests of a client of `listener`, nil when it relays bytes unchanged. The
    /// login runs as `entryDN`, the entry the certificate maps to.
    convenience init?(listener: ListenerRuntime, entryDN: String?, preface: [UInt8]) {
        let config = listener.config
        guard config.isMessageAware else { return nil }
        self.init(login: ClientLogin(mode: config.clientAuth, entryDN: entryDN ?? ""), maxRequestSize: config.maxRequestSize,
                  bindDN: config.backendBindDN, bindPassword: listener.backendPassword, preface: preface)
    }

    /// When the proxy's own bind went out, while one is under way (its deadline).
    var proxyBindSentAt: UInt64? { interceptedMessageID == nil ? nil : bindSentAt }

    // MARK: - Client to backend

    /// Whether requests are taken now: not while the proxy's bind is under way, nor
    /// while the backend or the client leave too much unread.
    var takesRequests: Bool {
        interceptedMessageID == nil && !bindRefused && forward.count - forwardSent < Self.forwardBacklogLimit
            && answers.count - answersSent < Self.answerBacklogLimit
    }

    /// Takes the client's bytes from `input` while requests are taken, acting on each
    /// message as it completes.
    func take(from input: inout RelayBuffer) -> Stop? {
        while takesRequests && !input.isEmpty {
            if messageLength == nil && message.isEmpty {
                // A message starts in the input: its header is read there, and the
                // message is then copied at once (a header cut by the end of the input
                // is collected byte by byte below).
                switch input.withReadable({ LDAPMessageFramer.header(of: $0) }) {
                case .incomplete: break
                case .notLDAP: return protocolError("the client's bytes are not LDAP messages")
                case .message(let header, let content):
                    if let stop = tooLarge(header + content) { return stop }
                    messageLength = header + content
                }
            }
            let wanted: Int
            if let length = messageLength {
                wanted = length - message.count
            } else {
                wanted = 1  // the tag and length, byte by byte: a header is at most 6 bytes
            }
            let n = min(wanted, input.count)
            input.withReadable { message.append(contentsOf: $0.prefix(n)) }
            input.consume(n)
            if messageLength == nil {
                switch LDAPMessageFramer.header(of: message) {
                case .incomplete: continue
                case .notLDAP: return protocolError("the client's bytes are not LDAP messages")
                case .message(let header, let content):
                    if let stop = tooLarge(header + content) { return stop }
                    messageLength = header + content
                }
            }
            if message.count == messageLength, let stop = act() { return stop }
        }
        return nil
    }

    private func tooLarge(_ length: Int) -> Stop? {
        guard length > maxRequestSize else { return nil }
        return Stop(notice: NoticeOfDisconnection.encode(.protocolError, diagnostic: "request larger than \(maxRequestSize) bytes"),
                    reason: .requestTooLarge, end: .error,
                    detail: "a request of \(length) bytes, above max_request_size (\(maxRequestSize))")
    }

    private func act() -> Stop? {
        defer {
            messageLength = nil
            // A large request's memory goes back; a small one's is reused.
            if message.capacity > 64 * 1024 { message = [] } else { message.removeAll(keepingCapacity: true) }
        }
        let request: LDAPRequest
        do { request = try LDAPRequest(decoding: message) } catch { return protocolError("malformed request: \(error)") }
        if let pending = ownBindInProgress {
            return protocolError("a request (messageID \(request.messageID)) while the bind with messageID \(pending) was in progress")
        }
        switch login.step(request, message: message) {
        case .forward(let bytes):
            if request.operation == .bind { ownBindInProgress = request.messageID }
            send(bytes)
        case .answer(let bytes): answers += bytes
        case .drop: break
        case .rebindThenAnswer(let id, let answer):
            send(LDAPMessages.bindRequest(id: id, dn: bindDN, password: bindPassword))
            interceptedMessageID = id
            bindSentAt = monotonicNanos()
            answerAfterBind = answer
        }
        return nil
    }

    private func send(_ bytes: [UInt8]) {
        if forwardSent == forward.count {
            forward = bytes
        } else {
            forward.removeFirst(forwardSent)  // at most a backlog's worth
            forward += bytes
        }
        forwardSent = 0
    }

    private func protocolError(_ detail: String) -> Stop {
        Stop(notice: NoticeOfDisconnection.encode(.protocolError, diagnostic: detail), reason: .protocolError, end: .error, detail: detail)
    }

    var hasForward: Bool { forwardSent < forward.count }

    /// Writes what is due to the backend once.
    func writeForward<S: RelayStream>(to stream: S) -> IOResult {
        let result = stream.write(forward, from: forwardSent)
        if case .processed(let n) = result { forwardSent += n }
        return result
    }

    // MARK: - Backend to client

    var hasAnswers: Bool { answersSent < answers.count }

    /// Writes the proxy's own responses once: the relay calls this between two messages
    /// of the backend only.
    func writeAnswers<S: RelayStream>(to stream: S) -> IOResult {
        let result = stream.write(answers, from: answersSent)
        if case .processed(let n) = result {
            answersSent += n
            if answersSent == answers.count {
                answers.removeAll(keepingCapacity: answers.count <= 4096)
                answersSent = 0
            }
        }
        return result
    }

    /// The backend's response to the client's own bind is on its way to the client.
    func ownBindAnswered() { ownBindInProgress = nil }

    /// The backend answered the proxy's bind (`response` is the whole message).
    func backendAnsweredBind(_ response: [UInt8]) -> Stop? {
        interceptedMessageID = nil
        let code = (try? LDAPMessages.decode(response))?.resultCode
        guard code == 0 else {
            bindRefused = true
            let detail = "the backend refused the proxy's bind as \(bindDN): resultCode \(code.map(String.init) ?? "unreadable")"
            return Stop(notice: NoticeOfDisconnection.backendBindFailed,
                        reason: .backendBindFailed, end: .backendUnavailable, detail: detail)
        }
        login.backendIsProxy = true
        if let answer = answerAfterBind { answers += answer }
        answerAfterBind = nil
        return nil
    }
}
