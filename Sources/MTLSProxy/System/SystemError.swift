import Glibc

/// A failed system call: which one, on what, and errno.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32
    public let context: String

    public init(_ call: String, errno: Int32 = Glibc.errno, context: String = "") {
        self.call = call
        self.errno = errno
        self.context = context
    }

    /// strerror(3), as a String.
    static func describe(_ code: Int32) -> String { String(cString: strerror(code)) }

    public var description: String {
        let reason = Self.describe(errno)
        return context.isEmpty ? "\(call): \(reason)" : "\(call) \(context): \(reason)"
    }
}

/// Monotonic clock in nanoseconds: deadlines and durations never jump with the wall clock.
@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Wall clock in seconds since the epoch, for certificate and CRL dates.
@inline(__always)
func wallClockSeconds() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec
}

/// Direct writes to fd 2: Swift 6 does not let us touch C's `stderr` global.
public enum StandardError {
    public static func write(_ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                return
            }
            offset += n
        }
        bytes.removeAll()
    }
}
