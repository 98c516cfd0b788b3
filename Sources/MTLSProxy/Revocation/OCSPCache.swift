import Synchronization

/// The OCSP answers of the whole process, per certificate (issuer and serial), and the
/// requests in flight: however many clients of however many event loops wait on one
/// certificate, one request is made, and each waiter gets the outcome on its own loop.
///
/// An answer is kept until its nextUpdate, and at most `maxAge` after it arrived (an
/// answer without nextUpdate: `maxAge`). Failures are not kept: the next client asks
/// again (one request at a time still). Bounded: when full, expired answers go first,
/// then everything (a refill costs one request per certificate).
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
        var until: Int
    }

    private struct State {
        var answers: [ChainLink: Entry] = [:]
        var inFlight: [ChainLink: [Waiter]] = [:]
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int = 20_000) { self.capacity = capacity }

    /// A fresh answer for `key`, or joins the request in flight, or makes the caller
    /// the one who asks (its waiter is the first of the new request).
    func lookup(_ key: ChainLink, now: Int, waiter: @escaping Waiter) -> Lookup {
        state.withLock { state in
            if let entry = state.answers[key] {
                if now < entry.until { return .cached(entry.answer, until: entry.until) }
                state.answers[key] = nil
            }
            if state.inFlight[key] != nil {
                state.inFlight[key]!.append(waiter)
                return .joined
            }
            state.inFlight[key] = [waiter]
            return .fetch
        }
    }

    /// A fresh answer if there is one; nothing else happens.
    func peek(_ key: ChainLink, now: Int) -> (answer: OCSPAnswer, until: Int)? {
        state.withLock { state in
            guard let entry = state.answers[key], now < entry.until else { return nil }
            return (entry.answer, entry.until)
        }
    }

    /// The request for `key` ended: keeps a usable answer and hands the outcome to every
    /// waiter (outside the lock).
    func complete(_ key: ChainLink, outcome: Outcome, now: Int, maxAgeSeconds: Int) {
        let waiters = state.withLock { state -> [Waiter] in
            if case .success(let answer) = outcome {
                let until = Self.expiry(of: answer, now: now, maxAgeSeconds: maxAgeSeconds)
                if until > now {
                    if state.answers.count >= capacity {
                        state.answers = state.answers.filter { $0.value.until > now }
                        if state.answers.count >= capacity { state.answers.removeAll(keepingCapacity: true) }
                    }
                    state.answers[key] = Entry(answer: answer, until: until)
                }
            }
            return state.inFlight.removeValue(forKey: key) ?? []
        }
        for waiter in waiters { waiter(outcome) }
    }

    /// Until when an answer may be used: its nextUpdate, and `maxAge` after now at most.
    static func expiry(of answer: OCSPAnswer, now: Int, maxAgeSeconds: Int) -> Int {
        let cap = now + maxAgeSeconds
        guard let next = answer.nextUpdate else { return cap }
        return min(next, cap)
    }

    var count: Int { state.withLock { $0.answers.count } }
}
