import CGnuTLSShim
import MTLSProxy

/// The CRL loader as files arrive in crl_dir: PEM blocks (base64) or DER, through our own
/// reader. Whatever it accepts must be what GnuTLS's own decoder reads from the same
/// bytes, when GnuTLS accepts them too (it is stricter about some parts we only skip,
/// and it is the slow decoder we replaced: inputs here are small).
func fuzzCRLFile(_ data: [UInt8]) {
    let documents = CRLFile.documents(in: data)
    guard data.first == 0x30, documents.count == 1, case .success(let document) = documents[0] else { return }
    check(document.signedBytes.count < data.count, "what was signed lies inside the CRL")
    check(document.revoked.count <= data.count / 5, "an entry takes at least 5 bytes")
    guard let gnutls = GnuTLSView(der: data) else { return }
    check(gnutls.issuer == document.issuerName, "issuer differs from GnuTLS's")
    check(gnutls.serials == Set(document.revoked), "revoked serials differ from GnuTLS's: \(gnutls.serials.count) vs \(document.revoked.count)")
    // GnuTLS gives -1 for a time it cannot read and 0 for any time before 1970 (a
    // UTCTime of 50-69 is 1950-1969, RFC 5280): no comparison there.
    check(gnutls.thisUpdate <= 0 || gnutls.thisUpdate == document.thisUpdate, "thisUpdate differs from GnuTLS's")
}

/// What GnuTLS's decoder reads from a DER CRL.
private struct GnuTLSView {
    var issuer: [UInt8] = []
    var serials: Set<SerialNumber> = []
    var thisUpdate = 0

    init?(der: [UInt8]) {
        var crl: gnutls_x509_crl_t?
        guard gnutls_x509_crl_init(&crl) == 0, let crl else { return nil }
        defer { gnutls_x509_crl_deinit(crl) }
        let rc = der.withUnsafeBufferPointer { buffer -> Int32 in
            var datum = gnutls_datum_t(data: UnsafeMutablePointer(mutating: buffer.baseAddress), size: UInt32(buffer.count))
            return gnutls_x509_crl_import(crl, &datum, GNUTLS_X509_FMT_DER)
        }
        guard rc == 0 else { return nil }
        var name = gnutls_datum_t()
        guard gnutls_x509_crl_get_raw_issuer_dn(crl, &name) == 0 else { return nil }
        issuer = Array(UnsafeBufferPointer(start: name.data, count: Int(name.size)))
        shim_gnutls_free(name.data)
        thisUpdate = gnutls_x509_crl_get_this_update(crl)
        var iterator: gnutls_x509_crl_iter_t?
        defer { if let iterator { gnutls_x509_crl_iter_deinit(iterator) } }
        var serial = [UInt8](repeating: 0, count: 64)
        while true {
            var size = serial.count
            var revokedAt: time_t = 0
            let next = gnutls_x509_crl_iter_crt_serial(crl, &iterator, &serial, &size, &revokedAt)
            if next == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE { break }
            guard next == 0 else { return nil }  // an entry GnuTLS cannot read: no comparison
            serials.insert(SerialNumber(serial[0..<size]))
        }
    }
}
