import CGnuTLSShim

/// What a handshake that failed outside the verify callback tells the client. (Refusals
/// of the callback, the certificate verdicts, have already sent their precise alert.)
enum HandshakeFailure: Equatable {
    /// The client has no certificate and said so properly: RefusalReason.noCertificate's
    /// alert (certificate_required in TLS 1.3, handshake_failure in TLS 1.2).
    case noCertificate
    /// The client went away or gave up with an alert of its own: nobody to tell.
    case clientGone
    /// A protocol error (a malformed message, a bad signature, no common cipher...):
    /// the alert GnuTLS maps the error to, as gnutls-serv sends it.
    case protocolError

    /// - Parameter sentEmptyCertificateList: the client's Certificate message was a
    ///   well-formed empty list. GnuTLS reports GNUTLS_E_NO_CERTIFICATE_FOUND for it, but
    ///   also for a Certificate or CertificateVerify message with no body at all, which
    ///   are malformed (decode_error), not a client without a certificate.
    static func classify(_ rc: Int32, sentEmptyCertificateList: Bool) -> HandshakeFailure {
        switch rc {
        case GNUTLS_E_CERTIFICATE_REQUIRED:
            return .noCertificate
        case GNUTLS_E_NO_CERTIFICATE_FOUND:
            return sentEmptyCertificateList ? .noCertificate : .protocolError
        case GNUTLS_E_PREMATURE_TERMINATION, GNUTLS_E_PULL_ERROR, GNUTLS_E_PUSH_ERROR, GNUTLS_E_FATAL_ALERT_RECEIVED:
            return .clientGone
        default:
            return .protocolError
        }
    }

    /// Whether the body of a Certificate handshake message is a well-formed list of no
    /// certificates: the 3-byte list length 0 and nothing else (TLS 1.2), after the
    /// request context in TLS 1.3.
    static func isEmptyCertificateList(_ body: UnsafeRawBufferPointer, tls13: Bool) -> Bool {
        var offset = 0
        if tls13 {
            guard body.count >= 1 else { return false }
            offset = 1 + Int(body[0])
        }
        return body.count == offset + 3 && body[offset] == 0 && body[offset + 1] == 0 && body[offset + 2] == 0
    }
}
