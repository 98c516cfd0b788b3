/// What comes on a client's connection before its TLS handshake: a balancer's PROXY
/// header (`proxy_protocol_in`), then on a `tls = starttls` listener the plain LDAP up
/// to the StartTLS request (StartTLSDoor). Both must be over within handshake_timeout
/// from accept; the connection only learns when TLS comes next, or why it never will.
final class ConnectionPreamble {
    enum Step {
        /// For more bytes (the next edge brings them, or the deadline comes).
        case waiting
        /// The TLS handshake comes next.
        case tlsNext
        /// The client is refused (its notice, if one was due, already went out).
        case refused(RefusalReason, end: ConnectionEnd, detail: String)
        case failed(String)
    }

    /// The client: the connection's peer, or the address its PROXY header names.
    private(set) var client: SocketAddress
    /// The balancer that sent the PROXY header, if one did.
    private(set) var proxiedBy: SocketAddress?
    private let socket: StreamSocket
    private let config: ListenerConfig
    private enum Part { case proxyHeader, startTLS(StartTLSDoor), tls }
    private var part = Part.tls

    /// Nil when TLS comes first (no PROXY header, an LDAPS listener).
    init?(socket: StreamSocket, peer: SocketAddress, config: ListenerConfig) {
        guard config.proxyProtocolIn != .off || config.tls == .starttls else { return nil }
        self.socket = socket
        self.config = config
        client = peer
        part = config.proxyProtocolIn != .off ? .proxyHeader : partAfterHeader()
    }

    private func partAfterHeader() -> Part {
        config.tls == .starttls ? .startTLS(StartTLSDoor(socket: socket, maxRequestSize: config.maxRequestSize)) : .tls
    }

    /// What the handshake timeout reports when it ends this part.
    var timeoutDetail: String {
        if case .startTLS = part { return "no StartTLS request" }
        return "no complete handshake"
    }

    /// Reads as far as the socket allows.
    func step() -> Step {
        while true {
            switch part {
            case .proxyHeader:
                // Only a trusted balancer may name another client.
                guard let address = client.ipBytesAndPort?.bytes, config.trustedProxies.contains(where: { $0.contains(address) }) else {
                    return .refused(.untrustedProxy, end: .refused, detail: "proxy_protocol_in is on and \(client) is not in trusted_proxies")
                }
                switch ProxyHeaderReader.step(socket.descriptor, mode: config.proxyProtocolIn) {
                case .waiting: return .waiting
                case .invalid(let why): return .refused(.badProxyHeader, end: .refused, detail: why)
                case .failed(let why): return .failed(why)
                case .taken(let address):
                    if let address {
                        proxiedBy = client
                        client = address
                    }
                    part = partAfterHeader()
                }
            case .startTLS(let door):
                switch door.step() {
                case .waiting:
                    return .waiting
                case .upgrade:
                    part = .tls
                case .closed(let why):
                    let answered = door.refusedRequests > 0 ? "; \(door.refusedRequests) request(s) answered confidentialityRequired" : ""
                    return .refused(.startTLSRequired, end: .refused, detail: why + answered)
                case .stop(let stop):
                    door.sendNotice(stop.notice)
                    return .refused(stop.reason, end: stop.end, detail: stop.detail + "; Notice of Disconnection sent")
                }
            case .tls:
                return .tlsNext
            }
        }
    }
}
