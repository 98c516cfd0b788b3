import Logging
import Synchronization

/// One `[listener]` section at run time, shared by every worker: its config, its
/// current trust state (swapped whole on reload), its counters and health.
final class ListenerRuntime: Sendable {
    let config: ListenerConfig
    let name: String
    let listenAddress: SocketAddress
    let backendAddress: SocketAddress
    let metrics: ListenerMetrics
    let logger: Logger
    private let trustBox: Mutex<TrustState>
    /// Connections open on all workers, for max_connections.
    let active = Atomic<Int>(0)
    /// Workers whose listening socket is bound.
    let boundWorkers = Atomic<Int>(0)
    /// Last backend probe: 0 = not probed yet, 1 = answered, 2 = did not.
    let backendState = Atomic<Int>(0)
    /// The directory for verify_cert_in_directory or cert_map = search (nil when not used).
    let directoryAddress: SocketAddress?
    let directoryPassword: [UInt8]
    /// The proxy's own bind password on the backend (client_auth), empty otherwise.
    let backendPassword: [UInt8]
    /// Last directory connection event: 0 = none yet, 1 = up, 2 = down.
    let directoryState = Atomic<Int>(0)

    init(config: ListenerConfig, trust: TrustState, directoryPassword: [UInt8], backendPassword: [UInt8],
         metrics: ListenerMetrics, logger: Logger) throws(SystemError) {
        self.config = config
        self.directoryPassword = directoryPassword
        self.backendPassword = backendPassword
        directoryAddress = config.usesDirectory
            ? try SocketAddress.resolve(config.directoryEndpoint ?? config.backend!) : nil
        name = config.name
        listenAddress = try SocketAddress.resolve(config.listen!)
        backendAddress = try SocketAddress.resolve(config.backend!)
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: "listener"] = .string(config.name)
        self.logger = logger
        trustBox = Mutex(trust)
        metrics.publish(trust)
    }

    /// The state new handshakes use. Connections keep the one they started with.
    var trust: TrustState { trustBox.withLock { $0 } }

    func swapTrust(_ new: TrustState) {
        trustBox.withLock { $0 = new }
        metrics.publish(new)
    }

    /// Takes a connection slot, or returns false when max_connections are open.
    func reserveSlot() -> Bool {
        let now = active.add(1, ordering: .relaxed).newValue
        if now > config.maxConnections {
            active.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func releaseSlot() {
        active.subtract(1, ordering: .relaxed)
    }

    /// The open-connections gauge, from the counter, when /metrics is read. Set by each
    /// worker as it counted, two workers could leave it at the older of their two values.
    func publishActive() {
        metrics.active.set(Int64(active.load(ordering: .relaxed)))
    }

    /// A CA a client sent became a known signer: say which of its CRLs now count.
    func announce(_ adoption: ClientIssuers.Adoption) {
        for crl in adoption.promoted {
            metrics.publish(crl, loadedAt: wallClockSeconds())
            logger.info("CRL in force", metadata: [
                "issuer": "\(crl.issuer)",
                "detail": "\(crl.file): its CA arrived in a verified client chain; \(crl.revoked.count) revoked",
            ])
        }
        for note in adoption.notes { logger.warning("CRL skipped", metadata: ["detail": "\(note)"]) }
    }
}
