import CGnuTLSShim

/// Accepted verifications per event loop, keyed by the exact chain bytes: a client that
/// comes back (a new connection, or a resumed session that must be re-checked) costs a
/// hash lookup instead of signature checks. An entry holds for one trust state only
/// (a reload starts afresh) and until the first expiry on its path. Refusals are not
/// cached: they are rare, and each deserves a fresh look.
final class VerificationCache {
    private struct Entry {
        let generation: UInt64
        let validUntil: Int
        let identity: PeerIdentity
        let chain: [ChainLink]
    }

    static let capacity = 8192
    private var entries: [[UInt8]: Entry] = [:]
    private(set) var hits = 0
    private(set) var misses = 0

    func verify(session: gnutls_session_t, trust: TrustState) -> PeerVerifier.Result {
        guard let key = PeerVerifier.chainKey(session: session) else {
            return PeerVerifier.Result(identity: nil, refusal: .noCertificate)
        }
        if let entry = entries[key], entry.generation == trust.generation, wallClockSeconds() < entry.validUntil {
            hits += 1
            return PeerVerifier.Result(identity: entry.identity, refusal: nil, chain: entry.chain, validUntil: entry.validUntil)
        }
        misses += 1
        let result = PeerVerifier.verify(session: session, trust: trust)
        if result.refusal == nil, let identity = result.identity {
            // Bounded: when full, start over rather than track ages on the hot path.
            if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = Entry(generation: trust.generation, validUntil: result.validUntil, identity: identity, chain: result.chain)
        } else {
            entries[key] = nil
        }
        return result
    }
}
