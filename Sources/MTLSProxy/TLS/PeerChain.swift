import CGnuTLSShim

/// The certificates a client sent, read from its session once and handed to everything
/// that looks at them: the verification cache (the key), the verification (the parsed
/// certificates, the leaf's names for the allow-lists) and the directory check (the
/// leaf's DER and the values of a `cert_map_filter`).
///
/// Only the DER is copied at construction: a returning client is found in the
/// verification cache by `cacheKey` alone, with no certificate imported into GnuTLS.
/// The certificates are imported on first use (a cache miss, or a directory check), each
/// once, and the result is shared by every copy of the chain. Not Sendable: it belongs
/// to the event loop of its connection.
struct PeerChain {
    /// Every certificate as sent, leaf first.
    let der: [[UInt8]]
    /// The verification cache's key: each certificate's DER behind its length (4 bytes,
    /// big-endian). Exact bytes, so no collision can alias two chains.
    let cacheKey: [UInt8]
    private let parsed = Parsed()

    /// What the leaf certificate says, read in one import.
    struct Leaf {
        var info: CertificateInfo
        /// The names the allow-lists look at.
        var names: CertificateNames
        /// The subject's first UID attribute (the `{uid}` of a cert_map_filter).
        var uid: String?
        /// The first e-mail alternative name, else the subject's emailAddress attribute.
        var email: String?
    }

    /// The chain of a session's peer; nil when the peer sent no certificate.
    init?(session: gnutls_session_t) {
        guard let der = GnuTLS.peerCertificates(session) else { return nil }
        self.init(der: der)
    }

    /// A chain of DER certificates, leaf first; nil when there is none.
    init?(der: [[UInt8]]) {
        guard !der.isEmpty else { return nil }
        self.der = der
        var key: [UInt8] = []
        key.reserveCapacity(der.reduce(0) { $0 + $1.count + 4 })
        for cert in der {
            let size = UInt32(cert.count)
            key += [UInt8(size >> 24), UInt8(size >> 16 & 0xff), UInt8(size >> 8 & 0xff), UInt8(size & 0xff)]
            key += cert
        }
        cacheKey = key
    }

    /// The leaf; nil when GnuTLS cannot import it.
    var leaf: Leaf? { parsed.leaf(of: der) }

    /// The certificates GnuTLS could import, in the order sent, each with its DER. One
    /// that does not import is left out (GnuTLS's own verification then refuses the chain).
    var certificates: [SentCertificate] { parsed.certificates(of: der) }

    /// The imports, made once and shared by the copies of one chain.
    private final class Parsed {
        private var leafRead = false
        private var leafValue: Leaf?
        private var all: [SentCertificate]?

        func leaf(of der: [[UInt8]]) -> Leaf? {
            if !leafRead {
                leafRead = true
                leafValue = X509List.withCertificate(der: der[0]) { cert in
                    let info = CertificateInfo(cert)
                    let names = CertificateNames(cert, subject: info.subject)
                    return Leaf(
                        info: info, names: names, uid: DNAttribute.first(cert, oid: GNUTLS_OID_LDAP_UID),
                        email: names.email.first ?? DNAttribute.first(cert, oid: GNUTLS_OID_PKCS9_EMAIL))
                }
            }
            return leafValue
        }

        func certificates(of der: [[UInt8]]) -> [SentCertificate] {
            if let all { return all }
            var sent: [SentCertificate] = []
            if let leaf = leaf(of: der) { sent.append(SentCertificate(info: leaf.info, der: der[0])) }
            for cert in der.dropFirst() {
                if let info = X509List.withCertificate(der: cert, CertificateInfo.init) {
                    sent.append(SentCertificate(info: info, der: cert))
                }
            }
            all = sent
            return sent
        }
    }
}
