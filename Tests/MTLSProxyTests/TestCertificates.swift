import CGnuTLSShim
import Glibc

@testable import MTLSProxy

/// Certificates and CRLs made with GnuTLS's own writer, for tests whose oracle is
/// GnuTLS's own reader: our DER reader must see in a CRL exactly what GnuTLS sees.
final class TestCA {
    let key: gnutls_x509_privkey_t
    let cert: gnutls_x509_crt_t
    let subjectKeyID: [UInt8]
    private let digest: gnutls_digest_algorithm_t

    /// `altNames`: subject alternative names (kind, value) to put in the certificate.
    init(name: String, algorithm: gnutls_pk_algorithm_t = GNUTLS_PK_ECDSA, bits: UInt32 = 256, keyUsage: UInt32? = nil,
         altNames: [(gnutls_x509_subject_alt_name_t, String)] = []) {
        var key: gnutls_x509_privkey_t?
        gnutls_x509_privkey_init(&key)
        let generated = gnutls_x509_privkey_generate(key, algorithm, bits, 0)
        precondition(generated == 0, "generate: \(GnuTLS.describe(generated))")
        var cert: gnutls_x509_crt_t?
        gnutls_x509_crt_init(&cert)
        self.key = key!
        self.cert = cert!
        var id = [UInt8](repeating: 0, count: 20)
        for i in id.indices { id[i] = UInt8.random(in: 0...255) }
        subjectKeyID = id
        let now = time(nil)
        gnutls_x509_crt_set_version(cert, 3)
        var error: UnsafePointer<CChar>?
        precondition(gnutls_x509_crt_set_dn(cert, name, &error) == 0)
        precondition(gnutls_x509_crt_set_key(cert, key) == 0)
        var serial: [UInt8] = [0x01, 0x02]
        gnutls_x509_crt_set_serial(cert, &serial, serial.count)
        gnutls_x509_crt_set_activation_time(cert, now - 3600)
        gnutls_x509_crt_set_expiration_time(cert, now + 86400)
        gnutls_x509_crt_set_basic_constraints(cert, 1, -1)
        gnutls_x509_crt_set_key_usage(cert, keyUsage ?? UInt32(GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN))
        gnutls_x509_crt_set_subject_key_id(cert, id, id.count)
        for (index, (kind, value)) in altNames.enumerated() {
            let set = gnutls_x509_crt_set_subject_alt_name(
                cert, kind, value, UInt32(value.utf8.count), UInt32(index == 0 ? GNUTLS_FSAN_SET : GNUTLS_FSAN_APPEND))
            precondition(set == 0, "alt name: \(GnuTLS.describe(set))")
        }
        digest = algorithm == GNUTLS_PK_EDDSA_ED25519 ? GNUTLS_DIG_SHA512 : GNUTLS_DIG_SHA256
        let signed = gnutls_x509_crt_sign2(cert, cert, key, digest, 0)
        precondition(signed == 0, "sign: \(GnuTLS.describe(signed))")
    }

    deinit {
        gnutls_x509_crt_deinit(cert)
        gnutls_x509_privkey_deinit(key)
    }

    var der: [UInt8] {
        var out = gnutls_datum_t()
        gnutls_x509_crt_export2(cert, GNUTLS_X509_FMT_DER, &out)
        return GnuTLS.takeBytes(&out)
    }

    var info: CertificateInfo { CertificateInfo(cert) }

    var pem: [UInt8] {
        var out = gnutls_datum_t()
        gnutls_x509_crt_export2(cert, GNUTLS_X509_FMT_PEM, &out)
        return GnuTLS.takeBytes(&out)
    }

    /// A CRL of this CA revoking `serials`, DER.
    func crl(revoking serials: [[UInt8]], thisUpdate: Int, nextUpdate: Int?, number: [UInt8]? = [0x07],
             authorityKeyID: Bool = true) -> [UInt8] {
        var crl: gnutls_x509_crl_t?
        gnutls_x509_crl_init(&crl)
        defer { gnutls_x509_crl_deinit(crl) }
        gnutls_x509_crl_set_version(crl, 2)
        gnutls_x509_crl_set_this_update(crl, thisUpdate)
        if let nextUpdate { gnutls_x509_crl_set_next_update(crl, nextUpdate) }
        for serial in serials {
            var bytes = serial
            precondition(gnutls_x509_crl_set_crt_serial(crl, &bytes, bytes.count, thisUpdate - 60) == 0)
        }
        if authorityKeyID { gnutls_x509_crl_set_authority_key_id(crl, subjectKeyID, subjectKeyID.count) }
        if var number { gnutls_x509_crl_set_number(crl, &number, number.count) }
        let signed = gnutls_x509_crl_sign2(crl, cert, key, digest, 0)
        precondition(signed == 0, "sign CRL: \(GnuTLS.describe(signed))")
        var out = gnutls_datum_t()
        gnutls_x509_crl_export2(crl, GNUTLS_X509_FMT_DER, &out)
        return GnuTLS.takeBytes(&out)
    }
}

/// What GnuTLS's own decoder reads from a CRL: the oracle for our reader.
struct GnuTLSCRLView {
    var issuerName: [UInt8] = []
    var serials: Set<SerialNumber> = []
    var thisUpdate = 0
    var nextUpdate: Int?

    init?(der: [UInt8]) {
        var crl: gnutls_x509_crl_t?
        gnutls_x509_crl_init(&crl)
        defer { gnutls_x509_crl_deinit(crl) }
        let rc = GnuTLS.withDatum(der) { datum in gnutls_x509_crl_import(crl, &datum, GNUTLS_X509_FMT_DER) }
        guard rc == 0 else { return nil }
        var datum = gnutls_datum_t()
        if gnutls_x509_crl_get_raw_issuer_dn(crl, &datum) == 0 { issuerName = GnuTLS.takeBytes(&datum) }
        thisUpdate = gnutls_x509_crl_get_this_update(crl)
        let next = gnutls_x509_crl_get_next_update(crl)
        nextUpdate = next == -1 ? nil : next
        var iterator: gnutls_x509_crl_iter_t?
        var serial = [UInt8](repeating: 0, count: 64)
        while true {
            var size = serial.count
            var revokedAt: time_t = 0
            if gnutls_x509_crl_iter_crt_serial(crl, &iterator, &serial, &size, &revokedAt) != 0 { break }
            serials.insert(SerialNumber(serial[0..<size]))
        }
        if let iterator { gnutls_x509_crl_iter_deinit(iterator) }
    }
}
