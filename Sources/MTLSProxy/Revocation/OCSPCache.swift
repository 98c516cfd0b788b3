import Synchronization

/// The OCSP answers of the whole process, per certificate (issuer and serial), and the
/// requests in flight: however many clients of however many event loops wait on one
/// certificate, one request is made, and each waiter gets the outcome on its own loop.
///
/// An answer is used until its nextUpdate, and at most `maxAge` after it arrived (an
/// answer without nextUpdate: `maxAge`), where `maxAge` is the asking listener's
/// ocsp_max_age: the cache is shared by every listener, so it keeps when an answer
/// arrived and each listener judges by its own limit. Failures are not kept: the next
/// client asks again (one request at a time still). Bounded: when full, answers past
/// their nextUpdate (or, without one, a day old) go first, then everything (a refill
/// costs one request per certificate).
final class OCSPCache: Sendable {
    typealias Outcome = Result<OCSPAnswer, OCSPFailure>
    /// Gets the outcome; the closure itself takes it to the right loop.
    typealias Waiter = @Sendable (Outcome) -> Void

    enum Lookup {
        /// A current answer: no request.
        case cached(OCSPAnswer, until: Int)
        /// A request for this certificate is under way: the waiter was added to it.
        case joined
        /// Nobody is asking: the caller must make the request and call `complete`.
        case fetch
    }

    static let shared = OCSPCache()

    private struct Entry {
        var answer: OCSPAnswer
        /// When it arrived (wall clock).
        var arrived: Int

        func until(maxAgeSeconds: Int) -> Int { OCSPCache.expiry(of: answer, now: arrived, maxAgeSeconds: maxAgeSeconds) }

        /// Past any use under any listener's limit (a day at most without nextUpdate).
        func spent(at now: Int) -> Bool { answer.nextUpdate.map { $0 <= now } ?? (now - arrived >= 86400) }
    }

    private struct State {
        var answers: [ChainLink: Entry] = [:]
        var inFlight: [ChainLink: [Waiter]] = [:]
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int = 20_000) { self.capacity = capacity }

    /// A fresh answer for `key` (under `maxAgeSeconds`, the asking listener's
    /// ocsp_max_age), or joins the request in flight, or makes the caller the one who
    /// asks (its waiter is the first of the new request).
    func lookup(_ key: ChainLink, now: Int, maxAgeSeconds: Int, waiter: @escaping Waiter) -> Lookup {
        state.withLock { state in
            if let entry = state.answers[key] {
                let until = entry.until(maxAgeSeconds: maxAgeSeconds)
                if now < until { return .cached(entry.answer, until: until) }
                if entry.spent(at: now) { state.answers[key] = nil }
            }
            if state.inFlight[key] != nil {
                state.inFlight[key]!.append(waiter)
                return .joined
            }
            state.inFlight[key] = [waiter]
            return .fetch
        }
    }

    /// The request for `key` ended: keeps a usable answer and hands the outcome to every
    /// waiter (outside the lock).
    func complete(_ key: ChainLink, outcome: Outcome, now: Int) {
        let waiters = state.withLock { state -> [Waiter] in
            if case .success(let answer) = outcome {
                let entry = Entry(answer: answer, arrived: now)
                if !entry.spent(at: now) {
                    if state.answers.count >= capacity {
                        state.answers = state.answers.filter { !$0.value.spent(at: now) }
                        if state.answers.count >= capacity { state.answers.removeAll(keepingCapacity: true) }
                    }
                    state.answers[key] = entry
                }
            }
            return state.inFlight.removeValue(forKey: key) ?? []
        }
        for waiter in waiters { waiter(outcome) }
    }

    /// Until when an answer may be used: its nextUpdate, and `maxAge` after now at most.
    /// Without nextUpdate, also `maxAge` after its thisUpdate (plus the clock skew
    /// allowed): an answer made long ago is not made current by being fetched now.
    static func expiry(of answer: OCSPAnswer, now: Int, maxAgeSeconds: Int) -> Int {
        let cap = now + maxAgeSeconds
        guard let next = answer.nextUpdate else {
            return min(cap, answer.thisUpdate + maxAgeSeconds + OCSPMessage.skewSeconds)
        }
        return min(next, cap)
    }

    var count: Int { state.withLock { $0.answers.count } }
}
