import Synchronization

/// What the responders said last, for `/readyz`: learnt from real requests only. A bare
/// TCP probe would tell little (the port may answer while the responder does not), and
/// OpenSSL 3.0's `openssl ocsp` spins and stops answering after a connection that closes
/// without a request.
final class OCSPResponderHealth: Sendable {
    static let shared = OCSPResponderHealth()

    struct Last: Sendable {
        var answered: Bool
        var at: Int
        var detail: String
    }

    private let last = Mutex<[String: Last]>([:])

    func record(_ responder: String, outcome: Result<OCSPAnswer, OCSPFailure>, at now: Int) {
        let entry: Last
        switch outcome {
        case .success(let answer): entry = Last(answered: true, at: now, detail: "answered (\(answer.status.rawValue))")
        case .failure(let failure): entry = Last(answered: false, at: now, detail: "\(failure)")
        }
        last.withLock { table in
            if table.count > 256 && table[responder] == nil { table.removeAll() }
            table[responder] = entry
        }
    }

    var snapshot: [String: Last] { last.withLock { $0 } }
}

extension Readiness {
    /// The OCSP check of a listener: the state of its responders from their last
    /// exchanges. One that gave no usable answer last time is a `warn`, not a `fail`:
    /// readiness learns only from real requests, so an instance taken out of a balancer
    /// would never see the responder come back; and every instance shares the responder,
    /// so taking one out helps nobody.
    static func ocspCheck(_ listener: ListenerRuntime, name: String) -> ReadinessCheck {
        let config = listener.config.revocation
        let table = OCSPResponderHealth.shared.snapshot
        let relevant: [(String, OCSPResponderHealth.Last)]
        if let fixed = config.ocspResponder {
            relevant = table[fixed.description].map { [(fixed.description, $0)] } ?? []
        } else {
            relevant = table.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
        guard !relevant.isEmpty else {
            return ReadinessCheck(name: name, state: .ok, detail: "no OCSP request made yet (\(config.ocsp.rawValue), \(config.ocspPolicy.rawValue))")
        }
        let failing = relevant.filter { !$0.1.answered }
        let text = relevant.map { "\($0.0) \($0.1.detail) at \(Timestamp.iso8601($0.1.at))" }.joined(separator: "; ")
        if failing.isEmpty { return ReadinessCheck(name: name, state: .ok, detail: text) }
        return ReadinessCheck(name: name, state: .warn, detail: text)
    }
}
