import Glibc

enum Timestamp {
    /// "2026-11-29T10:39:53Z" for a time in seconds since the epoch.
    static func iso8601(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ width: Int = 2) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T"
            + "\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec))Z"
    }

    /// The same with milliseconds, for log lines.
    static func nowWithMillis() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let base = iso8601(ts.tv_sec)
        let millis = String(ts.tv_nsec / 1_000_000)
        return String(base.dropLast()) + "." + String(repeating: "0", count: 3 - millis.count) + millis + "Z"
    }
}
