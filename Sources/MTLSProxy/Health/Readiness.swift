/// The state of one readiness check.
public enum CheckState: String, Sendable {
    case ok, warn, fail
}

public struct ReadinessCheck: Sendable {
    public var name: String
    public var state: CheckState
    public var detail: String
}

/// What `/readyz` reports: ready when no check failed (a `warn` does not fail it).
public struct ReadinessReport: Sendable {
    public var draining: Bool
    public var checks: [ReadinessCheck]

    public var isReady: Bool { !draining && !checks.contains { $0.state == .fail } }

    public var json: String {
        var out = "{\"status\":\(JSON.quote(isReady ? "ready" : (draining ? "draining" : "not_ready")))"
        out += ",\"checks\":{"
        out += checks.map { "\(JSON.quote($0.name)):{\"state\":\(JSON.quote($0.state.rawValue)),\"detail\":\(JSON.quote($0.detail))}" }
            .joined(separator: ",")
        return out + "}}\n"
    }
}

enum Readiness {
    /// Evaluates every listener: bound, certificate valid, CRLs current (under
    /// `strict`, warning `crl_warn_before` ahead), backend answering the last probe.
    static func evaluate(_ listeners: [ListenerRuntime], workers: Int, draining: Bool, now: Int) -> ReadinessReport {
        var checks: [ReadinessCheck] = []
        for listener in listeners {
            let prefix = listener.name + "."
            let bound = listener.boundWorkers.load(ordering: .relaxed)
            checks.append(ReadinessCheck(
                name: prefix + "listener", state: bound == workers ? .ok : .fail,
                detail: "\(listener.config.listen!) bound by \(bound) of \(workers) workers"))

            let trust = listener.trust
            let notAfter = trust.serverCertificate.notAfter
            checks.append(ReadinessCheck(
                name: prefix + "certificate", state: notAfter > now ? .ok : .fail,
                detail: "\(trust.serverCertificate.subject) valid until \(Timestamp.iso8601(notAfter))"))

            if let policy = trust.crlPolicy {
                checks.append(crlCheck(listener, trust: trust, policy: policy, now: now, name: prefix + "crl"))
            }

            if listener.config.revocation.ocsp != .off { checks.append(ocspCheck(listener, name: prefix + "ocsp")) }
            if listener.config.usesDirectory {
                let directory = listener.directoryState.load(ordering: .relaxed)
                checks.append(ReadinessCheck(
                    name: prefix + "directory", state: directory == 1 ? .ok : .fail,
                    detail: "\(listener.config.directoryURL ?? listener.config.backend!.description) "
                        + (directory == 1 ? "connected" : directory == 0 ? "not connected yet" : "unreachable")))
            }
            let backend = listener.backendState.load(ordering: .relaxed)
            checks.append(ReadinessCheck(
                name: prefix + "backend", state: backend == 1 ? .ok : .fail,
                detail: "\(listener.config.backend!) " + (backend == 1 ? "answers" : backend == 0 ? "not probed yet" : "does not answer")
                    + (listener.config.clientAuth == .none || backend == 0 ? "" : backend == 1 ? " and accepts the proxy's bind" : " or refuses the proxy's bind")))
        }
        return ReadinessReport(draining: draining, checks: checks)
    }

    private static func crlCheck(_ listener: ListenerRuntime, trust: TrustState, policy: CRLPolicy, now: Int, name: String) -> ReadinessCheck {
        let missing = trust.issuersWithoutCurrentCRL(at: now)
        if policy == .strict && !missing.isEmpty {
            return ReadinessCheck(name: name, state: .fail, detail: "no current CRL for: " + missing.joined(separator: "; "))
        }
        let warnBefore = Int(listener.config.crlWarnBeforeNanos / 1_000_000_000)
        let active = trust.activeCRLs
        let soon = active.compactMap { crl -> String? in
            guard let next = crl.nextUpdate, next - now < warnBefore else { return nil }
            return "\(crl.issuer) nextUpdate \(Timestamp.iso8601(next))"
        }.sorted()
        if !soon.isEmpty {
            return ReadinessCheck(name: name, state: .warn, detail: "CRL due soon or stale: " + soon.joined(separator: "; "))
        }
        return ReadinessCheck(name: name, state: .ok, detail: "\(active.count) CRLs current (\(policy.rawValue))"
            + (trust.crls.heldCount > 0 ? "; \(trust.crls.heldCount) held until a client presents their issuing CA" : ""))
    }
}
