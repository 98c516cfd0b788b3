import CGnuTLSShim
import Glibc

/// One verified CRL, reduced to what a handshake needs: a hash set of revoked serials,
/// so that the check costs the same whatever the size of the CRL.
struct CRLInfo: Sendable {
    var issuer: String
    /// The issuer's DER name (the `rawIssuer` of the certificates it covers) and the
    /// CRL's authority key identifier.
    var issuerKey: IssuerKey
    var revoked: Set<SerialNumber>
    var thisUpdate: Int
    /// nil when the CRL has no nextUpdate (RFC 5280 requires one; then it never goes stale).
    var nextUpdate: Int?
    /// The cRLNumber extension, normalised like a serial; nil when absent.
    var number: [UInt8]?
    var file: String

    init(issuer: String, issuerKey: IssuerKey, revoked: Set<SerialNumber>, thisUpdate: Int, nextUpdate: Int?,
         number: [UInt8]?, file: String) {
        self.issuer = issuer
        self.issuerKey = issuerKey
        self.revoked = revoked
        self.thisUpdate = thisUpdate
        self.nextUpdate = nextUpdate
        self.number = number
        self.file = file
    }

    /// What a handshake needs of a CRL our reader parsed.
    init(_ document: CRLDocument, file: String) {
        self.init(
            issuer: DistinguishedName.string(fromDER: document.issuerName),
            issuerKey: IssuerKey(name: document.issuerName, keyID: document.authorityKeyID ?? []),
            revoked: Set(document.revoked), thisUpdate: document.thisUpdate, nextUpdate: document.nextUpdate,
            number: document.number, file: file)
    }

    func isCurrent(at now: Int) -> Bool { nextUpdate.map { now < $0 } ?? true }

    /// True when `self` should replace `other` for the same issuer: a higher CRL number,
    /// or without numbers a later thisUpdate.
    func supersedes(_ other: CRLInfo) -> Bool {
        if let mine = number, let theirs = other.number, mine != theirs {
            return mine.count != theirs.count ? mine.count > theirs.count : theirs.lexicographicallyPrecedes(mine)
        }
        return thisUpdate > other.thisUpdate
    }
}

/// A CRL whose signer is not in the CA bundle: read, not trusted yet. It counts once a
/// client's verified chain brings a CA that signed it (`ClientIssuers`), and is never
/// used before: a CRL cannot be told from a stranger's until its signer is known.
struct HeldCRL: Sendable {
    var info: CRLInfo
    /// What the signature covers, the algorithm and the signature: enough to verify it
    /// later without the (large) list of entries.
    var signed: CRLDocument
}

/// What a CRL lookup needs: the CRL that covers certificates of an issuer.
protocol CRLLookup {
    func crl(for issuer: IssuerKey) -> CRLInfo?
}

/// The CRLs of one folder, each verified against the trusted CAs.
struct CRLSet: Sendable, CRLLookup {
    var byIssuer: [IssuerKey: CRLInfo] = [:]
    /// CRLs whose issuer is not in the bundle, by issuer name.
    var held: [[UInt8]: [HeldCRL]] = [:]
    /// Files and CRLs that were skipped, with the reason: logged and counted.
    var warnings: [String] = []
    var rejectedCount = 0
    var filesRead = 0
    /// Files that could not be read or held no CRL at all, with why: at start that is a
    /// configuration error; on a reload the CRLs loaded from them before are kept.
    var unreadable: [(file: String, why: String)] = []

    var heldCount: Int { held.values.reduce(0) { $0 + $1.count } }

    /// The CRL that covers certificates of `issuer`: the one of the same name and key
    /// identifier; where either side lacks a key identifier (not conforming to RFC 5280,
    /// but seen), the newest one of the same name.
    func crl(for issuer: IssuerKey) -> CRLInfo? {
        CRLSet.crl(for: issuer, in: byIssuer)
    }

    static func crl(for issuer: IssuerKey, in byIssuer: [IssuerKey: CRLInfo]) -> CRLInfo? {
        if let exact = byIssuer[issuer] { return exact }
        var best: CRLInfo?
        for crl in byIssuer.values where crl.issuerKey.name == issuer.name && (issuer.keyID.isEmpty || crl.issuerKey.keyID.isEmpty) {
            if best == nil || crl.supersedes(best!) { best = crl }
        }
        return best
    }

    /// Reads every file of `directory`. A file that does not parse, or a CRL that no
    /// trusted CA signed, is skipped with a warning: it never removes what did load.
    /// Throws only when the folder itself cannot be read.
    ///
    /// A file that exists but does not parse keeps the CRLs `previous` had loaded from
    /// it: a CRL caught half-written (truncated, then written) must not un-revoke
    /// anyone in between. A file that is gone takes its CRLs with it.
    static func load(directory: String, trustedCAs caBundle: [UInt8], previous: CRLSet? = nil) throws(SystemError) -> CRLSet {
        var set = CRLSet()
        let names = try listFiles(directory)
        do {
            try X509List.withCertificates(caBundle, format: GNUTLS_X509_FMT_PEM) { cas in
                let signers = cas.map { (cert: $0, info: CertificateInfo($0)) }
                for name in names {
                    let path = directory + "/" + name
                    let bytes: [UInt8]
                    do { bytes = try FileBytes.read(path) } catch {
                        set.skip("\(path): \(error)")
                        set.unreadable.append((path, "\(error)"))
                        set.carryOver(from: previous, file: path)
                        continue
                    }
                    set.filesRead += 1
                    if !set.add(fileBytes: bytes, path: path, cas: signers) {
                        set.unreadable.append((path, "not a CRL (PEM or DER)"))
                        set.carryOver(from: previous, file: path)
                    }
                }
            }
        } catch {
            set.skip("CA bundle: \(error)")
        }
        return set
    }

    private mutating func skip(_ warning: String) {
        warnings.append(warning)
        rejectedCount += 1
    }

    private mutating func carryOver(from previous: CRLSet?, file: String) {
        guard let previous else { return }
        for crl in previous.byIssuer.values where crl.file == file {
            if let existing = byIssuer[crl.issuerKey], !crl.supersedes(existing) { continue }
            byIssuer[crl.issuerKey] = crl
            warnings.append("\(file): keeping the CRL of \(crl.issuer) loaded from it before")
        }
        for (name, crls) in previous.held {
            for crl in crls where crl.info.file == file {
                held[name, default: []].append(crl)
                warnings.append("\(file): keeping the CRL of \(crl.info.issuer) loaded from it before")
            }
        }
    }

    /// Adds the CRLs of one file; false when the file held no CRL at all.
    private mutating func add(fileBytes bytes: [UInt8], path: String, cas: [(cert: gnutls_x509_crt_t, info: CertificateInfo)]) -> Bool {
        let documents = CRLFile.documents(in: bytes)
        guard !documents.isEmpty else {
            skip("\(path): not a CRL (PEM or DER), skipped")
            return false
        }
        for (index, parsed) in documents.enumerated() {
            let label = "\(path): CRL \(index + 1)"
            let document: CRLDocument
            switch parsed {
            case .failure(let error):
                skip("\(label) ignored: \(error)")
                continue
            case .success(let value):
                document = value
            }
            if let unsupported = document.unsupported {
                skip("\(label) ignored: \(unsupported)")
                continue
            }
            var signed = document
            signed.revoked = []
            let info = CRLInfo(document, file: path)
            switch Self.judge(document, cas: cas) {
            case .trusted:
                if let existing = byIssuer[info.issuerKey], !info.supersedes(existing) { continue }
                byIssuer[info.issuerKey] = info
            case .held(let note):
                held[document.issuerName, default: []].append(HeldCRL(info: info, signed: signed))
                if let note { warnings.append("\(label): \(note)") }
            case .rejected(let reason):
                skip("\(label) ignored: \(reason)")
            }
        }
        return true
    }

    enum Judgement: Equatable {
        case trusted
        /// Not signed by a CA of the bundle, and not a forgery of one either: its signer
        /// may arrive in a client's chain.
        case held(note: String?)
        case rejected(String)
    }

    /// Checks the signature against the trusted CAs. Dates are deliberately not judged
    /// here (GnuTLS would silently drop an expired CRL, failing open): an expired CRL
    /// still revokes, and the policy decides at handshake time whether it is current.
    static func judge(_ crl: CRLDocument, cas: [(cert: gnutls_x509_crt_t, info: CertificateInfo)]) -> Judgement {
        // Two CAs may share a name (a key rollover): try each of that name on its own.
        let candidates = cas.filter { $0.info.rawSubject == crl.issuerName }
        guard !candidates.isEmpty else { return .held(note: nil) }
        var lastReason = ""
        for candidate in candidates {
            switch CRLSignature.verify(crl, signer: candidate.cert) {
            case .valid: return .trusted
            case .invalid(let reason): lastReason = reason
            }
        }
        // A CRL that names a key of the bundle (or no key at all) and does not verify is
        // a forgery or damaged. One that names another key may come from a CA of the
        // same name that only clients carry.
        let claimsBundledKey = crl.authorityKeyID.map { id in candidates.contains { $0.info.subjectKeyID == id } } ?? true
        if claimsBundledKey {
            return .rejected("\(lastReason): not signed by the trusted CA it names")
        }
        return .held(note: "\(lastReason) against the trusted CA of that name, and it names another key: "
            + "held until a client's verified chain brings a CA with that key")
    }

    /// Regular files (or links to them) of a folder, skipping hidden names: editors'
    /// temporary files and the `..data` links of Kubernetes volumes.
    static func listFiles(_ directory: String) throws(SystemError) -> [String] {
        guard let dir = opendir(directory) else { throw SystemError("opendir", context: directory) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            var info = stat()
            guard stat(directory + "/" + name, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            names.append(name)
        }
        return names.sorted()
    }
}

struct CRLRejection: Error {
    let text: String
}
