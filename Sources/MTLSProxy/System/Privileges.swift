import Glibc

/// Drops root after the sockets are bound (`user` / `group`).
enum Privileges {
    static func drop(user: String?, group: String?) throws(ConfigError) {
        guard user != nil || group != nil else { return }
        var gid: gid_t?
        var uid: uid_t?
        if let group {
            guard let entry = getgrnam(group) else { throw ConfigError(file: nil, line: nil, "unknown group '\(group)'") }
            gid = entry.pointee.gr_gid
        }
        if let user {
            guard let entry = getpwnam(user) else { throw ConfigError(file: nil, line: nil, "unknown user '\(user)'") }
            uid = entry.pointee.pw_uid
            if gid == nil { gid = entry.pointee.pw_gid }
        }
        if let gid {
            guard setgroups(0, nil) == 0 || getuid() != 0, setgid(gid) == 0 else {
                throw ConfigError(file: nil, line: nil, "cannot switch to group \(gid): \(SystemError("setgid"))")
            }
        }
        if let uid {
            guard setuid(uid) == 0 else {
                throw ConfigError(file: nil, line: nil, "cannot switch to user \(uid): \(SystemError("setuid"))")
            }
        }
    }
}
