import Glibc

/// The inotify calls: a non-blocking instance, watches, and the events read back.
enum Inotify {
    struct Event: Equatable {
        var watch: Int32
        /// The name within the watched folder; empty for an event of the folder itself.
        var name: String
    }

    static func open() throws(SystemError) -> Int32 {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw SystemError("inotify_init1") }
        return fd
    }

    /// The watch descriptor, or nil when `path` cannot be watched (it does not exist).
    static func addWatch(_ fd: Int32, path: String, mask: UInt32) -> Int32? {
        let wd = inotify_add_watch(fd, path, mask)
        return wd >= 0 ? wd : nil
    }

    /// Every event pending on `fd` (until it would block).
    static func readPending(_ fd: Int32) -> [Event] {
        var events: [Event] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            events += decode(buffer[0..<n])
        }
        return events
    }

    /// Events as the kernel lays them out: `struct inotify_event` (wd, mask, cookie, len,
    /// 4 bytes each, native byte order) followed by `len` bytes of NUL-padded name.
    static func decode(_ bytes: ArraySlice<UInt8>) -> [Event] {
        var events: [Event] = []
        var offset = bytes.startIndex
        func word(_ at: Int) -> UInt32 {
            bytes[at..<at + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        }
        while offset + 16 <= bytes.endIndex {
            let length = Int(word(offset + 12))
            guard offset + 16 + length <= bytes.endIndex else { break }
            let name = bytes[offset + 16..<offset + 16 + length].prefix(while: { $0 != 0 })
            events.append(Event(watch: Int32(bitPattern: word(offset)), name: String(decoding: name, as: UTF8.self)))
            offset += 16 + length
        }
        return events
    }
}
