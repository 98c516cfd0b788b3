import CGnuTLSShim
import Glibc

/// Thin wrappers over the socket calls the proxy makes. They keep the C names and
/// report failures as SystemError; "would block" is a value, never an error.
enum Socket {
    /// A listening socket. With `reusePort`, every worker binds its own socket to the
    /// same address and the kernel spreads new connections between them.
    static func listen(on address: SocketAddress, reusePort: Bool, backlog: Int32 = 1024) throws(SystemError) -> Int32 {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", context: "\(address)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if reusePort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if address.family == AF_INET6 {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let bound = address.withSockaddr { bind(fd, $0, $1) }
        guard bound == 0 else {
            let error = SystemError("bind", context: "\(address)")
            close(fd)
            throw error
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let error = SystemError("listen", context: "\(address)")
            close(fd)
            throw error
        }
        return fd
    }

    enum AcceptResult {
        case accepted(Descriptor, peer: SocketAddress)
        case wouldBlock
        /// Out of descriptors or memory: stop accepting for a moment.
        case exhausted(SystemError)
        /// The connection died before we took it, or a signal: try the next one.
        case retry
    }

    /// Out of descriptors (for the process or the system) or of kernel memory: passes
    /// when other sockets close, so worth waiting for rather than an error of the peer.
    static func isResourceShortage(_ error: Int32) -> Bool {
        error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM
    }

    static func accept(_ listenFD: Int32) -> AcceptResult {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                shim_accept4(listenFD, $0, &length, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
            }
        }
        if fd >= 0 { return .accepted(Descriptor(fd), peer: SocketAddress(storage: storage, length: length)) }
        switch errno {
        case EAGAIN, EWOULDBLOCK: return .wouldBlock
        case let error where isResourceShortage(error): return .exhausted(SystemError("accept4"))
        default: return .retry
        }
    }

    enum ConnectResult {
        case connected(Descriptor)
        case inProgress(Descriptor)
        case failed(SystemError)
    }

    /// Starts a non-blocking connect; completion shows as writability, then SO_ERROR.
    static func connect(to address: SocketAddress) -> ConnectResult {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failed(SystemError("socket", context: "\(address)")) }
        if address.family != AF_UNIX { setNoDelay(fd) }
        let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        if rc == 0 { return .connected(Descriptor(fd)) }
        if errno == EINPROGRESS || errno == EAGAIN { return .inProgress(Descriptor(fd)) }
        let error = SystemError("connect", context: "\(address)")
        close(fd)
        return .failed(error)
    }

    /// The result of a non-blocking connect, once the socket turned writable.
    static func pendingError(_ fd: Int32) -> Int32 {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        return error
    }

    /// LDAP is request/response: small writes must leave at once.
    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// The port a socket is bound to (for listeners given port 0 in tests).
    static func localAddress(_ fd: Int32) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return SocketAddress(storage: storage, length: length)
    }
}
