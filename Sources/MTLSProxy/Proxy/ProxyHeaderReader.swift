/// Takes a balancer's PROXY header off a client's socket (proxy_protocol_in). The header
/// is peeked at until complete, then exactly its bytes are taken: the TLS (or plain LDAP)
/// bytes after it stay in the socket for whoever reads next.
enum ProxyHeaderReader {
    enum Step {
        /// Not complete yet: the rest brings a new edge (or the deadline comes).
        case waiting
        /// The header was taken; the client it names, if it names one.
        case taken(client: SocketAddress?)
        /// No valid header: the connection is refused.
        case invalid(String)
        case failed(String)
    }

    static func step(_ socket: Descriptor, mode: ProxyProtocolIn) -> Step {
        var bytes = [UInt8](repeating: 0, count: InboundProxyHeader.v2MaxLength)
        let seen: Int
        switch socket.peek(into: &bytes) {
        case .processed(let n): seen = n
        case .wouldBlock: return .waiting
        case .closed, .failed: return .invalid("the connection ended before its PROXY header")
        }
        switch InboundProxyHeader.parse(Array(bytes.prefix(seen)), v1: mode != .v2, v2: mode != .v1) {
        case .incomplete:
            return .waiting
        case .invalid(let why):
            return .invalid(why)
        case .header(let length, let source):
            var header = [UInt8](repeating: 0, count: length)
            guard socket.receive(into: &header) == .processed(length) else { return .failed("could not take the PROXY header it had seen") }
            return .taken(client: source.flatMap { SocketAddress(ipBytes: $0.address, port: $0.port) })
        }
    }
}
