@testable import MTLSProxy

/// Pumps with every side marked ready (as if each had an event) until `done` holds, the
/// relay fails, or `rounds` pumps went by; returns the last outcome.
@discardableResult
func drive(_ relay: Relay<MemoryStream, MemoryStream>, rounds: Int = 1000, between: () -> Void = {},
           until done: (Relay<MemoryStream, MemoryStream>.Outcome) -> Bool = { _ in false }) -> Relay<MemoryStream, MemoryStream>.Outcome {
    var outcome = Relay<MemoryStream, MemoryStream>.Outcome.open(moved: false)
    for _ in 0..<rounds {
        between()
        relay.clientReadable = true
        relay.clientWritable = true
        relay.backendReadable = true
        relay.backendWritable = true
        outcome = relay.pump()
        if done(outcome) { break }
        if case .failed = outcome { break }
    }
    return outcome
}
