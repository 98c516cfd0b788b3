/// The plain-LDAP start of a `tls = starttls` listener (RFC 4511 §4.14, RFC 4513 §3).
/// Before TLS only the StartTLS extended request is served: any other request gets its
/// response with confidentialityRequired (13), an abandon has none, an unbind closes.
/// There is no backend yet, so no byte of an unverified client can reach it.
///
/// The success response is the last plain byte either way: the TLS handshake follows on
/// the same connection. A client that sends a request behind its StartTLS, before the
/// response, breaks the protocol: it gets a Notice of Disconnection.
final class StartTLSDoor {
    enum Step: Equatable {
        /// For more bytes, or for the socket to take the responses.
        case waiting
        /// The StartTLS response went out whole: the TLS handshake comes next.
        case upgrade
        /// The client ended the connection without upgrading (unbind or close).
        case closed(String)
        case stop(ClientRequests.Stop)
    }

    private let socket: StreamSocket
    /// Before TLS nobody is verified yet: a request may be this large at most, so that
    /// an unverified connection holds a few KiB, not max_request_size. A StartTLS request
    /// is 31 bytes; a plain request answered with confidentialityRequired is small.
    static let limitBeforeTLS = 16 * 1024
    private let maxRequestSize: Int
    private var input: [UInt8] = []
    private var output: [UInt8] = []
    private var outputSent = 0
    private var upgrading = false
    /// Requests answered with confidentialityRequired, for the log.
    private(set) var refusedRequests = 0

    init(socket: StreamSocket, maxRequestSize: Int) {
        self.socket = socket
        self.maxRequestSize = min(maxRequestSize, Self.limitBeforeTLS)
    }

    func step() -> Step {
        while true {
            if outputSent < output.count {
                switch socket.write(output, from: outputSent) {
                case .processed(let n): outputSent += n; continue
                case .wouldBlock: return .waiting
                case .closed, .failed: return .closed("the client went away before StartTLS")
                }
            }
            if upgrading { return .upgrade }
            switch nextMessage() {
            case .some(.waiting): continue  // one handled: write its response, look for the next
            case .some(let step): return step
            case nil: break
            }
            switch socket.read(appendingTo: &input, limit: 4096) {
            case .processed: break
            case .wouldBlock: return .waiting
            case .closed: return .closed("the client closed before StartTLS")
            case .failed(let why): return .closed("before StartTLS: \(why)")
            }
        }
    }

    /// Acts on the first whole message in `input`: `.waiting` when one was handled,
    /// nil when there is none yet.
    private func nextMessage() -> Step? {
        let length: Int
        switch LDAPMessageFramer.header(of: input) {
        case .incomplete: return nil
        case .notLDAP: return protocolError("the client's bytes are not LDAP messages (is it speaking TLS to a StartTLS port?)")
        case .message(let header, let content):
            guard header + content <= maxRequestSize else {
                return protocolError("a request of \(header + content) bytes before TLS (at most \(maxRequestSize) until StartTLS)")
            }
            guard input.count >= header + content else { return nil }
            length = header + content
        }
        let message = Array(input.prefix(length))
        input.removeFirst(length)
        let request: LDAPRequest
        do { request = try LDAPRequest(decoding: message) } catch { return protocolError("malformed request: \(error)") }
        switch request.operation {
        case .unbind:
            return .closed("unbind before StartTLS")
        case .abandon:
            return .waiting
        case .extended where request.extendedName == LDAPRequest.startTLSName:
            guard input.isEmpty else { return protocolError("a request followed StartTLS before its response") }
            output += LDAPResponse.result(to: request, .success, "")!
            upgrading = true
            return .waiting
        default:
            refusedRequests += 1
            output += LDAPResponse.result(to: request, .confidentialityRequired, "TLS is required: send StartTLS first")!
            return .waiting
        }
    }

    private func protocolError(_ detail: String) -> Step {
        .stop(ClientRequests.Stop(notice: NoticeOfDisconnection.encode(.protocolError, diagnostic: detail), reason: .protocolError,
                                  end: .refused, detail: detail))
    }

    /// The notice of a stop, written before the close (best effort: the socket is plain).
    func sendNotice(_ notice: [UInt8]) {
        let rest = Array(output[outputSent...]) + notice
        _ = socket.write(rest, from: 0)
    }
}
