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

/// The CRLs of one folder, each verified against the trusted CAs.
struct CRLSet: Sendable {
    var byIssuer: [IssuerKey: CRLInfo] = [:]
    /// Files and CRLs that were skipped, with the reason: logged and counted.
    var warnings: [String] = []
    var rejectedCount = 0
    var filesRead = 0
    /// Files that could not be read or held no CRL at all, with why: at start that is a
    /// configuration error; on a reload the CRLs loaded from them before are kept.
    var unreadable: [(file: String, why: String)] = []

    /// Reads every file of `directory`. A file that does not parse, or a CRL that no
    /// trusted CA signed, is skipped with a warning: it never removes what did load.
    /// Throws only when the folder itself cannot be read.
    ///
    /// A file that exists but does not parse keeps the CRLs `previous` had loaded from
    /// it: a CRL caught half-written (truncated, then written) must not un-revoke
    /// anyone in between. A file that is gone takes its CRLs with it.
    /// The CRL that covers certificates of `issuer`: the one of the same name and key
    /// identifier; where either side lacks a key identifier (not conforming to RFC 5280,
    /// but seen), the newest one of the same name.
    func crl(for issuer: IssuerKey) -> CRLInfo? {
        if let exact = byIssuer[issuer] { return exact }
        var best: CRLInfo?
        for crl in byIssuer.values where crl.issuerKey.name == issuer.name && (issuer.keyID.isEmpty || crl.issuerKey.keyID.isEmpty) {
            if best == nil || crl.supersedes(best!) { best = crl }
        }
        return best
    }

    static func load(directory: String, trustedCAs caBundle: [UInt8], previous: CRLSet? = nil) throws(SystemError) -> CRLSet {
        var set = CRLSet()
        let names = try listFiles(directory)
        do {
            try X509List.withCertificates(caBundle, format: GNUTLS_X509_FMT_PEM) { cas in
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
                    if !set.add(fileBytes: bytes, path: path, cas: cas) {
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
    }

    /// Adds the CRLs of one file; false when the file held no CRL at all.
    private mutating func add(fileBytes bytes: [UInt8], path: String, cas: [gnutls_x509_crt_t]) -> Bool {
        let isPEM = bytes.starts(with: Array("-----BEGIN".utf8)) || containsPEMMarker(bytes)
        var list: UnsafeMutablePointer<gnutls_x509_crl_t?>?
        var count: UInt32 = 0
        let rc = GnuTLS.withDatum(bytes) { datum in
            gnutls_x509_crl_list_import2(&list, &count, &datum, isPEM ? GNUTLS_X509_FMT_PEM : GNUTLS_X509_FMT_DER, 0)
        }
        guard rc >= 0, count > 0, let list else {
            skip("\(path): not a CRL (\(GnuTLS.describe(rc < 0 ? rc : GNUTLS_E_BASE64_DECODING_ERROR))), skipped")
            return false
        }
        defer {
            for i in 0..<Int(count) { if let crl = list[i] { gnutls_x509_crl_deinit(crl) } }
            shim_gnutls_free(list)
        }
        for i in 0..<Int(count) {
            guard let crl = list[i] else { continue }
            switch Self.verify(crl, cas: cas) {
            case .failure(let reason):
                skip("\(path): CRL \(i + 1) ignored: \(reason.text)")
            case .success:
                if let unsupported = Self.unsupportedScope(crl) {
                    skip("\(path): CRL \(i + 1) ignored: \(unsupported)")
                    continue
                }
                let info = Self.read(crl, file: path)
                if let existing = byIssuer[info.issuerKey], !info.supersedes(existing) { continue }
                byIssuer[info.issuerKey] = info
            }
        }
        return true
    }

    /// Checks the signature against the trusted CAs. Dates are deliberately not judged
    /// here (GnuTLS would silently drop an expired CRL, failing open): an expired CRL
    /// still revokes, and the policy decides at handshake time whether it is current.
    private static func verify(_ crl: gnutls_x509_crl_t, cas: [gnutls_x509_crt_t]) -> Result<Void, CRLRejection> {
        // GnuTLS picks a CRL's signer by name alone; with two CAs of one name (a key
        // rollover) it may try the wrong one. Try each CA of that name on its own.
        var datum = gnutls_datum_t()
        let issuerName = gnutls_x509_crl_get_raw_issuer_dn(crl, &datum) == 0 ? GnuTLS.takeBytes(&datum) : []
        let candidates = cas.filter { ca in
            var name = gnutls_datum_t()
            return gnutls_x509_crt_get_raw_dn(ca, &name) == 0 && GnuTLS.takeBytes(&name) == issuerName
        }
        guard !candidates.isEmpty else { return .failure(CRLRejection(text: "no trusted CA issued it (a CRL from a stranger)")) }
        let fatal = GNUTLS_CERT_SIGNATURE_FAILURE.rawValue | GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue
            | GNUTLS_CERT_SIGNER_NOT_CA.rawValue | GNUTLS_CERT_INSECURE_ALGORITHM.rawValue
            | GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE.rawValue
        var lastStatus: UInt32 = 0
        for ca in candidates {
            var status: UInt32 = 0
            var one: gnutls_x509_crt_t? = ca
            let rc = gnutls_x509_crl_verify(crl, &one, 1, 0, &status)
            // Dates are not judged here (GnuTLS would drop an expired CRL, failing open):
            // an expired CRL still revokes; the policy decides at handshake time.
            if rc >= 0 && status & fatal == 0 { return .success(()) }
            lastStatus = status
        }
        return .failure(CRLRejection(
            text: "its signature does not verify against the trusted CA (status 0x\(String(lastStatus, radix: 16)))"))
    }

    /// CRLs whose scope is not "every certificate of this issuer" are refused loudly
    /// rather than misread: a delta CRL lists only changes, and an issuing distribution
    /// point makes a CRL partial or indirect (entries for other issuers).
    private static func unsupportedScope(_ crl: gnutls_x509_crl_t) -> String? {
        var index: UInt32 = 0
        while true {
            var oid = [CChar](repeating: 0, count: 128)
            var size = oid.count
            var critical: UInt32 = 0
            guard gnutls_x509_crl_get_extension_info(crl, index, &oid, &size, &critical) == 0 else { return nil }
            let name = String(decoding: oid.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            switch name {
            case "2.5.29.27": return "a delta CRL (not supported: publish full CRLs)"
            case "2.5.29.28": return "an issuing distribution point (partitioned or indirect CRLs are not supported)"
            default: index += 1
            }
        }
    }

    private static func read(_ crl: gnutls_x509_crl_t, file: String) -> CRLInfo {
        var datum = gnutls_datum_t()
        let issuerName = gnutls_x509_crl_get_raw_issuer_dn(crl, &datum) == 0 ? GnuTLS.takeBytes(&datum) : []
        var keyID = [UInt8](repeating: 0, count: 64)
        var keyIDSize = keyID.count
        var keyIDCritical: UInt32 = 0
        let hasKeyID = gnutls_x509_crl_get_authority_key_id(crl, &keyID, &keyIDSize, &keyIDCritical) == 0
        let issuerKey = IssuerKey(name: issuerName, keyID: hasKeyID ? Array(keyID[0..<keyIDSize]) : [])
        let issuer = gnutls_x509_crl_get_issuer_dn3(crl, &datum, 0) == 0 ? GnuTLS.takeString(&datum) : ""
        let next = gnutls_x509_crl_get_next_update(crl)
        var numberBytes = [UInt8](repeating: 0, count: 64)
        var numberSize = numberBytes.count
        var critical: UInt32 = 0
        let number = gnutls_x509_crl_get_number(crl, &numberBytes, &numberSize, &critical) == 0
            ? Hex.normalizedSerial(numberBytes[0..<numberSize]) : nil

        var revoked = Set<SerialNumber>()
        let declared = gnutls_x509_crl_get_crt_count(crl)
        if declared > 0 { revoked.reserveCapacity(Int(declared)) }
        var iterator: gnutls_x509_crl_iter_t?
        var serial = [UInt8](repeating: 0, count: 64)
        while true {
            var size = serial.count
            var revokedAt: time_t = 0
            let rc = gnutls_x509_crl_iter_crt_serial(crl, &iterator, &serial, &size, &revokedAt)
            if rc != 0 { break }
            revoked.insert(SerialNumber(serial[0..<size]))
        }
        if let iterator { gnutls_x509_crl_iter_deinit(iterator) }

        return CRLInfo(
            issuer: issuer, issuerKey: issuerKey, revoked: revoked,
            thisUpdate: gnutls_x509_crl_get_this_update(crl), nextUpdate: next == -1 ? nil : next,
            number: number, file: file)
    }

    private func containsPEMMarker(_ bytes: [UInt8]) -> Bool {
        let marker = Array("-----BEGIN X509 CRL-----".utf8)
        guard bytes.count >= marker.count else { return false }
        return bytes.withUnsafeBufferPointer { buffer in
            for start in 0...(buffer.count - marker.count) where buffer[start] == marker[0] {
                if Array(buffer[start..<start + marker.count]) == marker { return true }
            }
            return false
        }
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
