import Prometheus

/// How a connection ended: the `outcome` label and the `end` field of the log line.
public enum ConnectionEnd: String, Sendable, CaseIterable {
    /// Both sides finished normally (close_notify or FIN from the client, then the backend).
    case closed
    /// Refused during the handshake or verification.
    case refused
    case handshakeTimeout = "handshake_timeout"
    case idleTimeout = "idle_timeout"
    case backendUnavailable = "backend_unavailable"
    /// Over max_connections.
    case overLimit = "over_limit"
    /// Reset, protocol error or another I/O failure mid-stream.
    case error
    /// Ended by shutdown after shutdown_grace.
    case shutdown
    /// Closed because a new CRL revoked a certificate of its chain (revoke_active).
    case revoked
}

/// The Prometheus registry and the handles the hot path uses, made once per listener so
/// that no connection looks metrics up by name.
public final class ProxyMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let lastReloadTime: Gauge
    let lastReloadSuccess: Gauge
    let reloadFailures: Counter

    public init() {
        lastReloadTime = registry.makeGauge(descriptor: .init(
            namespace: "mtls_proxy", metricName: "last_reload_timestamp", unitName: "seconds",
            helpText: "Time of the last reload attempt (start counts as one)"))
        lastReloadSuccess = registry.makeGauge(descriptor: .init(
            namespace: "mtls_proxy", metricName: "last_reload_success",
            unitName: "", helpText: "1 if the last reload succeeded, 0 if it failed and the previous state was kept"))
        reloadFailures = registry.makeCounter(descriptor: .init(
            namespace: "mtls_proxy", metricName: "reload_failures", unitName: "total", helpText: "Failed reloads"))
    }

    func listener(_ name: String) -> ListenerMetrics { ListenerMetrics(registry: registry, listener: name) }

    func recordReload(success: Bool, at time: Int) {
        lastReloadTime.set(Int64(time))
        lastReloadSuccess.set(Int64(success ? 1 : 0))
        if !success { reloadFailures.increment() }
    }
}

final class ListenerMetrics: Sendable {
    let connections: [ConnectionEnd: Counter]
    let refusals: [RefusalReason: Counter]
    let active: Gauge
    let bytesFromClient: Counter
    let bytesToClient: Counter
    let handshakeSeconds: ValueHistogram
    let certificateNotAfter: Gauge
    let crlRejected: Counter
    let reloadFailures: Counter
    let directoryRequests: Counter
    let directoryCacheHits: Counter
    let ocsp: OCSPMetrics
    private let registry: PrometheusCollectorRegistry
    private let name: String

    init(registry: PrometheusCollectorRegistry, listener: String) {
        self.registry = registry
        name = listener
        let labels = [("listener", listener)]
        var connections: [ConnectionEnd: Counter] = [:]
        for end in ConnectionEnd.allCases {
            connections[end] = registry.makeCounter(
                descriptor: .init(namespace: "mtls_proxy", metricName: "connections", unitName: "total",
                                  helpText: "Connections by how they ended"),
                labels: labels + [("outcome", end.rawValue)])
        }
        self.connections = connections
        var refusals: [RefusalReason: Counter] = [:]
        for reason in RefusalReason.allCases {
            refusals[reason] = registry.makeCounter(
                descriptor: .init(namespace: "mtls_proxy", metricName: "handshake_failures", unitName: "total",
                                  helpText: "Refused or failed handshakes by reason"),
                labels: labels + [("reason", reason.rawValue)])
        }
        self.refusals = refusals
        active = registry.makeGauge(
            descriptor: .init(namespace: "mtls_proxy", metricName: "active_connections", unitName: "", helpText: "Open client connections"),
            labels: labels)
        let bytes = MetricNameDescriptor(namespace: "mtls_proxy", metricName: "bytes", unitName: "total",
                                         helpText: "Plaintext bytes relayed, by direction")
        bytesFromClient = registry.makeCounter(descriptor: bytes, labels: labels + [("direction", "client_to_backend")])
        bytesToClient = registry.makeCounter(descriptor: bytes, labels: labels + [("direction", "backend_to_client")])
        handshakeSeconds = registry.makeValueHistogram(
            descriptor: .init(namespace: "mtls_proxy", metricName: "handshake_duration", unitName: "seconds",
                              helpText: "Time from accept to a verified handshake"),
            labels: labels, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
        certificateNotAfter = registry.makeGauge(
            descriptor: .init(namespace: "mtls_proxy", metricName: "certificate_not_after", unitName: "seconds",
                              helpText: "Expiry of the server certificate"),
            labels: labels)
        directoryRequests = registry.makeCounter(
            descriptor: .init(namespace: "mtls_proxy", metricName: "directory_requests", unitName: "total",
                              helpText: "Searches sent to the directory for verify_cert_in_directory"),
            labels: labels)
        directoryCacheHits = registry.makeCounter(
            descriptor: .init(namespace: "mtls_proxy", metricName: "directory_cache_hits", unitName: "total",
                              helpText: "Directory checks answered from the cache"),
            labels: labels)
        ocsp = OCSPMetrics(registry: registry, labels: labels)
        reloadFailures = registry.makeCounter(
            descriptor: .init(namespace: "mtls_proxy", metricName: "listener_reload_failures", unitName: "total",
                              helpText: "Reloads of this listener that failed validation (the previous state was kept)"),
            labels: labels)
        crlRejected = registry.makeCounter(
            descriptor: .init(namespace: "mtls_proxy", metricName: "crl_rejected", unitName: "total",
                              helpText: "CRL files or entries skipped at load: unparsable or not signed by a trusted CA"),
            labels: labels)
    }

    func reloadFailed() { reloadFailures.increment() }

    /// Publishes what a newly loaded trust state holds.
    func publish(_ trust: TrustState) {
        certificateNotAfter.set(Int64(trust.serverCertificate.notAfter))
        if trust.crls.rejectedCount > 0 { crlRejected.increment(by: Int64(trust.crls.rejectedCount)) }
        for crl in trust.activeCRLs { publish(crl, loadedAt: trust.loadedAt) }
    }

    /// Publishes one CRL in force: at a reload, or when a client CA's CRL became usable.
    func publish(_ crl: CRLInfo, loadedAt: Int) {
        let labels = [("listener", name), ("issuer", crl.issuer)]
        registry.makeGauge(
            descriptor: .init(namespace: "mtls_proxy", metricName: "crl_next_update", unitName: "seconds",
                              helpText: "nextUpdate of the CRL loaded for each issuer"),
            labels: labels
        ).set(Int64(crl.nextUpdate ?? 0))
        registry.makeGauge(
            descriptor: .init(namespace: "mtls_proxy", metricName: "crl_this_update", unitName: "seconds",
                              helpText: "thisUpdate of the CRL loaded for each issuer"),
            labels: labels
        ).set(Int64(crl.thisUpdate))
        registry.makeGauge(
            descriptor: .init(namespace: "mtls_proxy", metricName: "crl_loaded", unitName: "seconds",
                              helpText: "When the CRL of each issuer was last loaded"),
            labels: labels
        ).set(Int64(loadedAt))
        registry.makeGauge(
            descriptor: .init(namespace: "mtls_proxy", metricName: "crl_revoked_serials",
                              unitName: "", helpText: "Revoked serials in the CRL loaded for each issuer"),
            labels: labels
        ).set(Int64(crl.revoked.count))
    }
}
