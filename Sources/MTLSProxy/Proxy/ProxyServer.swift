import Glibc
import Logging
import Synchronization

/// Why the proxy could not start: exit 1 for configuration, certificates, keys, CA
/// bundles and CRLs; exit 2 for everything else (an address in use...).
public enum StartupError: Error, CustomStringConvertible {
    case configuration(String)
    case system(String)

    public var exitCode: Int32 {
        switch self {
        case .configuration: return 1
        case .system: return 2
        }
    }

    public var description: String {
        switch self {
        case .configuration(let text), .system(let text): return text
        }
    }
}

/// Loads everything a configuration names, checking it the way a start would.
public struct LoadedConfiguration {
    let config: ProxyConfig
    let trusts: [TrustState]
    let directoryPasswords: [[UInt8]]
    let backendPasswords: [[UInt8]]

    public init(_ config: ProxyConfig) throws(StartupError) {
        self.config = config
        var trusts: [TrustState] = []
        var directoryPasswords: [[UInt8]] = []
        var backendPasswords: [[UInt8]] = []
        for listener in config.listeners {
            let directoryFile = listener.usesDirectory ? listener.directoryBindPasswordFile : nil
            directoryPasswords.append(try Self.password(directoryFile, listener: listener))
            backendPasswords.append(try Self.password(listener.backendBindPasswordFile, listener: listener))
            do {
                trusts.append(try TrustState(config: listener))
            } catch {
                throw .configuration("[\(listener.name)] \(error)")
            }
            for endpoint in [listener.listen!, listener.backend!] {
                do { _ = try SocketAddress.resolve(endpoint) } catch {
                    throw .configuration("[\(listener.name)] cannot resolve \(endpoint): \(error)")
                }
            }
        }
        self.trusts = trusts
        self.directoryPasswords = directoryPasswords
        self.backendPasswords = backendPasswords
    }

    /// What the listener does with the client's LDAP messages.
    private static func ldapSummary(_ listener: ListenerConfig) -> String {
        let tls = listener.tls == .starttls ? "StartTLS on a plain port" : "LDAPS"
        switch listener.clientAuth {
        case .none where listener.tls == .implicit:
            return "\(tls), bytes relayed unchanged (client_auth = none)"
        case .none:
            return "\(tls), requests relayed unchanged after the upgrade (client_auth = none), at most \(listener.maxRequestSize) bytes each"
        case .saslExternal, .certificate:
            let mapping = listener.certMap == .subject ? "the subject DN" : "a search under \(listener.certMapBase ?? "")"
            return "\(tls), the certificate is the login (client_auth = \(listener.clientAuth.rawValue)): the entry is \(mapping); "
                + "the proxy binds as \(listener.backendBindDN ?? "") and proxies for it; requests at most \(listener.maxRequestSize) bytes"
        }
    }

    /// A bind password from its file, without the line end an editor adds.
    private static func password(_ file: String?, listener: ListenerConfig) throws(StartupError) -> [UInt8] {
        guard let file else { return [] }
        do {
            var password = try FileBytes.read(file)
            while let last = password.last, last == 10 || last == 13 { password.removeLast() }
            return password
        } catch {
            throw .configuration("[\(listener.name)] \(file): \(String(cString: strerror(error.errno)))")
        }
    }

    /// What `--check` prints: one block per listener.
    public var summary: String {
        var lines: [String] = []
        let now = wallClockSeconds()
        lines.append("configuration \(config.sourcePath ?? "(command line)"): \(config.listeners.count) listener(s), "
            + "workers \(config.global.workers.map(String.init) ?? "auto"), health \(config.global.healthListen?.description ?? "off")")
        for (listener, trust) in zip(config.listeners, trusts) {
            lines.append("[\(listener.name)] \(listener.listen!) -> \(listener.backend!)")
            lines.append("  certificate: \(trust.serverCertificate.subject), serial \(trust.serverCertificate.serialHex), "
                + "valid until \(Timestamp.iso8601(trust.serverCertificate.notAfter)); key matches")
            lines.append("  client CAs: \(trust.caCount) from \(listener.caBundle!)")
            for ca in trust.caBySubject.values.sorted(by: { $0.subject < $1.subject }) {
                lines.append("    \(ca.subject)")
            }
            if let dir = listener.crlDir {
                lines.append("  CRLs: \(trust.crls.byIssuer.count) loaded from \(dir) (\(trust.crls.filesRead) files), policy \(listener.crlPolicy!.rawValue)")
                for crl in trust.crls.byIssuer.values.sorted(by: { $0.issuer < $1.issuer }) {
                    let next = crl.nextUpdate.map { Timestamp.iso8601($0) + (crl.isCurrent(at: now) ? "" : " (STALE)") } ?? "none"
                    lines.append("    \(crl.issuer): \(crl.revoked.count) revoked, nextUpdate \(next)")
                }
                for held in trust.crls.held.values.joined().sorted(by: { $0.info.issuer < $1.info.issuer }) {
                    lines.append("    \(held.info.issuer): \(held.info.revoked.count) revoked, held: its CA is not in the bundle; "
                        + "it counts once a client's verified chain brings that CA")
                }
                for warning in trust.notes { lines.append("  warning: \(warning)") }
                for issuer in trust.issuersWithoutCurrentCRL(at: now) {
                    lines.append("  warning: no current CRL for \(issuer): strict policy refuses its chains")
                }
            } else {
                lines.append("  CRLs: none (no crl_dir): revocation is not checked")
            }
            lines.append("  LDAP: " + Self.ldapSummary(listener))
        }
        return lines.joined(separator: "\n")
    }
}

/// Starts the workers, the health endpoint and the signal handling, and runs until a
/// clean shutdown. Returns the process exit status.
public final class ProxyServer: @unchecked Sendable {  // state below is touched on loop 0 only, or under locks
    private let loaded: LoadedConfiguration
    private let logger: Logger
    private let metrics = ProxyMetrics()
    private var listeners: [ListenerRuntime] = []
    private var workers: [Worker] = []
    private var healthServer: HealthServer?
    private var prober: BackendProber?
    private var signals: SignalWatcher?
    private let draining = Atomic<Bool>(false)
    private var reloader: Reloader?
    private var shutdownTicker: LoopTimer?
    private var drainDelayTimer: LoopTimer?
    private var notifier: ServiceNotifier?

    public init(_ loaded: LoadedConfiguration, logger: Logger) {
        self.loaded = loaded
        self.logger = logger
    }

    public func run() throws(StartupError) -> Int32 {
        let config = loaded.config
        GnuTLS.enableDebugLogFromEnvironment()
        SignalWatcher.blockInThisThread()
        for (index, listenerConfig) in config.listeners.enumerated() {
            let trust = loaded.trusts[index]
            do {
                listeners.append(try ListenerRuntime(
                    config: listenerConfig, trust: trust,
                    directoryPassword: loaded.directoryPasswords[index], backendPassword: loaded.backendPasswords[index], metrics: metrics.listener(listenerConfig.name), logger: logger))
            } catch {
                throw .configuration("[\(listenerConfig.name)] \(error)")
            }
            trust.logLoadNotes(to: listeners[index].logger)
        }
        metrics.recordReload(success: true, at: wallClockSeconds())

        let workerCount = config.global.workers ?? Threads.availableCores()
        do {
            for index in 0..<workerCount { workers.append(try Worker(index: index)) }
            // Port 0 (tests) resolves to a real port with the first bind; the other
            // workers must bind that same port.
            var addresses = listeners.map(\.listenAddress)
            for (index, worker) in workers.enumerated() {
                try worker.bind(listeners, addresses: addresses)
                if index == 0 { addresses = worker.acceptors.map { Socket.localAddress($0.fd) } }
            }
            for (listener, address) in zip(listeners, addresses) {
                logger.info("listening", metadata: [
                    "listener": "\(listener.name)", "detail": "\(address) -> \(listener.config.backend!)",
                ])
            }
            let loop0 = workers[0].loop
            if let healthEndpoint = config.global.healthListen {
                let fd = try Socket.listen(on: try SocketAddress.resolve(healthEndpoint), reusePort: false)
                let listeners = self.listeners
                let heartbeats = workers.map { UncheckedBox($0.heartbeat) }
                healthServer = HealthServer(fd: fd, loop: loop0, registry: metrics.registry, logger: logger, stalledWorkers: {
                    heartbeats.enumerated().filter { !$0.element.value.isFresh }.map(\.offset)
                }, beforeScrape: {
                    for listener in listeners { listener.publishActive() }
                }) { [unowned self] in
                    Readiness.evaluate(listeners, workers: workerCount, draining: self.draining.load(ordering: .relaxed), now: wallClockSeconds())
                }
                logger.info("health endpoint listening", metadata: ["detail": "\(Socket.localAddress(fd))"])
            }
            let counted = listeners
            notifier = ServiceNotifier.fromEnvironment(logger: logger) {
                counted.reduce(0) { $0 + $1.active.load(ordering: .relaxed) }
            }
            signals = try SignalWatcher(loop: loop0) { [unowned self] signal in self.handleSignal(signal) }
            let notifier = self.notifier
            reloader = try Reloader(listeners: listeners, metrics: metrics, logger: logger, phases: notifier.map { notifier in
                { phase in
                    switch phase {
                    case .started(let why): notifier.reloading(why: why)
                    case .finished(let success, let why): notifier.reloaded(success: success, why: why)
                    }
                }
            }) { [unowned self] listener, trust in
                // Live connections of newly revoked certificates go too, within the same 2 s
                // (README, Revocation and reloads).
                guard listener.config.revokeActive else { return }
                self.forEachWorker { $0.closeRevoked(listener: listener, trust: trust) }
            }
            try reloader?.start()
            CRLFetcher.shared.start(listeners)  // crl_fetch (a thread only when a listener has it)
        } catch {
            throw .system("cannot start: \(error)")
        }
        do { try Privileges.drop(user: config.global.user, group: config.global.group) } catch {
            throw .configuration("\(error)")
        }

        if let healthServer {
            // Probes exist for /readyz only: without a health endpoint the backend sees
            // nothing but relayed connections.
            healthServer.start()
            prober = BackendProber(loop: workers[0].loop, listeners: listeners)
            prober?.start()
        }
        var threads: [pthread_t] = []
        for worker in workers.dropFirst() {
            let box = UncheckedBox(worker)
            threads.append(Threads.spawn {
                box.value.startAccepting()
                box.value.loop.run()
                box.value.loopEnded()
            })
        }
        workers[0].startAccepting()
        logger.info("mtls-proxy started", metadata: ["detail": "\(workerCount) workers, \(listeners.count) listeners"])
        if let notifier {
            // Every listening socket is bound and listening (the kernel queues
            // connections from here on), so systemd may start what depends on us.
            notifier.ready(on: workers[0].loop, heartbeats: workers.map(\.heartbeat))
            let watchdog = notifier.watchdogPeriodNanos.map { "ping every \(ConfigDuration.describe($0))" } ?? "off"
            logger.info("systemd notified", metadata: ["detail": "READY=1; watchdog \(watchdog)"])
        }
        workers[0].loop.run()
        workers[0].loopEnded()
        for thread in threads { Threads.join(thread) }
        logger.info("mtls-proxy stopped")
        return 0
    }

    // MARK: - Signals

    private func handleSignal(_ signal: Int32) {
        switch signal {
        case SIGHUP:
            logger.info("SIGHUP: reloading certificates, keys, CA bundles and CRLs")
            reloader?.requestAll()
        default:
            if draining.load(ordering: .relaxed) {
                logger.warning("second stop signal: exiting now")
                exit(0)
            }
            beginShutdown()
        }
    }

    // MARK: - Shutdown

    /// Turns /readyz to 503 at once; after drain_delay (at once when it is 0) stops
    /// accepting, lets open connections finish for shutdown_grace, then ends the rest
    /// and stops the loops.
    private func beginShutdown() {
        draining.store(true, ordering: .relaxed)
        notifier?.stopping()
        let delay = loaded.config.global.drainDelayNanos
        guard delay > 0 else {
            closeListenersAndDrain()
            return
        }
        // The listeners stay open so that connections a balancer still sends (its
        // health check has not seen the 503 yet) are served, not refused.
        logger.info("draining: /readyz reports 503, listeners keep accepting for drain_delay", metadata: [
            "detail": "drain_delay \(ConfigDuration.describe(delay))",
        ])
        drainDelayTimer = workers[0].loop.after(delay) { [unowned self] _ in self.closeListenersAndDrain() }
    }

    private func closeListenersAndDrain() {
        let grace = loaded.config.global.shutdownGraceNanos
        logger.info("stopping: listeners closed, draining open connections", metadata: [
            "detail": "shutdown_grace \(ConfigDuration.describe(grace))",
        ])
        forEachWorker { $0.stopAccepting() }
        // Polls the drain every 100 ms during shutdown (and only then).
        let graceEnds = monotonicNanos() + grace
        var expired = false
        shutdownTicker = workers[0].loop.every(100_000_000, startNow: true) { [unowned self] now in
            let open = self.listeners.reduce(0) { $0 + $1.active.load(ordering: .relaxed) }
            if open == 0 {
                self.shutdownTicker?.cancel()
                self.forEachWorker { $0.loop.stop() }
                return
            }
            if !expired && now >= graceEnds {
                expired = true
                self.logger.warning("shutdown_grace elapsed, closing remaining connections", metadata: ["detail": "\(open) open"])
                self.forEachWorker { $0.closeAll(.shutdown) }
            }
        }
    }

    private func forEachWorker(_ body: @escaping @Sendable (Worker) -> Void) {
        for worker in workers {
            let box = UncheckedBox(worker)
            worker.loop.execute { body(box.value) }
        }
    }
}

/// Hands a loop-confined object to the thread that owns it. Only used where the
/// receiving closure runs on that object's own loop thread.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
