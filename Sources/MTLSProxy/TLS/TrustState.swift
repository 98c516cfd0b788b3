import CGnuTLSShim
import Glibc
import Logging
import Synchronization

/// A problem with a certificate, key, CA bundle or CRL folder: names the file.
public struct TrustLoadError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let message: String
    public var description: String { "\(file): \(message)" }
}

/// Everything a listener's handshakes need, loaded and checked as a whole and then
/// never changed: a reload builds a new one and swaps it in. Connections keep a strong
/// reference to the state they started with, because GnuTLS credentials are not
/// reference-counted and must outlive every session that uses them.
final class TrustState: @unchecked Sendable, CRLLookup {  // immutable after init (ClientIssuers locks its own state); GnuTLS creds are safe to share read-only
    let credentials: gnutls_certificate_credentials_t
    let priority: gnutls_priority_t
    let serverCertificate: CertificateInfo
    /// Trusted CAs by DER subject: how the revocation check walks up a chain.
    let caBySubject: [[UInt8]: CertificateInfo]
    let caCount: Int
    /// The DER of the trusted CAs by subject: what OCSP requests and answers need.
    let caDERBySubject: [[UInt8]: [UInt8]]
    let crls: CRLSet
    /// CAs that clients send (not in the bundle) and the held CRLs they signed.
    let clientIssuers: ClientIssuers
    /// What building this state found worth telling: CRLs skipped, CRLs of client CAs
    /// that became usable. Logged by whoever swaps the state in.
    let notes: [String]
    let crlPolicy: CRLPolicy?
    let allowList: AllowList
    let loadedAt: Int
    /// Distinguishes states for the verification cache: a result holds for one state only.
    let generation: UInt64
    /// The session ticket master key (nil with session_tickets = no). Read again from
    /// ticket_key_file on every reload, so a new key in the file takes effect like a new
    /// certificate; without a file, one random key for the process's lifetime.
    let ticketKey: TicketKey?

    init(
        config: ListenerConfig, previous: TrustState? = nil
    ) throws(TrustLoadError) {
        // At start (no previous state) a file in the CRL folder that is not a CRL is an
        // error, like a bad certificate; on a reload it is skipped and what it held is kept.
        let atStart = previous == nil
        let certPath = config.cert!, keyPath = config.key!, caPath = config.caBundle!
        let certBytes = try Self.read(certPath)
        let keyBytes = try Self.read(keyPath)
        let caBytes = try Self.read(caPath)
        if !config.sessionTickets {
            ticketKey = nil
        } else if let file = config.ticketKeyFile {
            ticketKey = try TicketKey(file: file)
        } else {
            if let kept = previous?.ticketKey { ticketKey = kept } else { ticketKey = try TicketKey() }
        }

        do {
            serverCertificate = try CertificateInfo.loadAll(from: certBytes, format: GNUTLS_X509_FMT_PEM)[0]
        } catch {
            throw TrustLoadError(file: certPath, message: "not a PEM certificate chain (\(GnuTLS.describe(error.code)))")
        }
        let now = wallClockSeconds()
        if serverCertificate.notAfter <= now {
            throw TrustLoadError(file: certPath, message: "certificate expired at \(Timestamp.iso8601(serverCertificate.notAfter))")
        }
        let cas: [CertificateInfo]
        do { cas = try CertificateInfo.loadAll(from: caBytes, format: GNUTLS_X509_FMT_PEM) } catch {
            throw TrustLoadError(file: caPath, message: "no usable CA certificate (\(GnuTLS.describe(error.code)))")
        }
        var bySubject: [[UInt8]: CertificateInfo] = [:]
        for ca in cas { bySubject[ca.rawSubject] = ca }
        caBySubject = bySubject
        caCount = cas.count
        caDERBySubject = config.revocation.ocsp == .off && !config.revocation.crlFetch ? [:] : X509List.derBySubject(pem: caBytes)

        var crlSet = CRLSet()
        if let dir = config.crlDir {
            do { crlSet = try CRLSet.load(directory: dir, trustedCAs: caBytes, previous: previous?.crls) } catch {
                throw TrustLoadError(file: dir, message: "cannot read the CRL folder: \(String(cString: strerror(error.errno)))")
            }
            if atStart, let bad = crlSet.unreadable.first {
                throw TrustLoadError(file: bad.file, message: bad.why)
            }
        }
        crls = crlSet
        crlPolicy = config.crlPolicy
        allowList = AllowList(config)

        var creds: gnutls_certificate_credentials_t?
        gnutls_certificate_allocate_credentials(&creds)
        guard let creds else { throw TrustLoadError(file: certPath, message: "out of memory") }
        var keyRC: Int32 = 0
        GnuTLS.withDatum(certBytes) { cert in
            GnuTLS.withDatum(keyBytes) { key in
                keyRC = gnutls_certificate_set_x509_key_mem(creds, &cert, &key, GNUTLS_X509_FMT_PEM)
            }
        }
        guard keyRC >= 0 else {
            gnutls_certificate_free_credentials(creds)
            if keyRC == GNUTLS_E_CERTIFICATE_KEY_MISMATCH {
                throw TrustLoadError(file: keyPath, message: "private key does not match the certificate in \(certPath)")
            }
            throw TrustLoadError(file: keyPath, message: "cannot load private key (\(GnuTLS.describe(keyRC)))")
        }

        // The trust list holds the CAs only. CRLs are checked by our own lookup, because
        // GnuTLS either drops expired CRLs (fail-open) or trusts unverified ones.
        var trustList: gnutls_x509_trust_list_t?
        gnutls_x509_trust_list_init(&trustList, 0)
        let added = GnuTLS.withDatum(caBytes) { ca in
            // USE_IN_TLS: the CertificateRequest lists these CAs, so clients pick the right cert.
            gnutls_x509_trust_list_add_trust_mem(trustList, &ca, nil, GNUTLS_X509_FMT_PEM, GNUTLS_TL_USE_IN_TLS.rawValue, 0)
        }
        guard added > 0 else {
            gnutls_x509_trust_list_deinit(trustList, 1)
            gnutls_certificate_free_credentials(creds)
            throw TrustLoadError(file: caPath, message: "no CA certificate could be added (\(GnuTLS.describe(added)))")
        }
        gnutls_certificate_set_trust_list(creds, trustList, 0)  // creds own the list now
        gnutls_certificate_set_verify_function(creds, TLSSession.verifyCallback)

        // CAs that clients sent under the previous state are verified against this
        // one's bundle now, so that their CRLs count from the first moment.
        let issuers = ClientIssuers(
            held: crlSet.held, trustList: trustList!, registry: previous?.clientIssuers.registry ?? ClientIssuerRegistry())
        var notes = crlSet.warnings
        for known in issuers.registry.all {
            guard let adoption = issuers.adopt(known.der, others: known.others) else { continue }
            notes += adoption.notes
        }
        clientIssuers = issuers
        self.notes = notes

        var prio: gnutls_priority_t?
        var errorPosition: UnsafePointer<CChar>?
        let prioRC = gnutls_priority_init(&prio, config.priority, &errorPosition)
        guard prioRC >= 0, let prio else {
            gnutls_certificate_free_credentials(creds)
            let at = errorPosition.map { " at '\(String(cString: $0))'" } ?? ""
            throw TrustLoadError(file: "priority", message: "bad GnuTLS priority string\(at): \(GnuTLS.describe(prioRC))")
        }
        credentials = creds
        priority = prio
        // Parsing a large CRL leaves megabytes of freed ASN.1 nodes behind; give them back.
        shim_malloc_trim()
        loadedAt = now
        generation = TrustState.generations.add(1, ordering: .relaxed).newValue
    }

    private static let generations = Atomic<UInt64>(0)

    deinit {
        gnutls_certificate_free_credentials(credentials)
        gnutls_priority_deinit(priority)
    }

    private static func read(_ path: String) throws(TrustLoadError) -> [UInt8] {
        do { return try FileBytes.read(path) } catch {
            throw TrustLoadError(file: path, message: String(cString: strerror(error.errno)))
        }
    }

    /// The CRL that covers certificates of `issuer`: one verified against the bundle,
    /// or one of a CA that clients send, once such a client has shown that CA.
    func crl(for issuer: IssuerKey) -> CRLInfo? {
        if let crl = crls.crl(for: issuer) { return crl }
        return crls.held.isEmpty ? nil : clientIssuers.crl(for: issuer)
    }

    /// Every CRL in force: the bundle's and those of client CAs seen so far.
    var activeCRLs: [CRLInfo] {
        Array(crls.byIssuer.values) + (crls.held.isEmpty ? [] : clientIssuers.crls)
    }

    /// CAs that issue certificates but have no current CRL: what `strict` will refuse.
    /// Client CAs count from the moment a client presented them.
    func issuersWithoutCurrentCRL(at now: Int) -> [String] {
        guard crlPolicy == .strict else { return [] }
        return (Array(caBySubject.values) + clientIssuers.adoptedCAs).filter { ca in
            guard let crl = crl(for: ca.ownKey) else { return true }
            return !crl.isCurrent(at: now)
        }.map(\.subject).sorted()
    }
}

extension TrustState {
    /// What loading found: skipped CRLs as warnings, held ones (waiting for a client to
    /// bring their CA) as information, and client CAs' CRLs that count already.
    func logLoadNotes(to logger: Logger) {
        for note in notes { logger.warning("CRL skipped", metadata: ["detail": "\(note)"]) }
        for held in crls.held.values.joined() where clientIssuers.crl(for: held.info.issuerKey) == nil {
            logger.info("CRL held", metadata: [
                "issuer": "\(held.info.issuer)",
                "detail": "\(held.info.file): its CA is not in ca_bundle; it counts once a client's verified chain brings that CA",
            ])
        }
    }
}
