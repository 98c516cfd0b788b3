import CGnuTLSShim
import Glibc

/// The GnuTLS transport of a client connection: C callbacks that find their
/// ClientConnection through the transport pointer and let it do the system calls.
enum ClientTransport {
    static func attach(_ session: gnutls_session_t, context: UnsafeMutableRawPointer) {
        gnutls_transport_set_ptr(session, context)
        gnutls_transport_set_pull_function(session, pull)
        gnutls_transport_set_vec_push_function(session, push)
    }

    private static let pull: @convention(c) (gnutls_transport_ptr_t?, UnsafeMutableRawPointer?, Int) -> Int = {
        context, buffer, count in
        guard let context, let buffer else { return -1 }
        return Unmanaged<ClientConnection>.fromOpaque(context).takeUnretainedValue().pull(into: buffer, count: count)
    }

    private static let push: @convention(c) (gnutls_transport_ptr_t?, UnsafePointer<giovec_t>?, Int32) -> Int = {
        context, vectors, count in
        guard let context, let vectors else { return -1 }
        return Unmanaged<ClientConnection>.fromOpaque(context).takeUnretainedValue().push(vectors, count: count)
    }
}
