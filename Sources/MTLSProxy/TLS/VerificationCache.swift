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

    /// The verification of `chain`, which the peer of `session` sent. A hit costs the
    /// lookup of `chain.cacheKey` only: no certificate of the chain is imported.
    func verify(chain: PeerChain, session: gnutls_session_t, trust: TrustState) -> PeerVerifier.Result {
        let key = chain.cacheKey
        if let entry = entries[key], entry.generation == trust.generation, wallClockSeconds() < entry.validUntil {
            return PeerVerifier.Result(
                identity: entry.identity, refusal: nil, peer: chain, chain: entry.chain, validUntil: entry.validUntil)
        }
        let result = PeerVerifier.verify(chain: chain, session: session, trust: trust)
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
