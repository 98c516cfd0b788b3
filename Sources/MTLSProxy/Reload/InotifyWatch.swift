import CGnuTLSShim
import Glibc

/// inotify watches on the folders that hold a listener's files: the CRL folder (any
/// change in it) and the folders of the certificate, key and CA bundle (changes to those
/// names only), plus the parent of the CRL folder, so that a folder swapped whole (a
/// symlink flipped, as Kubernetes does with secrets) is noticed too.
final class InotifyWatch {
    let fd: Int32
    /// watch descriptor -> (listener index, names that matter; nil = every name)
    private var targets: [Int32: [(listener: Int, names: Set<String>?)]] = [:]

    static let folderEvents = UInt32(IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_MODIFY
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB)
    static let parentEvents = UInt32(IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB)

    init() throws(SystemError) {
        fd = try Inotify.open()
    }

    deinit { close(fd) }

    /// (Re)adds the watches of every listener. Adding a watch again for the same inode
    /// returns the same descriptor, so this is cheap to repeat after each reload (a
    /// swapped folder then gets its new inode watched).
    func watch(_ listeners: [ListenerConfig]) {
        targets.removeAll()
        for (index, listener) in listeners.enumerated() {
            if let dir = listener.crlDir {
                add(dir, mask: Self.folderEvents, listener: index, names: nil)
                add(FilePath.parent(of: dir), mask: Self.parentEvents, listener: index, names: [FilePath.lastComponent(of: dir)])
            }
            for file in [listener.cert!, listener.key!, listener.caBundle!] + [listener.ticketKeyFile].compactMap({ $0 }) {
                add(FilePath.parent(of: file), mask: Self.parentEvents, listener: index, names: [FilePath.lastComponent(of: file)])
            }
        }
    }

    private func add(_ path: String, mask: UInt32, listener: Int, names: Set<String>?) {
        // A missing folder: the periodic rescan still sees it appear.
        guard let wd = Inotify.addWatch(fd, path: path, mask: mask) else { return }
        targets[wd, default: []].append((listener, names))
    }

    /// Reads what is pending; returns the listeners concerned.
    func drain() -> Set<Int> {
        var touched = Set<Int>()
        for event in Inotify.readPending(fd) {
            for target in targets[event.watch] ?? []
            where target.names == nil || target.names!.contains(event.name) || event.name.isEmpty {
                touched.insert(target.listener)
            }
        }
        return touched
    }
}

/// What the files of a listener look like on disk (inode, size, modification time of
/// each file, after following links), compared every few seconds: the fallback for
/// changes inotify does not report (network file systems, a watch that was lost).
enum FileFingerprint {
    /// nil when the CRL folder cannot be listed for a passing reason (the process is
    /// out of descriptors or memory): that says nothing about the files, and a rescan
    /// must not take it for a change and reload (which would fail for the same reason).
    static func of(_ listener: ListenerConfig) -> [String]? {
        var parts: [String] = []
        var files = [listener.cert!, listener.key!, listener.caBundle!] + [listener.ticketKeyFile].compactMap { $0 }
        if let dir = listener.crlDir {
            do {
                files += try CRLSet.listFiles(dir).map { dir + "/" + $0 }
            } catch {
                if Socket.isResourceShortage(error.errno) { return nil }
            }
        }
        for file in files {
            var info = stat()
            if stat(file, &info) == 0 {
                parts.append("\(file) \(info.st_ino) \(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)")
            } else {
                parts.append("\(file) missing")
            }
        }
        return parts
    }
}
