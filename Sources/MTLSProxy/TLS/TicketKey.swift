import CGnuTLSShim
import Glibc

/// The master key of TLS session tickets for one listener, shared by all its workers
/// (the kernel may hand a resuming client to any of them). GnuTLS derives the keys that
/// actually encrypt tickets from it and rotates them on its own schedule; sharing the
/// file (`ticket_key_file`) lets several instances behind one balancer resume each
/// other's sessions. Resumed sessions are verified again like full handshakes.
final class TicketKey: @unchecked Sendable {  // immutable after init
    static let size = 64
    private(set) var datum = gnutls_datum_t()

    /// A random key for this process's lifetime.
    init() throws(TrustLoadError) {
        let rc = gnutls_session_ticket_key_generate(&datum)
        guard rc == 0 else { throw TrustLoadError(file: "ticket key", message: GnuTLS.describe(rc)) }
    }

    /// A key from a file: 64 raw bytes, or their base64 (`openssl rand -base64 64`).
    init(file: String) throws(TrustLoadError) {
        var bytes: [UInt8]
        do { bytes = try FileBytes.read(file) } catch {
            throw TrustLoadError(file: file, message: String(cString: strerror(error.errno)))
        }
        if bytes.count != Self.size {
            let text = bytes.filter { !($0 == 10 || $0 == 13 || $0 == 32) }
            var decoded = gnutls_datum_t()
            let rc = GnuTLS.withDatum(text) { gnutls_base64_decode2(&$0, &decoded) }
            bytes = rc == 0 ? GnuTLS.takeBytes(&decoded) : []
        }
        guard bytes.count == Self.size else {
            throw TrustLoadError(file: file, message: "a ticket key is 64 bytes, raw or in base64 (openssl rand -base64 64)")
        }
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.size)
        storage.initialize(from: bytes, count: Self.size)
        datum = gnutls_datum_t(data: storage, size: UInt32(Self.size))
        ownsStorage = true
        memset(&bytes, 0, bytes.count)
    }

    private var ownsStorage = false

    deinit {
        guard let data = datum.data else { return }
        memset(data, 0, Int(datum.size))
        if ownsStorage { data.deallocate() } else { shim_gnutls_free(data) }
    }

    func enable(on session: gnutls_session_t) {
        _ = withUnsafePointer(to: datum) { gnutls_session_ticket_enable_server(session, $0) }
    }
}
