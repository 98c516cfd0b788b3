import CGnuTLSShim
import Glibc

/// What one OCSP answer says about one certificate, once verified.
enum OCSPStatus: String, Sendable {
    case good, revoked, unknown
}

/// A verified answer: its status and its validity window (wall-clock seconds).
struct OCSPAnswer: Sendable, Equatable {
    var status: OCSPStatus
    var thisUpdate: Int
    /// nil when the responder gave none (then the answer is kept for ocsp_max_age).
    var nextUpdate: Int?
}

/// OCSP requests and answers through GnuTLS (`gnutls_ocsp_req_*`, `gnutls_ocsp_resp_*`):
/// the request carries one SHA-1 CertID (what responders expect), and an answer counts
/// only when it is signed by the issuer or by a responder certificate the issuer signed
/// for OCSPSigning, names exactly that CertID, and is current. The HTTP transport is
/// not here (Revocation/).
enum OCSPMessage {
    /// Clock skew allowed on thisUpdate and nextUpdate.
    static let skewSeconds = 300

    /// The DER of an OCSP request about `certificate` (issued by `issuer`); nil when
    /// either does not import.
    static func request(certificate: [UInt8], issuer: [UInt8]) -> [UInt8]? {
        withRequest(certificate: certificate, issuer: issuer) { request in
            var datum = gnutls_datum_t()
            guard gnutls_ocsp_req_export(request, &datum) == 0 else { return nil }
            return GnuTLS.takeBytes(&datum)
        } ?? nil
    }

    /// Checks an answer to the request about `certificate`. Returns the answer, or why
    /// it cannot be used.
    static func verify(response: [UInt8], certificate: [UInt8], issuer: [UInt8], now: Int) -> Result<OCSPAnswer, OCSPFailure> {
        let result: Result<OCSPAnswer, OCSPFailure>? = withRequest(certificate: certificate, issuer: issuer) { request in
            X509List.withCertificate(der: issuer) { issuerCert in
                verify(response: response, request: request, issuer: issuerCert, now: now)
            } ?? .failure(.malformed("the issuer certificate does not import"))
        }
        return result ?? .failure(.malformed("the certificate or its issuer does not import"))
    }

    /// The certificate's own OCSP responders (its authority information access), in order.
    static func responderURLs(certificate: [UInt8]) -> [String] {
        X509List.withCertificate(der: certificate) { cert in
            var urls: [String] = []
            for seq in 0..<16 as Range<UInt32> {
                var datum = gnutls_datum_t()
                var critical: UInt32 = 0
                let rc = gnutls_x509_crt_get_authority_info_access(cert, seq, Int32(GNUTLS_IA_OCSP_URI.rawValue), &datum, &critical)
                if rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE { break }
                if rc == 0 { urls.append(GnuTLS.takeString(&datum)) }
            }
            return urls
        } ?? []
    }

    private static func withRequest<R>(certificate: [UInt8], issuer: [UInt8], _ body: (gnutls_ocsp_req_t) -> R) -> R? {
        X509List.withCertificate(der: certificate) { cert in
            X509List.withCertificate(der: issuer) { issuerCert -> R? in
                var request: gnutls_ocsp_req_t?
                guard gnutls_ocsp_req_init(&request) == 0, let request else { return nil }
                defer { gnutls_ocsp_req_deinit(request) }
                guard gnutls_ocsp_req_add_cert(request, GNUTLS_DIG_SHA1, issuerCert, cert) == 0 else { return nil }
                return body(request)
            } ?? nil
        } ?? nil
    }

    private static func verify(response bytes: [UInt8], request: gnutls_ocsp_req_t, issuer: gnutls_x509_crt_t,
                               now: Int) -> Result<OCSPAnswer, OCSPFailure> {
        var response: gnutls_ocsp_resp_t?
        guard gnutls_ocsp_resp_init(&response) == 0, let response else { return .failure(.malformed("out of memory")) }
        defer { gnutls_ocsp_resp_deinit(response) }
        let imported = GnuTLS.withDatum(bytes) { datum in gnutls_ocsp_resp_import(response, &datum) }
        guard imported == 0 else { return .failure(.malformed("not an OCSP response (\(GnuTLS.describe(imported)))")) }
        let status = gnutls_ocsp_resp_get_status(response)
        guard status == Int32(GNUTLS_OCSP_RESP_SUCCESSFUL.rawValue) else {
            return .failure(.responderError(Self.describe(responseStatus: status)))
        }
        // GnuTLS returns 0 whatever the signature says: the verify bits decide.
        var verifyBits: UInt32 = 0
        let rc = gnutls_ocsp_resp_verify_direct(response, issuer, &verifyBits, 0)
        guard rc == 0 else { return .failure(.badSignature("cannot check the signature (\(GnuTLS.describe(rc)))")) }
        guard verifyBits == 0 else { return .failure(.badSignature(Self.describe(verifyBits: verifyBits))) }

        // The CertID we asked about: the answer must name exactly it.
        var wantedDigest = GNUTLS_DIG_UNKNOWN
        var wantedName = gnutls_datum_t(), wantedKey = gnutls_datum_t(), wantedSerial = gnutls_datum_t()
        guard gnutls_ocsp_req_get_cert_id(request, 0, &wantedDigest, &wantedName, &wantedKey, &wantedSerial) == 0 else {
            return .failure(.malformed("cannot read our own request"))
        }
        let wanted = (GnuTLS.takeBytes(&wantedName), GnuTLS.takeBytes(&wantedKey), SerialNumber(GnuTLS.takeBytes(&wantedSerial)))
        var index: UInt32 = 0
        var otherSerials: [String] = []
        while true {
            var digest = GNUTLS_DIG_UNKNOWN
            var name = gnutls_datum_t(), key = gnutls_datum_t(), serial = gnutls_datum_t()
            var certStatus: UInt32 = 0
            var thisUpdate = time_t(0), nextUpdate = time_t(0), revokedAt = time_t(0)
            var reason: UInt32 = 0
            let single = gnutls_ocsp_resp_get_single(response, index, &digest, &name, &key, &serial, &certStatus,
                                                     &thisUpdate, &nextUpdate, &revokedAt, &reason)
            if single == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE { break }
            guard single == 0 else { return .failure(.malformed("unreadable single response (\(GnuTLS.describe(single)))")) }
            index += 1
            let id = (GnuTLS.takeBytes(&name), GnuTLS.takeBytes(&key), SerialNumber(GnuTLS.takeBytes(&serial)))
            guard digest == wantedDigest, id.0 == wanted.0, id.1 == wanted.1, id.2 == wanted.2 else {
                otherSerials.append(id.2.description)
                continue
            }
            let next = nextUpdate == -1 ? nil : Int(nextUpdate)
            if Int(thisUpdate) > now + skewSeconds {
                return .failure(.stale("thisUpdate \(Timestamp.iso8601(Int(thisUpdate))) is in the future"))
            }
            if let next, next < now - skewSeconds {
                return .failure(.stale("nextUpdate \(Timestamp.iso8601(next)) has passed"))
            }
            let answer: OCSPStatus
            switch certStatus {
            case GNUTLS_OCSP_CERT_GOOD.rawValue: answer = .good
            case GNUTLS_OCSP_CERT_REVOKED.rawValue: answer = .revoked
            default: answer = .unknown
            }
            return .success(OCSPAnswer(status: answer, thisUpdate: Int(thisUpdate), nextUpdate: next))
        }
        let others = otherSerials.isEmpty ? "no certificate" : "serial " + otherSerials.joined(separator: ", ")
        return .failure(.wrongCertificate("the answer is about \(others), not serial \(wanted.2)"))
    }

    static func describe(responseStatus status: Int32) -> String {
        switch UInt32(bitPattern: status) {
        case GNUTLS_OCSP_RESP_MALFORMEDREQUEST.rawValue: return "responder says malformedRequest"
        case GNUTLS_OCSP_RESP_INTERNALERROR.rawValue: return "responder says internalError"
        case GNUTLS_OCSP_RESP_TRYLATER.rawValue: return "responder says tryLater"
        case GNUTLS_OCSP_RESP_SIGREQUIRED.rawValue: return "responder says sigRequired"
        case GNUTLS_OCSP_RESP_UNAUTHORIZED.rawValue: return "responder says unauthorized"
        default: return "responder status \(status)"
        }
    }

    static func describe(verifyBits bits: UInt32) -> String {
        let names: [(gnutls_ocsp_verify_reason_t, String)] = [
            (GNUTLS_OCSP_VERIFY_SIGNER_NOT_FOUND, "signer not found"),
            (GNUTLS_OCSP_VERIFY_SIGNER_KEYUSAGE_ERROR, "signer lacks the OCSPSigning purpose"),
            (GNUTLS_OCSP_VERIFY_UNTRUSTED_SIGNER, "signer not trusted by the issuer"),
            (GNUTLS_OCSP_VERIFY_INSECURE_ALGORITHM, "insecure signature algorithm"),
            (GNUTLS_OCSP_VERIFY_SIGNATURE_FAILURE, "bad signature"),
            (GNUTLS_OCSP_VERIFY_CERT_NOT_ACTIVATED, "signer certificate not yet valid"),
            (GNUTLS_OCSP_VERIFY_CERT_EXPIRED, "signer certificate expired"),
        ]
        let found = names.filter { bits & $0.0.rawValue != 0 }.map(\.1)
        return "answer not signed by the issuer or its responder: " + (found.isEmpty ? "status \(bits)" : found.joined(separator: ", "))
    }
}

/// Why an OCSP exchange gave no usable answer.
enum OCSPFailure: Error, Equatable, CustomStringConvertible {
    /// No answer: unreachable, timeout, HTTP error.
    case unavailable(String)
    case malformed(String)
    case responderError(String)
    case badSignature(String)
    case wrongCertificate(String)
    case stale(String)

    var description: String {
        switch self {
        case .unavailable(let why), .malformed(let why), .responderError(let why), .badSignature(let why),
             .wrongCertificate(let why), .stale(let why):
            return why
        }
    }
}

extension X509List {
    /// The DER of every certificate of a PEM file, by DER subject name (the last of a
    /// name wins, as in TrustState.caBySubject).
    static func derBySubject(pem bytes: [UInt8]) -> [[UInt8]: [UInt8]] {
        (try? withCertificates(bytes, format: GNUTLS_X509_FMT_PEM) { certs in
            var bySubject: [[UInt8]: [UInt8]] = [:]
            for cert in certs {
                var der = gnutls_datum_t(), name = gnutls_datum_t()
                guard gnutls_x509_crt_export2(cert, GNUTLS_X509_FMT_DER, &der) == 0 else { continue }
                let bytes = GnuTLS.takeBytes(&der)
                guard gnutls_x509_crt_get_raw_dn(cert, &name) == 0 else { continue }
                bySubject[GnuTLS.takeBytes(&name)] = bytes
            }
            return bySubject
        }) ?? [:]
    }
}

/// The http:// CRL distribution points a certificate names (its issuer's CRL).
enum DistributionPoints {
    static func urls(certificate: [UInt8]) -> [String] {
        X509List.withCertificate(der: certificate) { cert in
            var urls: [String] = []
            for seq in 0..<16 as Range<UInt32> {
                var buffer = [UInt8](repeating: 0, count: 1024)
                var size = buffer.count
                var reasons: UInt32 = 0, critical: UInt32 = 0
                let kind = gnutls_x509_crt_get_crl_dist_points(cert, seq, &buffer, &size, &reasons, &critical)
                if kind == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE { break }
                if kind == Int32(GNUTLS_SAN_URI.rawValue) {
                    let url = String(decoding: buffer[0..<min(size, buffer.count)], as: UTF8.self)
                    if url.lowercased().hasPrefix("http://") { urls.append(url) }
                }
            }
            return urls
        } ?? []
    }
}
