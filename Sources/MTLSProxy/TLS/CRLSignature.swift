import CGnuTLSShim
import SwiftASN1

/// Checks that a CA signed a CRL, with GnuTLS's public-key verification over the bytes
/// our own reader kept (`CRLDocument.signedBytes`): the CRL itself never goes through
/// GnuTLS's CRL decoder.
enum CRLSignature {
    enum Verdict: Equatable {
        case valid
        case invalid(String)
    }

    /// `signer` must be a CA allowed to sign CRLs (basic constraints CA, and cRLSign
    /// when it has a key usage extension), and its key must verify the signature.
    static func verify(_ crl: CRLDocument, signer: gnutls_x509_crt_t) -> Verdict {
        var isCA: UInt32 = 0
        var critical: UInt32 = 0
        var pathLength: Int32 = 0
        guard gnutls_x509_crt_get_basic_constraints(signer, &critical, &isCA, &pathLength) >= 0, isCA != 0 else {
            return .invalid("its signer is not a CA")
        }
        var usage: UInt32 = 0
        if gnutls_x509_crt_get_key_usage(signer, &usage, &critical) >= 0, usage & UInt32(GNUTLS_KEY_CRL_SIGN) == 0 {
            return .invalid("its signer's key usage does not allow signing CRLs")
        }
        guard let algorithms = signAlgorithms(crl.signatureAlgorithm) else {
            return .invalid("unsupported signature algorithm \(crl.signatureAlgorithm.oid)")
        }
        var key: gnutls_pubkey_t?
        guard gnutls_pubkey_init(&key) == 0, let key else { return .invalid("out of memory") }
        defer { gnutls_pubkey_deinit(key) }
        guard gnutls_pubkey_import_x509(key, signer, 0) == 0 else { return .invalid("cannot read its signer's public key") }
        if let pss = PSSParameters(crl.signatureAlgorithm) {
            // GnuTLS checks an RSA-PSS signature with the salt length of the key's own
            // parameters (none for a plain RSA key); the CRL says which it used.
            var spki: gnutls_x509_spki_t?
            guard gnutls_x509_spki_init(&spki) == 0, let spki else { return .invalid("out of memory") }
            defer { gnutls_x509_spki_deinit(spki) }
            gnutls_x509_spki_set_rsa_pss_params(spki, pss.digest, pss.saltLength)
            guard gnutls_pubkey_set_spki(key, spki, 0) == 0 else { return .invalid("its RSA-PSS parameters do not fit its signer's key") }
        }
        var lastError: Int32 = 0
        for algorithm in algorithms {
            let rc = GnuTLS.withDatum(crl.signedBytes) { data in
                GnuTLS.withDatum(crl.signature) { signature in
                    gnutls_pubkey_verify_data2(key, algorithm, 0, &data, &signature)
                }
            }
            if rc >= 0 { return .valid }
            lastError = rc
        }
        return .invalid("its signature does not verify (\(GnuTLS.describe(lastError)))")
    }

    /// GnuTLS's algorithms for an AlgorithmIdentifier. GnuTLS has one RSA-PSS algorithm
    /// for an RSA-PSS key and another for an ordinary RSA key signing with PSS: both are
    /// tried.
    static func signAlgorithms(_ algorithm: CRLDocument.AlgorithmIdentifierBytes) -> [gnutls_sign_algorithm_t]? {
        if algorithm.oid == PSSParameters.oid {
            switch PSSParameters(algorithm)?.digest {
            case GNUTLS_DIG_SHA256: return [GNUTLS_SIGN_RSA_PSS_SHA256, GNUTLS_SIGN_RSA_PSS_RSAE_SHA256]
            case GNUTLS_DIG_SHA384: return [GNUTLS_SIGN_RSA_PSS_SHA384, GNUTLS_SIGN_RSA_PSS_RSAE_SHA384]
            case GNUTLS_DIG_SHA512: return [GNUTLS_SIGN_RSA_PSS_SHA512, GNUTLS_SIGN_RSA_PSS_RSAE_SHA512]
            default: return nil  // SHA-1 (the default when absent) or unknown
            }
        }
        let sign = gnutls_oid_to_sign(algorithm.oid)
        return sign == GNUTLS_SIGN_UNKNOWN ? nil : [sign]
    }
}

/// RSASSA-PSS-params (RFC 4055): `[0] EXPLICIT hashAlgorithm` (default SHA-1) and
/// `[2] EXPLICIT saltLength` (default 20); the mask generation always uses the same hash here.
struct PSSParameters: Equatable {
    static let oid = "1.2.840.113549.1.1.10"
    var digest: gnutls_digest_algorithm_t
    var saltLength: UInt32

    init?(_ algorithm: CRLDocument.AlgorithmIdentifierBytes) {
        guard algorithm.oid == Self.oid else { return nil }
        digest = GNUTLS_DIG_SHA1
        saltLength = 20
        guard let parameters = algorithm.parameters, let node = try? DER.parse(parameters),
            case .constructed(let fields) = node.content
        else { return }
        for field in fields {
            guard case .constructed(let wrapped) = field.content, let inner = Array(wrapped).first else { continue }
            if field.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific),
                case .constructed(let parts) = inner.content, let oidNode = Array(parts).first,
                let oid = try? ASN1ObjectIdentifier(derEncoded: oidNode)
            {
                switch oid.description {
                case "2.16.840.1.101.3.4.2.1": digest = GNUTLS_DIG_SHA256
                case "2.16.840.1.101.3.4.2.2": digest = GNUTLS_DIG_SHA384
                case "2.16.840.1.101.3.4.2.3": digest = GNUTLS_DIG_SHA512
                default: digest = GNUTLS_DIG_UNKNOWN
                }
            } else if field.identifier == ASN1Identifier(tagWithNumber: 2, tagClass: .contextSpecific),
                let salt = try? Int(derEncoded: inner), salt >= 0, salt < 1 << 16
            {
                saltLength = UInt32(salt)
            }
        }
    }
}
