import CGnuTLSShim
import Glibc

/// The datagram socket systemd names in `NOTIFY_SOCKET` (sd_notify(3)'s protocol,
/// without libsystemd): each message is one datagram of `KEY=value` lines.
///
/// The socket is non-blocking: should systemd's receive queue be full, a message is
/// dropped rather than an event loop stopped.
struct NotifySocket: @unchecked Sendable {  // fd and address are immutable; sendto(2) is thread-safe
    private let fd: Int32
    private let address: sockaddr_un
    private let length: socklen_t

    /// nil when `NOTIFY_SOCKET` is unset or empty (not under systemd).
    static func fromEnvironment() throws(SystemError) -> NotifySocket? {
        guard let raw = getenv("NOTIFY_SOCKET") else { return nil }
        let name = String(cString: raw)
        guard !name.isEmpty else { return nil }
        return try NotifySocket(name: name)
    }

    /// `name` is a path, or an abstract name written with a leading `@` (its first
    /// byte becomes NUL, and the name is not NUL-terminated).
    init(name: String) throws(SystemError) {
        var bytes = Array(name.utf8)
        guard bytes.first == UInt8(ascii: "/") || bytes.first == UInt8(ascii: "@") else {
            throw SystemError("NOTIFY_SOCKET", errno: EAFNOSUPPORT, context: name)
        }
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: un.sun_path)
        // A path needs room for its terminating NUL; an abstract name has none.
        guard bytes.count + (abstract ? 0 : 1) <= capacity else {
            throw SystemError("NOTIFY_SOCKET", errno: ENAMETOOLONG, context: name)
        }
        withUnsafeMutableBytes(of: &un.sun_path) { raw in
            raw.copyBytes(from: bytes)
            if !abstract { raw[bytes.count] = 0 }
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        length = socklen_t(pathOffset + bytes.count + (abstract ? 0 : 1))
        address = un
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket(AF_UNIX, SOCK_DGRAM)") }
    }

    /// Sends one message; returns 0 or the errno of sendto(2).
    @discardableResult
    func send(_ message: String) -> Int32 {
        var address = self.address
        let bytes = Array(message.utf8)
        let sent = bytes.withUnsafeBytes { buffer in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), sa, length)
                }
            }
        }
        return sent < 0 ? errno : 0
    }
}
