/// What stands between a verified handshake and the backend, in this order: the first
/// download of a CRL the chain lacked (`crl_fetch`), OCSP (`ocsp`), and the directory
/// (`verify_cert_in_directory`, or `cert_map = search` for the login's entry). Nothing
/// reaches the backend until each has said yes. Each stage has a deadline on the
/// admission's own timer, so the verdict always comes, once, on the connection's loop.
final class Admission {
    enum Verdict {
        case admitted(Admitted)
        case refused(RefusalReason, detail: String)
    }

    /// What the checks found, for the rest of the connection's life.
    struct Admitted {
        /// The entry the certificate maps to (its subject under `cert_map = subject`).
        var entryDN: String?
        /// With `verify_cert_in_directory`: what the background re-check asks about.
        var directoryLookup: DirectoryLookup?
        /// Until when the OCSP answers it rests on hold (wall-clock seconds), when asked.
        var ocspUntil: Int?
    }

    private enum Stage {
        /// GnuTLS's status on the chain, to decide again once the CRL is in.
        case crlWait(chainStatus: UInt32)
        case ocsp, directory, done
    }

    /// Beyond the check's own timeout, the margin before the stage's deadline decides.
    static let graceNanos: UInt64 = 500_000_000

    private let listener: ListenerRuntime
    private let trust: TrustState
    private unowned let worker: Worker
    private let peerChain: PeerChain
    private let links: [ChainLink]
    private let identity: PeerIdentity
    /// What OCSP said goes in the connection's line as soon as it is said (good, or why
    /// best-effort let it pass), whatever ends the connection later.
    private let report: ConnectionReport
    private var stage = Stage.done
    private var admitted: Admitted
    private var decided: ((Verdict) -> Void)?
    private lazy var timer = worker.loop.timer { [unowned self] now in self.deadlinePassed(now: now) }

    /// Whether a client's connection needs any of these checks.
    static func isNeeded(_ config: ListenerConfig, awaitingCRL: Bool) -> Bool {
        awaitingCRL || config.revocation.ocsp != .off || config.usesDirectory
    }

    init(listener: ListenerRuntime, trust: TrustState, worker: Worker, peerChain: PeerChain, links: [ChainLink],
         identity: PeerIdentity, report: ConnectionReport, entryDN: String?) {
        self.listener = listener
        self.trust = trust
        self.worker = worker
        self.peerChain = peerChain
        self.links = links
        self.identity = identity
        self.report = report
        admitted = Admitted(entryDN: entryDN)
    }

    /// Runs the checks; `decided` runs once with the verdict (unless cancelled first).
    /// `awaitingCRL` is the chain's status when the verify callback let the client wait
    /// for a CRL's first download.
    func start(awaitingCRL: UInt32?, decided: @escaping (Verdict) -> Void) {
        self.decided = decided
        if let chainStatus = awaitingCRL { return waitForCRL(chainStatus: chainStatus) }
        askOCSP()
    }

    /// The connection ended first: no verdict will come.
    func cancel() {
        stage = .done
        decided = nil
        timer.cancel()
    }

    // MARK: - Stages

    private func enter(_ next: Stage, timeoutNanos: UInt64) {
        stage = next
        timer.cancel()
        timer.arm(at: monotonicNanos() + timeoutNanos + Self.graceNanos)
    }

    private func waitForCRL(chainStatus: UInt32) {
        enter(.crlWait(chainStatus: chainStatus), timeoutNanos: CRLFetcher.firstWaitNanos)
        CRLWait.start(links: links, chainStatus: chainStatus, listener: listener, loop: worker.loop) { [self] refusal in
            crlWaitEnded(refusal)
        }
    }

    /// The end of the CRL wait, from CRLWait or from the deadline when its poll runs
    /// late: either way the CRL verdict decides, never ocsp_policy.
    private func crlWaitEnded(_ refusal: RefusalReason?) {
        guard case .crlWait = stage else { return }
        guard let refusal else { return askOCSP() }
        let detail = switch refusal {
        case .revoked: "revoked by the CRL downloaded for it"
        case .crlMissing, .crlExpired: "no current CRL after waiting for its download"
        default: "refused after waiting for its CRL's download"
        }
        refuse(refusal, detail: detail)
    }

    private func askOCSP() {
        let config = listener.config.revocation
        guard config.ocsp != .off else { return askDirectory() }
        enter(.ocsp, timeoutNanos: config.ocspTimeoutNanos)
        RevocationGate.ask(links: links, peer: peerChain, trust: trust, listener: listener, loop: worker.loop) { [self] decision, until in
            guard case .ocsp = stage else { return }
            admitted.ocspUntil = until ?? wallClockSeconds() + RevocationGate.retrySeconds(config)
            ocspDecided(decision)
        }
    }

    private func ocspDecided(_ decision: OCSPPolicy.Decision) {
        switch decision {
        case .pass(let note):
            if !note.isEmpty { report.ocsp = note }
            askDirectory()
        case .refuse(let reason, let detail):
            refuse(reason, detail: detail)
        }
    }

    private func askDirectory() {
        guard listener.config.usesDirectory else { return finish(.admitted(admitted)) }
        let lookup = DirectoryLookup(chain: peerChain, identity: identity)
        admitted.directoryLookup = lookup
        enter(.directory, timeoutNanos: listener.config.directoryTimeoutNanos)
        DirectoryGate.ask(lookup, listener: listener, worker: worker, generation: trust.generation, peer: report.peer,
                          subject: identity.subject) { [self] decision in
            guard case .directory = stage else { return }
            directoryDecided(decision)
        }
    }

    private func directoryDecided(_ decision: DirectoryGate.Decision) {
        switch decision {
        case .pass(let dn):
            if let dn { admitted.entryDN = dn }
            // The login needs an entry: directory_unavailable = allow cannot invent one.
            if listener.config.clientAuth != .none && admitted.entryDN == nil {
                return refuse(.directoryUnavailable, detail: "the directory did not say which entry the certificate maps to")
            }
            finish(.admitted(admitted))
        case .refuse(let reason, let detail):
            refuse(reason, detail: detail)
        }
    }

    /// A stage's check did not answer in time: what that means is the stage's policy.
    private func deadlinePassed(now: UInt64) {
        switch stage {
        case .crlWait(let chainStatus):
            crlWaitEnded(CRLWait.verdict(links: links, chainStatus: chainStatus, listener: listener))
        case .ocsp:
            ocspDecided(OCSPPolicy.decide([OCSPPolicy.Checked(serial: identity.serialHex, outcome: .failure(.unavailable("no OCSP answer in time")))],
                                          policy: listener.config.revocation.ocspPolicy))
        case .directory:
            directoryDecided(DirectoryGate.decision(.unavailable("the directory did not answer in time"), listener: listener,
                                                    peer: report.peer, subject: identity.subject))
        case .done:
            break
        }
    }

    private func refuse(_ reason: RefusalReason, detail: String) {
        finish(.refused(reason, detail: detail))
    }

    private func finish(_ verdict: Verdict) {
        let decided = self.decided
        cancel()
        decided?(verdict)
    }
}
