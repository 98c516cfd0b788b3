import Glibc

/// Reads a whole file; certificates, keys, CRLs and the config are small enough to hold
/// in memory.
enum FileBytes {
    static let limit = 512 << 20

    static func read(_ path: String) throws(SystemError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", context: path) }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", context: path)
            }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
            guard result.count <= limit else { throw SystemError("read", errno: EFBIG, context: path) }
        }
        return result
    }

    /// Writes `bytes` to `temporary`, syncs it, then renames it to `path`: a reader sees
    /// the old file or the new one, never a part. False (and no temporary left) on error.
    static func writeAtomically(_ bytes: [UInt8], to path: String, through temporary: String) -> Bool {
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                close(fd)
                unlink(temporary)
                return false
            }
            offset += n
        }
        guard fsync(fd) == 0, close(fd) == 0, rename(temporary, path) == 0 else {
            unlink(temporary)
            return false
        }
        return true
    }
}

/// Path text, split at the last `/` (as dirname and basename do, without touching the disk).
enum FilePath {
    /// The folder that holds `path`: "." for a bare name, "/" for a name under the root.
    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The last component of `path` (all of it when it has no `/`).
    static func lastComponent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}
