import CGnuTLSShim
import Glibc

/// Who the client said it is: the end-entity certificate, for logs.
struct PeerIdentity: Sendable {
    var subject: String
    var issuer: String
    var serialHex: String
    var commonName: String?
}

/// Verifies the certificate chain of a session's peer against a TrustState.
enum PeerVerifier {
    struct Result {
        var identity: PeerIdentity?
        var refusal: RefusalReason?
        /// What the client sent (nil when it sent no certificate).
        var peer: PeerChain?
        /// Every certificate of the chain, for revoking live connections later.
        var chain: [ChainLink] = []
        /// Wall-clock second until which an acceptance stays true for the same state.
        var validUntil = 0
        /// CAs of the client's chain that became known signers in this verification.
        var adoptions: [ClientIssuers.Adoption] = []
        /// GnuTLS's verdict on the chain (its status bits), kept so that the same
        /// decision can be made again later (after waiting for a CRL).
        var chainStatus: UInt32 = 0
        /// The refusal is `crl_missing` and nothing else stands against the client: the
        /// chain reached an anchor, no status bit refuses it, the allow-list permits it.
        /// Only such a client may wait for its issuer's first CRL download (crl_fetch).
        var refusedForWantOfCRLOnly = false
        /// The certificates (DER) on the path that reached a trust anchor, leaf first, the
        /// bundle's own CAs left out; empty when the chain reached none. Only these may
        /// name distribution points to fetch: anything else the client sent is unchecked.
        var verifiedPath: [[UInt8]] = []
    }

    /// Verifies `chain`, the certificates the peer of `session` sent (GnuTLS's own
    /// verification of the session still runs: it checks signatures and purposes).
    static func verify(chain: PeerChain, session: gnutls_session_t, trust: TrustState) -> Result {
        let sent = chain.certificates
        guard let leaf = sent.first?.info else { return Result(identity: nil, refusal: .badCertificate, peer: chain) }
        let identity = PeerIdentity(
            subject: leaf.subject, issuer: leaf.issuer, serialHex: leaf.serialHex, commonName: leaf.commonName)

        var status: UInt32 = 0
        let rc = GNUTLS_KP_TLS_WWW_CLIENT.withCString { oid -> Int32 in
            // The clientAuth purpose makes GnuTLS check the extended key usage; without
            // it a serverAuth-only certificate would be accepted.
            var purpose = gnutls_typed_vdata_st(
                type: GNUTLS_DT_KEY_PURPOSE_OID,
                data: UnsafeMutablePointer(mutating: UnsafeRawPointer(oid).assumingMemoryBound(to: UInt8.self)),
                size: 0)
            return gnutls_certificate_verify_peers(session, &purpose, 1, &status)
        }
        if rc < 0 { return Result(identity: identity, refusal: .badCertificate, peer: chain) }

        let path = ChainPath.walk(leaf: leaf, sent: sent, trust: trust)
        if status & GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue != 0, path.anchored, !path.caFromClient.isEmpty {
            // GnuTLS takes the first certificate of the issuer's name that the client sent
            // and does not try another (a cross-signed CA has two). Our walk found a path
            // to the bundle: verify exactly that path.
            let ordered = [sent[0].der] + path.caFromClient.map(\.der)
            if let again = trust.clientIssuers.status(ofChain: ordered, clientAuth: true) { status = again }
        }
        var adoptions: [ClientIssuers.Adoption] = []
        if status & ChainPath.untrustedBits == 0 {
            // The chain verified up to a trust anchor: the CAs the client sent on that
            // path are known-good signers, and the CRLs they signed now count.
            let others = sent.dropFirst().map(\.der)
            for ca in path.caFromClient where !trust.clientIssuers.hasSeen(ca.der) {
                if let adoption = trust.clientIssuers.adopt(ca.der, others: others.filter { $0 != ca.der }) {
                    adoptions.append(adoption)
                }
            }
        }
        let now = wallClockSeconds()
        var refusal = VerificationPolicy.decide(
            chainStatus: status, chain: path.links, crls: trust, policy: trust.crlPolicy, now: now)
        // The names of the first certificate sent, as long as it imported (only then is
        // it the leaf verified above).
        if refusal == nil, !trust.allowList.isEmpty, let names = chain.leaf?.names, !trust.allowList.permits(names) {
            refusal = .notAllowed
        }
        var result = Result(identity: identity, refusal: refusal, peer: chain, chain: path.links)
        result.adoptions = adoptions
        result.chainStatus = status
        if path.anchored, status & ChainPath.untrustedBits == 0 {
            // Of the client's CAs, only those that verified on their own (adopted): the
            // walk may have taken a look-alike of the CA that GnuTLS actually used.
            result.verifiedPath = [sent[0].der] + path.caFromClient.map(\.der).filter { trust.clientIssuers.isAdopted($0) }
        }
        if refusal == .crlMissing, VerificationPolicy.refusal(forChainStatus: status) == nil {
            // decide() reports a missing CRL before expiry or purpose: look at those too.
            result.refusedForWantOfCRLOnly = trust.allowList.isEmpty || chain.leaf.map { trust.allowList.permits($0.names) } == true
        }
        result.validUntil = validUntil(sent: sent.map(\.info), chain: path.links, trust: trust, now: now)
        return result
    }

    /// Until when an acceptance may be reused: the first expiry of a certificate on the
    /// path, or (under strict) of a CRL it depends on, and an hour at most.
    private static func validUntil(sent: [CertificateInfo], chain: [ChainLink], trust: TrustState, now: Int) -> Int {
        var until = now + 3600
        for cert in sent { until = min(until, cert.notAfter) }
        for link in chain {
            if let ca = trust.caBySubject[link.issuer.name] { until = min(until, ca.notAfter) }
            if trust.crlPolicy == .strict, let next = trust.crl(for: link.issuer)?.nextUpdate {
                until = min(until, next)
            }
        }
        return until
    }
}
