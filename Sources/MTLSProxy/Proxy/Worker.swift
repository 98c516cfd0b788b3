import CGnuTLSShim
import Glibc
import Logging
import Synchronization

/// One event loop with its listening sockets and the connections it accepted.
final class Worker {
    let loop: EventLoop
    let pool = BufferPool()
    let verificationCache = VerificationCache()
    let heartbeat = Heartbeat()
    private(set) var acceptors: [Acceptor] = []
    let live = LiveConnections()
    private var connectionCount: UInt64 = 1
    private(set) var draining = false

    init(index: Int) throws(SystemError) {
        loop = try EventLoop(index: index)
    }

    /// Binds this worker's socket for every listener (SO_REUSEPORT: each worker has its
    /// own, and the kernel spreads connections). Called before the loops start.
    func bind(_ listeners: [ListenerRuntime], addresses: [SocketAddress]) throws(SystemError) {
        for (listener, address) in zip(listeners, addresses) {
            let fd = try Socket.listen(on: address, reusePort: true)
            acceptors.append(Acceptor(fd: fd, listener: listener, worker: self))
        }
    }

    func startAccepting() {
        heartbeat.start(on: loop)
        for acceptor in acceptors where acceptor.listener.config.usesDirectory {
            directoryChecker(for: acceptor.listener).warmUp()
            if acceptor.listener.config.revokeActive && acceptor.listener.config.directoryCacheTTLNanos > 0 {
                // Every directory_cache_ttl (1 s at least), the live identities are asked again.
                let listener = acceptor.listener
                let period = max(listener.config.directoryCacheTTLNanos, 1_000_000_000)
                rechecks.append(loop.every(period) { [unowned self] _ in
                    if !self.draining { self.live.recheckDirectory(listener, checker: self.directoryChecker(for: listener)) }
                })
            }
        }
        for acceptor in acceptors where acceptor.listener.config.revocation.ocsp != .off && acceptor.listener.config.revokeActive {
            rechecks.append(OCSPRecheck.start(acceptor.listener, worker: self))
        }
        for acceptor in acceptors {
            loop.register(fd: acceptor.fd, events: Epoll.input, handler: acceptor)
            acceptor.listener.boundWorkers.add(1, ordering: .relaxed)
        }
    }

    /// Stops taking connections and closes the listening sockets at once, so that a
    /// load balancer sees them go; open connections carry on.
    func stopAccepting() {
        draining = true
        for acceptor in acceptors {
            acceptor.pause.stop()
            loop.deregister(fd: acceptor.fd)
            close(acceptor.fd)
            acceptor.listener.boundWorkers.subtract(1, ordering: .relaxed)
        }
        acceptors.removeAll()
    }

    private var directoryCheckers: [ObjectIdentifier: DirectoryChecker] = [:]
    private var rechecks: [LoopTimer] = []


    func directoryChecker(for listener: ListenerRuntime) -> DirectoryChecker {
        if let checker = directoryCheckers[ObjectIdentifier(listener)] { return checker }
        let checker = DirectoryChecker(listener: listener, loop: loop)
        directoryCheckers[ObjectIdentifier(listener)] = checker
        return checker
    }

    /// After `listener` swapped in `trust`: live revocation (see LiveConnections).
    func closeRevoked(listener: ListenerRuntime, trust: TrustState) {
        live.closeRevoked(listener: listener, trust: trust)
    }

    func closeAll(_ end: ConnectionEnd) { live.closeAll(end) }

    /// The loop has stopped (the process is ending): a connection accepted in the last
    /// moment, after the drain counted none, is closed and logged, not dropped.
    func loopEnded() { live.closeNow(.shutdown, detail: "the process is ending") }

    /// Numbers connections for the live set, per worker.
    func nextConnectionID() -> UInt64 {
        defer { connectionCount += 1 }
        return connectionCount
    }
}

/// Proof that a worker's event loop turns: it stamps the time every second, and
/// /healthz fails when a stamp is older than a few seconds (a loop stuck in a call).
final class Heartbeat: @unchecked Sendable {  // `last` is atomic; the timer is loop-confined
    static let intervalNanos: UInt64 = 1_000_000_000
    static let staleNanos: UInt64 = 3_000_000_000

    let last = Atomic<UInt64>(monotonicNanos())
    private var ticker: LoopTimer?

    func start(on loop: EventLoop) {
        ticker = loop.every(Self.intervalNanos, startNow: true) { [unowned self] now in
            self.last.store(now, ordering: .relaxed)
        }
    }

    var isFresh: Bool { monotonicNanos() - last.load(ordering: .relaxed) < Self.staleNanos }
}
