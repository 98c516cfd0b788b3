/// crl_fetch: the first client of an issuer whose CRL is being downloaded for the first
/// time waits for that download (within CRLFetcher.firstWaitNanos) instead of being
/// refused for want of a CRL; then the CRL policy decides against the state loaded
/// since. The verify callback lets such a client finish its handshake, and the
/// connection asks here before anything reaches the backend.
enum CRLWait {
    static let pollNanos: UInt64 = 50_000_000

    /// Whether a refusal may wait: it is only `crl_missing`, and a first download of a
    /// CRL for an issuer on the chain is under way (or was just asked for).
    static func mayWait(_ refusal: RefusalReason?, chain: PeerChain, links: [ChainLink], listener: ListenerRuntime) -> Bool {
        CRLFetcher.shared.note(chain: chain, listener: listener)
        guard refusal == .crlMissing else { return false }
        return CRLFetcher.shared.firstFetchPending(issuers: missing(links, listener: listener), listener: listener)
    }

    static func missing(_ links: [ChainLink], listener: ListenerRuntime) -> [[UInt8]] {
        let trust = listener.trust
        return links.filter { trust.crl(for: $0.issuer) == nil }.map(\.issuer.name)
    }

    /// Calls `done` on `loop` with the CRL policy's verdict once every CRL the chain
    /// lacks is loaded, or its first download has ended, or the wait is over.
    static func start(links: [ChainLink], listener: ListenerRuntime, loop: EventLoop, done: @escaping (RefusalReason?) -> Void) {
        let deadline = monotonicNanos() + CRLFetcher.firstWaitNanos
        var timer: LoopTimer?
        func check(_ now: UInt64) -> Bool {
            let missing = missing(links, listener: listener)
            // A download that ended is written, then loaded by the folder watch within
            // about 200 ms: give the reload that long before deciding.
            let settled = missing.isEmpty || CRLFetcher.shared.firstFetchesDone(issuers: missing, listener: listener, for: 300_000_000)
            guard settled || now >= deadline else { return false }
            let trust = listener.trust
            done(VerificationPolicy.revocationRefusal(chain: links, crls: trust, policy: trust.crlPolicy ?? .strict,
                                                      now: wallClockSeconds()))
            return true
        }
        if check(monotonicNanos()) { return }
        timer = loop.every(pollNanos) { now in
            if check(now) { timer?.cancel(); timer = nil }
        }
    }
}
