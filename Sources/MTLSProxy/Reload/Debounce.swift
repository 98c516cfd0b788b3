/// When a burst of file events gets its one reload: once the files have been quiet for
/// `quiet`, but no later than `maxDelay` after the burst's first event, so that a file
/// rewritten without pause is still picked up. A value with no clock of its own: the
/// reloader passes monotonic nanoseconds, tests pass made-up ones.
struct Debounce: Equatable {
    let quiet: UInt64
    let maxDelay: UInt64
    private var first: UInt64 = 0
    private var last: UInt64 = 0
    /// Events came that no reload has covered yet.
    private(set) var isPending = false

    init(quiet: UInt64, maxDelay: UInt64) {
        self.quiet = quiet
        self.maxDelay = maxDelay
    }

    mutating func note(at now: UInt64) {
        if !isPending {
            first = now
            isPending = true
        }
        last = now
    }

    /// When the pending events are due for their reload; nil when none is pending.
    var due: UInt64? { isPending ? min(last + quiet, first + maxDelay) : nil }

    func isDue(at now: UInt64) -> Bool { due.map { now >= $0 } ?? false }

    /// A reload covered everything noted so far.
    mutating func reset() { isPending = false }
}
