import CGnuTLSShim
import Glibc

/// A resolved socket address, ready for bind(2) or connect(2).
public struct SocketAddress: Sendable, CustomStringConvertible {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    public var family: Int32 { Int32(storage.ss_family) }

    /// Resolves an endpoint. Host names go through getaddrinfo, which may block: call
    /// this at start and reload only, never on an event loop.
    public static func resolve(_ endpoint: Endpoint) throws(SystemError) -> SocketAddress {
        switch endpoint {
        case .unix(let path):
            var address = SocketAddress()
            var un = sockaddr_un()
            un.sun_family = sa_family_t(AF_UNIX)
            let capacity = MemoryLayout.size(ofValue: un.sun_path)
            guard path.utf8.count < capacity else {
                throw SystemError("unix socket path", errno: ENAMETOOLONG, context: path)
            }
            withUnsafeMutableBytes(of: &un.sun_path) { raw in
                raw.copyBytes(from: path.utf8)
                raw[path.utf8.count] = 0
            }
            withUnsafeBytes(of: un) { raw in
                withUnsafeMutableBytes(of: &address.storage) { $0.copyMemory(from: raw) }
            }
            address.length = socklen_t(MemoryLayout<sockaddr_un>.size)
            return address
        case .inet(let host, let port), .inet6(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_NUMERICSERV
            var result: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, String(port), &hints, &result)
            guard rc == 0, let first = result else {
                let reason = String(cString: gai_strerror(rc))
                throw SystemError("getaddrinfo", errno: EINVAL, context: "\(host): \(reason)")
            }
            defer { freeaddrinfo(result) }
            var address = SocketAddress()
            withUnsafeMutableBytes(of: &address.storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
            }
            address.length = first.pointee.ai_addrlen
            return address
        }
    }

    /// An IPv4 (4 bytes) or IPv6 (16 bytes) address and port, as a PROXY header gives it.
    init?(ipBytes: [UInt8], port: UInt16) {
        switch ipBytes.count {
        case 4:
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: ipBytes) }
            withUnsafeBytes(of: sin) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        case 16:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: ipBytes) }
            withUnsafeBytes(of: sin6) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        default:
            return nil
        }
    }

    /// The bytes of a numeric IPv4 or IPv6 address ("10.1.2.3", "2001:db8::1"); nil for
    /// anything else (no name lookups).
    package static func ipBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if !text.contains(":"), inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        var v6 = in6_addr()
        if text.contains(":"), inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
        return nil
    }

    /// The address of an accepted peer.
    init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    init() {}

    /// The raw address bytes (4 or 16) and port of an IPv4 or IPv6 address.
    var ipBytesAndPort: (bytes: [UInt8], port: UInt16)? {
        var copy = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &copy) { ptr in
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    (withUnsafeBytes(of: sin.pointee.sin_addr) { Array($0) }, UInt16(bigEndian: sin.pointee.sin_port))
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &copy) { ptr in
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    (withUnsafeBytes(of: sin6.pointee.sin6_addr) { Array($0) }, UInt16(bigEndian: sin6.pointee.sin6_port))
                }
            }
        default:
            return nil
        }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// "127.0.0.1:4242", "[::1]:4242" or "unix:/path".
    public var description: String {
        var copy = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &copy) { ptr in
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var buffer = [UInt8](repeating: 0, count: Int(INET_ADDRSTRLEN))
                    var addr = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count))
                    return "\(cString(buffer)):\(UInt16(bigEndian: sin.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &copy) { ptr in
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var buffer = [UInt8](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                    var addr = sin6.pointee.sin6_addr
                    inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count))
                    return "[\(cString(buffer))]:\(UInt16(bigEndian: sin6.pointee.sin6_port))"
                }
            }
        case AF_UNIX:
            return withUnsafePointer(to: &copy) { ptr in
                ptr.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                    withUnsafeBytes(of: sun.pointee.sun_path) { raw in
                        "unix:" + String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                    }
                }
            }
        default:
            return "unknown"
        }
    }

    private func cString(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
    }
}
