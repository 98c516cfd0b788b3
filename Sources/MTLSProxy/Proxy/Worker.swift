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
    private var connections: [UInt64: ClientConnection] = [:]
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
        for acceptor in acceptors where acceptor.listener.config.verifyCertInDirectory {
            directoryChecker(for: acceptor.listener).warmUp()
            if acceptor.listener.config.revokeActive && acceptor.listener.config.directoryCacheTTLNanos > 0 {
                // Every directory_cache_ttl (1 s at least), the live identities are asked again.
                let listener = acceptor.listener
                let period = max(listener.config.directoryCacheTTLNanos, 1_000_000_000)
                rechecks.append(loop.every(period) { [unowned self] _ in
                    if !self.draining { self.recheckDirectory(listener) }
                })
            }
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

    /// Verified connections by every certificate of their chain: a new CRL finds the
    /// connections it revokes with one lookup per revoked serial (or per indexed
    /// certificate, whichever is fewer), never by scanning all connections.
    private var byCertificate: [ChainLink: [UInt64: ClientConnection]] = [:]

    private var directoryCheckers: [ObjectIdentifier: DirectoryChecker] = [:]
    private var rechecks: [LoopTimer] = []


    func directoryChecker(for listener: ListenerRuntime) -> DirectoryChecker {
        if let checker = directoryCheckers[ObjectIdentifier(listener)] { return checker }
        let checker = DirectoryChecker(listener: listener, loop: loop)
        directoryCheckers[ObjectIdentifier(listener)] = checker
        return checker
    }

    /// With revoke_active, connections whose certificate was removed from its entry are
    /// closed: every directory_cache_ttl the live identities are asked again (one search
    /// per distinct certificate), bypassing the cache.
    func recheckDirectory(_ listener: ListenerRuntime) {
        var byCertificate: [[UInt8]: [ClientConnection]] = [:]
        for connection in connections.values where connection.listenerRuntime === listener && connection.phase == .relaying {
            if let lookup = connection.directoryLookup { byCertificate[lookup.certificate, default: []].append(connection) }
        }
        let checker = directoryChecker(for: listener)
        for holders in byCertificate.values {
            checker.check(holders[0].directoryLookup!, generation: listener.trust.generation, useCache: false) { verdict in
                guard case .absent = verdict else { return }
                for connection in holders {
                    connection.closeWithNotice(NoticeOfDisconnection.removedFromDirectory, end: .revoked,
                                               detail: "certificate no longer in the directory entry")
                }
            }
        }
    }

    func adopt(_ connection: ClientConnection) { connections[connection.timerKey] = connection }
    func forget(_ connection: ClientConnection) { connections[connection.timerKey] = nil }

    func index(_ connection: ClientConnection) {
        for link in connection.chain { byCertificate[link.byName, default: [:]][connection.timerKey] = connection }
    }

    func unindex(_ connection: ClientConnection) {
        for link in connection.chain.map(\.byName) {
            byCertificate[link]?[connection.timerKey] = nil
            if byCertificate[link]?.isEmpty == true { byCertificate[link] = nil }
        }
    }

    /// After `listener` swapped in `trust`: closes its connections whose chain holds a
    /// certificate that the new CRLs revoke, each with a Notice of Disconnection.
    func closeRevoked(listener: ListenerRuntime, trust: TrustState) {
        let activeCRLs = trust.activeCRLs
        let revokedCount = activeCRLs.reduce(0) { $0 + $1.revoked.count }
        var candidates: [ClientConnection] = []
        if byCertificate.count <= revokedCount {
            for holders in byCertificate.values { candidates.append(contentsOf: holders.values) }
        } else {
            for crl in activeCRLs {
                for serial in crl.revoked {
                    if let holders = byCertificate[ChainLink(issuer: IssuerKey(name: crl.issuerKey.name), serial: serial)] {
                        candidates.append(contentsOf: holders.values)
                    }
                }
            }
        }
        // The index is by issuer name; the exact check (key identifiers too) decides.
        var seen = Set<UInt64>()
        for connection in candidates where connection.listenerRuntime === listener && seen.insert(connection.timerKey).inserted {
            guard connection.chain.contains(where: { trust.crl(for: $0.issuer)?.revoked.contains($0.serial) == true }) else {
                continue
            }
            connection.closeWithNotice(NoticeOfDisconnection.revoked, end: .revoked, detail: "certificate revoked by a new CRL")
        }
    }

    /// Ends every connection still open (after shutdown_grace), each with a Notice of
    /// Disconnection (unavailable) at a message boundary.
    func closeAll(_ end: ConnectionEnd) {
        for connection in Array(connections.values) {
            connection.closeWithNotice(NoticeOfDisconnection.shuttingDown, end: end, detail: "shutdown_grace elapsed")
        }
    }
}

/// Accepts on one listening socket of one worker.
final class Acceptor: EventHandler {
    let fd: Int32
    let listener: ListenerRuntime
    unowned let worker: Worker
    private(set) lazy var pause = AcceptPause(fd: fd, handler: self, loop: worker.loop, logger: listener.logger)
    private lazy var overLimitLog = OverLimitLog(loop: worker.loop, logger: listener.logger, limit: listener.config.maxConnections)

    init(fd: Int32, listener: ListenerRuntime, worker: Worker) {
        self.fd = fd
        self.listener = listener
        self.worker = worker
    }

    func handleEvent(fd: Int32, events: UInt32) {
        // Take a batch per wake-up; the rest wait for the next round so that a flood of
        // new connections cannot starve the ones already open.
        for _ in 0..<64 {
            switch Socket.accept(fd) {
            case .wouldBlock:
                return
            case .retry:
                continue
            case .exhausted(let error):
                // Out of descriptors: pausing, not returning, or the level-triggered
                // socket would wake the loop again at once.
                return pause.failed(error)
            case .accepted(let clientFD, let peer):
                guard listener.reserveSlot() else {
                    refuseOverLimit(clientFD, peer: peer)
                    continue
                }
                Socket.setNoDelay(clientFD)
                let connection = ClientConnection(
                    fd: clientFD, peer: peer, listener: listener, trust: listener.trust, worker: worker)
                worker.adopt(connection)
                connection.start()
            }
        }
    }

    private func refuseOverLimit(_ clientFD: Int32, peer: SocketAddress) {
        close(clientFD)
        listener.metrics.connections[.overLimit]?.increment()
        overLimitLog.refused(peer)
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
