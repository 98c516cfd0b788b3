import Prometheus

/// The OCSP metrics of one listener: requests made, answers by what they said, how
/// long the responder took, and checks answered from the cache.
final class OCSPMetrics: Sendable {
    /// The `status` label of an answer.
    enum Kind: String, CaseIterable {
        case good, revoked, unknown
        /// No answer: unreachable, timeout, HTTP error.
        case unavailable
        /// An answer that cannot be used: malformed, an error status, a bad signature,
        /// stale, or about another certificate.
        case invalid
    }

    let requests: Counter
    let responses: [Kind: Counter]
    let cacheHits: Counter
    let latency: ValueHistogram

    init(registry: PrometheusCollectorRegistry, labels: [(String, String)]) {
        requests = registry.makeCounter(
            descriptor: .init(namespace: "mtls_proxy", metricName: "ocsp_requests", unitName: "total",
                              helpText: "OCSP requests sent to responders"),
            labels: labels)
        var responses: [Kind: Counter] = [:]
        for kind in Kind.allCases {
            responses[kind] = registry.makeCounter(
                descriptor: .init(namespace: "mtls_proxy", metricName: "ocsp_responses", unitName: "total",
                                  helpText: "OCSP exchanges by outcome: good, revoked, unknown, unavailable (no answer), invalid (unusable answer)"),
                labels: labels + [("status", kind.rawValue)])
        }
        self.responses = responses
        cacheHits = registry.makeCounter(
            descriptor: .init(namespace: "mtls_proxy", metricName: "ocsp_cache_hits", unitName: "total",
                              helpText: "Certificates whose OCSP answer came from the cache"),
            labels: labels)
        latency = registry.makeValueHistogram(
            descriptor: .init(namespace: "mtls_proxy", metricName: "ocsp_request_duration", unitName: "seconds",
                              helpText: "Time from sending an OCSP request to its outcome"),
            labels: labels, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
    }

    func record(_ outcome: Result<OCSPAnswer, OCSPFailure>, seconds: Double) {
        latency.record(seconds)
        let kind: Kind
        switch outcome {
        case .success(let answer): kind = Kind(rawValue: answer.status.rawValue)!
        case .failure(.unavailable): kind = .unavailable
        case .failure: kind = .invalid
        }
        responses[kind]?.increment()
    }
}
