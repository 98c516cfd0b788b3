import CGnuTLSShim
import Glibc

/// What the proxy needs to know of one certificate, read once from GnuTLS.
struct CertificateInfo: Sendable {
    /// RFC 4514 strings, for logs.
    var subject: String
    var issuer: String
    /// DER of the subject and issuer names: the keys that link a chain and find CRLs.
    var rawSubject: [UInt8]
    var rawIssuer: [UInt8]
    var serial: SerialNumber
    var notAfter: Int
    /// The first CN of the subject, for the PROXY protocol header.
    var commonName: String?
    /// Key identifiers: who signed it (authority) and, for a CA, who it is (subject).
    var authorityKeyID: [UInt8] = []
    var subjectKeyID: [UInt8] = []

    /// The issuer as CRLs name it.
    var issuerKey: IssuerKey { IssuerKey(name: rawIssuer, keyID: authorityKeyID) }
    /// This certificate as the issuer of others (for a CA).
    var ownKey: IssuerKey { IssuerKey(name: rawSubject, keyID: subjectKeyID) }

    var isSelfIssued: Bool { rawSubject == rawIssuer }
    var serialHex: String { serial.description }

    /// Reads a certificate that GnuTLS holds; the caller keeps ownership of `cert`.
    init(_ cert: gnutls_x509_crt_t) {
        var datum = gnutls_datum_t()
        subject = gnutls_x509_crt_get_dn3(cert, &datum, 0) == 0 ? GnuTLS.takeString(&datum) : ""
        issuer = gnutls_x509_crt_get_issuer_dn3(cert, &datum, 0) == 0 ? GnuTLS.takeString(&datum) : ""
        rawSubject = gnutls_x509_crt_get_raw_dn(cert, &datum) == 0 ? GnuTLS.takeBytes(&datum) : []
        rawIssuer = gnutls_x509_crt_get_raw_issuer_dn(cert, &datum) == 0 ? GnuTLS.takeBytes(&datum) : []
        var serialBytes = [UInt8](repeating: 0, count: 64)
        var size = serialBytes.count
        if gnutls_x509_crt_get_serial(cert, &serialBytes, &size) == 0 {
            serial = SerialNumber(serialBytes[0..<size])
        } else {
            serial = SerialNumber([])
        }
        notAfter = gnutls_x509_crt_get_expiration_time(cert)
        var id = [UInt8](repeating: 0, count: 64)
        var idSize = id.count
        var critical: UInt32 = 0
        if gnutls_x509_crt_get_authority_key_id(cert, &id, &idSize, &critical) == 0 { authorityKeyID = Array(id[0..<idSize]) }
        idSize = id.count
        if gnutls_x509_crt_get_subject_key_id(cert, &id, &idSize, &critical) == 0 { subjectKeyID = Array(id[0..<idSize]) }
        commonName = DNAttribute.first(cert, oid: GNUTLS_OID_X520_COMMON_NAME)
    }

    /// Parses every certificate of a PEM file (or one DER certificate).
    static func loadAll(from bytes: [UInt8], format: gnutls_x509_crt_fmt_t) throws(GnuTLSError) -> [CertificateInfo] {
        try X509List.withCertificates(bytes, format: format) { certs in certs.map(CertificateInfo.init) }
    }
}

/// The values of one attribute of a certificate's subject DN, by OID, as text.
enum DNAttribute {
    /// Values longer than this are not read (X.520 bounds names far below it).
    static let maxValueBytes = 1024

    /// Every value of the attribute, in the order of the DN.
    static func values(_ cert: gnutls_x509_crt_t, oid: String) -> [String] {
        var values: [String] = []
        var index: UInt32 = 0
        while let value = read(cert, oid: oid, index: index) {
            values.append(value)
            index += 1
        }
        return values
    }

    static func first(_ cert: gnutls_x509_crt_t, oid: String) -> String? {
        read(cert, oid: oid, index: 0)
    }

    /// One value; nil when there is none at `index` (or it is too long to read).
    private static func read(_ cert: gnutls_x509_crt_t, oid: String, index: UInt32) -> String? {
        var buffer = [UInt8](repeating: 0, count: maxValueBytes)
        var size = buffer.count
        guard gnutls_x509_crt_get_dn_by_oid(cert, oid, index, 0, &buffer, &size) >= 0 else { return nil }
        return String(decoding: buffer[0..<min(size, buffer.count)].prefix(while: { $0 != 0 }), as: UTF8.self)
    }
}

/// Temporary GnuTLS certificate lists, freed when the closure returns.
enum X509List {
    /// Imports one DER certificate for `body`; nil when GnuTLS cannot import it.
    static func withCertificate<R>(der: [UInt8], _ body: (gnutls_x509_crt_t) -> R) -> R? {
        var cert: gnutls_x509_crt_t?
        gnutls_x509_crt_init(&cert)
        guard let cert else { return nil }
        defer { gnutls_x509_crt_deinit(cert) }
        let rc = GnuTLS.withDatum(der) { datum in gnutls_x509_crt_import(cert, &datum, GNUTLS_X509_FMT_DER) }
        return rc == 0 ? body(cert) : nil
    }

    static func withCertificates<R>(
        _ bytes: [UInt8], format: gnutls_x509_crt_fmt_t, _ body: ([gnutls_x509_crt_t]) -> R
    ) throws(GnuTLSError) -> R {
        var list: UnsafeMutablePointer<gnutls_x509_crt_t?>?
        var count: UInt32 = 0
        let rc = GnuTLS.withDatum(bytes) { datum in
            gnutls_x509_crt_list_import2(&list, &count, &datum, format, 0)
        }
        guard rc >= 0 else { throw GnuTLSError(rc, "cannot parse certificates") }
        var certs: [gnutls_x509_crt_t] = []
        for i in 0..<Int(count) { if let cert = list?[i] { certs.append(cert) } }
        defer {
            for cert in certs { gnutls_x509_crt_deinit(cert) }
            shim_gnutls_free(list)
        }
        guard !certs.isEmpty else { throw GnuTLSError(GNUTLS_E_NO_CERTIFICATE_FOUND, "no certificate found") }
        return body(certs)
    }
}

enum Hex {
    static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Serial numbers are positive integers; DER may prefix a zero byte. Strip them all
    /// (keeping one byte for zero) so that a certificate and a CRL entry compare equal.
    static func normalizedSerial<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        let trimmed = Array(bytes.drop(while: { $0 == 0 }))
        return trimmed.isEmpty ? [0] : trimmed
    }
}

extension CertificateNames {
    /// Reads the subject's CN and OU values and the DNS, e-mail and URI alternative names.
    init(_ cert: gnutls_x509_crt_t, subject: String) {
        self.subject = subject
        cn = DNAttribute.values(cert, oid: GNUTLS_OID_X520_COMMON_NAME)
        ou = DNAttribute.values(cert, oid: GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME)
        var index: UInt32 = 0
        while true {
            var buffer = [UInt8](repeating: 0, count: 1024)
            var size = buffer.count
            var critical: UInt32 = 0
            let kind = gnutls_x509_crt_get_subject_alt_name(cert, index, &buffer, &size, &critical)
            if kind < 0 { break }
            let value = String(decoding: buffer[0..<size], as: UTF8.self)
            switch UInt32(kind) {
            case GNUTLS_SAN_DNSNAME.rawValue: dns.append(value)
            case GNUTLS_SAN_RFC822NAME.rawValue: email.append(value)
            case GNUTLS_SAN_URI.rawValue: uri.append(value)
            default: break
            }
            index += 1
        }
    }
}
