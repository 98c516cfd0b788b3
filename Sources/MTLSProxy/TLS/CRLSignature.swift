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

    /// GnuTLS's algorithms for an AlgorithmIdentifier. RSA-PSS names its hash in the
    /// parameters, and GnuTLS has one algorithm for an RSA-PSS key and another for an
    /// ordinary RSA key signing with PSS: both are tried.
    static func signAlgorithms(_ algorithm: CRLDocument.AlgorithmIdentifierBytes) -> [gnutls_sign_algorithm_t]? {
        if algorithm.oid == "1.2.840.113549.1.1.10" {
            switch pssHash(algorithm.parameters) {
            case "2.16.840.1.101.3.4.2.1": return [GNUTLS_SIGN_RSA_PSS_SHA256, GNUTLS_SIGN_RSA_PSS_RSAE_SHA256]
            case "2.16.840.1.101.3.4.2.2": return [GNUTLS_SIGN_RSA_PSS_SHA384, GNUTLS_SIGN_RSA_PSS_RSAE_SHA384]
            case "2.16.840.1.101.3.4.2.3": return [GNUTLS_SIGN_RSA_PSS_SHA512, GNUTLS_SIGN_RSA_PSS_RSAE_SHA512]
            default: return nil  // SHA-1 (the default when absent) or unknown
            }
        }
        let sign = gnutls_oid_to_sign(algorithm.oid)
        return sign == GNUTLS_SIGN_UNKNOWN ? nil : [sign]
    }

    /// The hashAlgorithm of RSASSA-PSS-params: `[0] EXPLICIT AlgorithmIdentifier`.
    private static func pssHash(_ parameters: [UInt8]?) -> String? {
        guard let parameters, let node = try? DER.parse(parameters), case .constructed(let fields) = node.content else {
            return nil
        }
        for field in fields where field.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
            guard case .constructed(let wrapped) = field.content, let inner = Array(wrapped).first,
                case .constructed(let parts) = inner.content, let oidNode = Array(parts).first,
                let oid = try? ASN1ObjectIdentifier(derEncoded: oidNode)
            else { return nil }
            return oid.description
        }
        return nil
    }
}
