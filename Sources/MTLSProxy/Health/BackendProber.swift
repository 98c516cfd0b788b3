import Glibc

/// Checks that each listener's backend accepts a TCP (or unix) connection, at most
/// every few seconds, on the first event loop. With `client_auth`, the probe also binds
/// as `backend_bind_dn`, as every client connection will: a backend that takes
/// connections but refuses the proxy's bind serves nobody. `/readyz` reads the last
/// result, so a scrape never waits on a backend.
final class BackendProber {
    static let intervalNanos: UInt64 = 3_000_000_000
    static let timeoutNanos: UInt64 = 2_000_000_000

    private unowned let loop: EventLoop
    private let listeners: [ListenerRuntime]
    private var probes: [Probe] = []
    private var ticker: LoopTimer?

    init(loop: EventLoop, listeners: [ListenerRuntime]) {
        self.loop = loop
        self.listeners = listeners
    }

    func start() {
        ticker = loop.every(Self.intervalNanos, startNow: true) { [unowned self] now in self.probeAll(now: now) }
    }

    private func probeAll(now: UInt64) {
        for listener in listeners where !probes.contains(where: { $0.listener === listener }) {
            let probe = Probe(listener: listener, loop: loop) { [unowned self] done in
                self.probes.removeAll { $0 === done }
            }
            probes.append(probe)
            probe.start(now: now)
        }
    }

    final class Probe: EventHandler {
        let listener: ListenerRuntime
        private unowned let loop: EventLoop
        private let done: (Probe) -> Void
        private var socket: Descriptor?
        /// The bind request still to send, then the response as it arrives.
        private var bind: (request: [UInt8], sent: Int, response: [UInt8])?
        private lazy var timeout = loop.timer { [unowned self] _ in
            let what = self.bind == nil ? "connect" : "the bind as \(self.listener.config.backendBindDN ?? "")"
            self.finish(ok: false, why: "\(what) timed out after \(ConfigDuration.describe(BackendProber.timeoutNanos))")
        }

        deinit { socket?.close() }  // a probe in flight when the process ends

        init(listener: ListenerRuntime, loop: EventLoop, done: @escaping (Probe) -> Void) {
            self.listener = listener
            self.loop = loop
            self.done = done
        }

        func start(now: UInt64) {
            switch Socket.connect(to: listener.backendAddress) {
            case .connected(let socket):
                self.socket = socket
                loop.register(fd: socket.raw, events: Epoll.edgeTriggeredBoth, handler: self)
                timeout.arm(at: now + BackendProber.timeoutNanos)
                connected()
            case .failed(let error):
                finish(ok: false, why: "\(error)")  // out of descriptors shows here, not as the backend's fault
            case .inProgress(let socket):
                self.socket = socket
                loop.register(fd: socket.raw, events: Epoll.edgeTriggeredBoth, handler: self)
                timeout.arm(at: now + BackendProber.timeoutNanos)
            }
        }

        func handleEvent(fd: Int32, events: UInt32) {
            guard bind == nil else { return exchangeBind() }
            let error = Socket.pendingError(fd)
            guard error == 0 else { return finish(ok: false, why: "connect: \(SystemError.describe(error))") }
            connected()
        }

        private func connected() {
            let config = listener.config
            guard config.clientAuth != .none else { return finish(ok: true) }
            var request = config.proxyProtocol == .v2 ? ProxyProtocolV2.header(client: nil, local: nil, tlsVersion: nil, commonName: nil) : []
            request += LDAPMessages.bindRequest(id: 1, dn: config.backendBindDN ?? "", password: listener.backendPassword)
            bind = (request, 0, [])
            exchangeBind()
        }

        /// Sends the bind and reads its response, as far as the socket allows now.
        private func exchangeBind() {
            guard let socket, var exchange = bind else { return }
            while exchange.sent < exchange.request.count {
                guard case .processed(let n) = socket.send(exchange.request, from: exchange.sent) else { break }
                exchange.sent += n
            }
            var chunk = [UInt8](repeating: 0, count: 512)
            reading: while true {
                switch socket.receive(into: &chunk) {
                case .processed(let n): exchange.response += chunk.prefix(n)
                case .wouldBlock: break reading
                case .closed, .failed: return finish(ok: false, why: "the backend closed the connection during the proxy's bind")
                }
            }
            bind = exchange
            guard case .message(let header, let content) = LDAPMessageFramer.header(of: exchange.response),
                  exchange.response.count >= header + content
            else {
                if exchange.response.count > 4096 { finish(ok: false, why: "the backend's answer to the bind is not LDAP") }
                return
            }
            let code = (try? LDAPMessages.decode(Array(exchange.response.prefix(header + content))))?.resultCode
            _ = socket.send(LDAPMessages.unbindRequest(id: 2))  // a polite end; the close follows anyway
            finish(ok: code == 0, why: "bind as \(listener.config.backendBindDN ?? "") refused: resultCode \(code.map(String.init) ?? "unreadable")")
        }

        private func finish(ok: Bool, why: String = "") {
            if let socket {
                loop.deregister(fd: socket.raw)
                socket.close()
                self.socket = nil
            }
            timeout.cancel()
            let previous = listener.backendState.exchange(ok ? 1 : 2, ordering: .relaxed)
            if previous != (ok ? 1 : 2) {
                if ok {
                    let bound = listener.config.clientAuth == .none ? "" : "; the proxy's bind succeeds"
                    listener.logger.info("backend answers", metadata: ["detail": "\(listener.config.backend!)\(bound)"])
                } else {
                    listener.logger.warning("backend does not answer", metadata: ["detail": "\(listener.config.backend!): \(why)"])
                }
            }
            done(self)
        }
    }
}
