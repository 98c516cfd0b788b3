import CGnuTLSShim
import Synchronization

/// CAs that are not in `ca_bundle` but arrive in clients' handshakes, and the CRLs they
/// signed. The most common enterprise layout puts only the root in the bundle; each
/// client sends its issuing CA. That CA's CRL sits in `crl_dir` from the start, but it
/// cannot be told from a stranger's CRL until the CA is known to chain to a trusted
/// root: so it is held (`CRLSet.held`), and becomes usable the first time a client's
/// chain brings a CA that verifies against the trust list and signed it. From then on it
/// counts exactly like the CRL of a bundled CA.
///
/// One per trust state: each CA certificate is verified once per state, and each held
/// CRL once per signer. The registry outlives reloads, so that a new state verifies the
/// CAs seen before, and their CRLs, while it is built: a new CRL of such a CA then
/// closes live connections like any other.
final class ClientIssuers: @unchecked Sendable {  // GnuTLS trust list is read-only once built; the rest is under the lock
    /// What one adoption changed, for the log and the metrics.
    struct Adoption: Sendable {
        var ca: String
        var promoted: [CRLInfo] = []
        var notes: [String] = []
    }

    private struct State {
        /// CA certificates (DER) seen under this state, and whether they verified.
        var seen: [[UInt8]: Bool] = [:]
        var adopted: [IssuerKey: CertificateInfo] = [:]
        var crls: [IssuerKey: CRLInfo] = [:]
    }

    let held: [[UInt8]: [HeldCRL]]
    let registry: ClientIssuerRegistry
    private let trustList: gnutls_x509_trust_list_t
    private let state = Mutex(State())

    init(held: [[UInt8]: [HeldCRL]], trustList: gnutls_x509_trust_list_t, registry: ClientIssuerRegistry) {
        self.held = held
        self.trustList = trustList
        self.registry = registry
    }

    /// The promoted CRL that covers certificates of `issuer`, if any.
    func crl(for issuer: IssuerKey) -> CRLInfo? {
        state.withLock { CRLSet.crl(for: issuer, in: $0.crls) }
    }

    var crls: [CRLInfo] { state.withLock { Array($0.crls.values) } }
    var adoptedCAs: [CertificateInfo] { state.withLock { Array($0.adopted.values) } }

    /// Whether this CA certificate was already looked at under this state: the cheap
    /// question a handshake asks before anything else.
    func hasSeen(_ der: [UInt8]) -> Bool { state.withLock { $0.seen[der] != nil } }

    /// Whether `der` was adopted: it verified up to the trust list.
    func isAdopted(_ der: [UInt8]) -> Bool { state.withLock { $0.seen[der] == true } }

    /// Verifies `der` (a CA certificate a client sent) against the trust list, with
    /// `others` (the other CA certificates of that chain) as intermediates; when it
    /// verifies, it becomes a known signer and the held CRLs it signed become usable.
    /// Returns nil when the certificate was seen before under this state.
    func adopt(_ der: [UInt8], others: [[UInt8]]) -> Adoption? {
        state.withLock { state -> Adoption? in
            guard state.seen[der] == nil else { return nil }
            state.seen[der] = false
            if state.seen.count > ClientIssuerRegistry.capacity * 4 { return nil }  // a flood of made-up CAs: stop here
            return CertificateList.with([der]) { first in CertificateList.with(others) { rest -> Adoption? in
                guard let ca = first.first else { return nil }
                let info = CertificateInfo(ca)
                var adoption = Adoption(ca: info.subject)
                guard verifies([ca] + rest) else { return nil }
                state.seen[der] = true
                state.adopted[info.ownKey] = info
                registry.remember(der, others: others)
                for candidate in held[info.rawSubject] ?? [] {
                    // A CRL naming another key of this name belongs to another CA.
                    if let id = candidate.signed.authorityKeyID, !info.subjectKeyID.isEmpty, id != info.subjectKeyID { continue }
                    switch CRLSignature.verify(candidate.signed, signer: ca) {
                    case .valid:
                        let crl = candidate.info
                        if let existing = state.crls[crl.issuerKey], !crl.supersedes(existing) { continue }
                        state.crls[crl.issuerKey] = crl
                        adoption.promoted.append(crl)
                    case .invalid(let reason):
                        adoption.notes.append("\(candidate.info.file) ignored: \(reason): not signed by \(info.subject), which clients present")
                    }
                }
                return adoption
            } }
        }
    }

    /// True when the first certificate chains to a trust anchor, the others serving as
    /// intermediates. No purpose is asked: a CA signs, it is not a TLS client.
    private func verifies(_ certs: [gnutls_x509_crt_t]) -> Bool {
        status(of: certs, purpose: nil) == 0
    }

    /// GnuTLS's verification status of a chain given in order (leaf first) against the
    /// trust list, with the clientAuth purpose when asked; nil when it could not run.
    func status(ofChain ders: [[UInt8]], clientAuth: Bool) -> UInt32? {
        CertificateList.with(ders) { certs in
            guard certs.count == ders.count else { return nil }
            return clientAuth ? GNUTLS_KP_TLS_WWW_CLIENT.withCString { status(of: certs, purpose: $0) } : status(of: certs, purpose: nil)
        }
    }

    private func status(of certs: [gnutls_x509_crt_t], purpose: UnsafePointer<CChar>?) -> UInt32? {
        var list = certs.map { Optional($0) }
        var status: UInt32 = 0
        var vdata = gnutls_typed_vdata_st(
            type: GNUTLS_DT_KEY_PURPOSE_OID,
            data: purpose.map { UnsafeMutablePointer(mutating: UnsafeRawPointer($0).assumingMemoryBound(to: UInt8.self)) },
            size: 0)
        let rc = purpose == nil
            ? gnutls_x509_trust_list_verify_crt2(trustList, &list, UInt32(list.count), nil, 0, 0, &status, nil)
            : gnutls_x509_trust_list_verify_crt2(trustList, &list, UInt32(list.count), &vdata, 1, 0, &status, nil)
        return rc == 0 ? status : nil
    }
}

/// The CA certificates clients sent that verified, remembered across reloads (bounded).
final class ClientIssuerRegistry: Sendable {
    static let capacity = 1024
    private let known = Mutex<[[UInt8]: [[UInt8]]]>([:])

    func remember(_ der: [UInt8], others: [[UInt8]]) {
        known.withLock { known in
            if known[der] == nil && known.count >= Self.capacity { known.removeValue(forKey: known.keys.first!) }
            known[der] = others
        }
    }

    var all: [(der: [UInt8], others: [[UInt8]])] { known.withLock { $0.map { ($0.key, $0.value) } } }
}

/// Temporary GnuTLS certificates imported from DER, freed when the closure returns;
/// the ones that do not import are left out.
enum CertificateList {
    static func with<R>(_ ders: [[UInt8]], _ body: ([gnutls_x509_crt_t]) -> R) -> R {
        var certs: [gnutls_x509_crt_t] = []
        defer { for cert in certs { gnutls_x509_crt_deinit(cert) } }
        for der in ders {
            var cert: gnutls_x509_crt_t?
            guard gnutls_x509_crt_init(&cert) == 0, let cert else { continue }
            let rc = GnuTLS.withDatum(der) { datum in gnutls_x509_crt_import(cert, &datum, GNUTLS_X509_FMT_DER) }
            if rc == 0 { certs.append(cert) } else { gnutls_x509_crt_deinit(cert) }
        }
        return body(certs)
    }
}
