import CGnuTLSShim
import Glibc

/// A GnuTLS failure, with what we were doing when it happened.
struct GnuTLSError: Error, CustomStringConvertible {
    let code: Int32
    let context: String

    init(_ code: Int32, _ context: String) {
        self.code = code
        self.context = context
    }

    var description: String { "\(context): \(GnuTLS.describe(code))" }
}

enum GnuTLS {
    static func describe(_ code: Int32) -> String {
        guard let text = gnutls_strerror(code) else { return "GnuTLS error \(code)" }
        return String(cString: text)
    }

    /// Runs `body` with a datum that points at `bytes` (GnuTLS only reads it).
    static func withDatum<R>(_ bytes: [UInt8], _ body: (inout gnutls_datum_t) -> R) -> R {
        bytes.withUnsafeBufferPointer { buffer in
            var datum = gnutls_datum_t(
                data: UnsafeMutablePointer(mutating: buffer.baseAddress), size: UInt32(buffer.count))
            return body(&datum)
        }
    }

    /// Copies a datum that GnuTLS allocated, and frees it.
    static func takeBytes(_ datum: inout gnutls_datum_t) -> [UInt8] {
        defer { shim_gnutls_free(datum.data); datum.data = nil; datum.size = 0 }
        guard let data = datum.data else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: Int(datum.size)))
    }

    static func takeString(_ datum: inout gnutls_datum_t) -> String {
        String(decoding: takeBytes(&datum), as: UTF8.self)
    }

    /// The DER of every certificate the peer sent, leaf first; nil when it sent none.
    static func peerCertificates(_ session: gnutls_session_t) -> [[UInt8]]? {
        var count: UInt32 = 0
        guard let peers = gnutls_certificate_get_peers(session, &count), count > 0 else { return nil }
        return (0..<Int(count)).map { Array(UnsafeBufferPointer(start: peers[$0].data, count: Int(peers[$0].size))) }
    }

    /// Makes GnuTLS print its own debug log to stderr (MTLS_PROXY_GNUTLS_DEBUG=N).
    static func enableDebugLogFromEnvironment() {
        guard let level = getenv("MTLS_PROXY_GNUTLS_DEBUG").flatMap({ Int32(String(cString: $0)) }) else { return }
        gnutls_global_set_log_level(level)
        gnutls_global_set_log_function { level, message in
            if let message { StandardError.write("gnutls[\(level)]: \(String(cString: message))") }
        }
    }
}
