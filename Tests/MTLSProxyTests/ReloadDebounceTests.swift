import XCTest

@testable import MTLSProxy

/// The reloader's debounce with made-up timestamps: a burst of file events gets one
/// reload, after the files went quiet, and a burst that never ends still gets reloads.
final class ReloadDebounceTests: XCTestCase {
    private let ms: UInt64 = 1_000_000

    /// Steps a clock 1 ms at a time as the reloader's loop would see it: events noted
    /// first, then a due reload made. Returns when reloads happened, in ms.
    private func reloads(events: [UInt64], until end: UInt64) -> [UInt64] {
        var debounce = Debounce(quiet: Reloader.debounceNanos, maxDelay: Reloader.maxDelayNanos)
        var done: [UInt64] = []
        let pending = Set(events)
        for t in 0...end {
            if pending.contains(t) { debounce.note(at: t * ms) }
            if debounce.isDue(at: t * ms) {
                done.append(t)
                debounce.reset()
            }
        }
        return done
    }

    func testTheSettingsAreTheReloadersRule() {
        XCTAssertEqual(Reloader.debounceNanos, 150 * ms)
        XCTAssertEqual(Reloader.maxDelayNanos, 600 * ms)
    }

    func testOneEventReloadsAfterTheQuietTime() {
        XCTAssertEqual(reloads(events: [10], until: 2000), [160])
    }

    func testABurstOfEventsReloadsOnceAfterTheLastOne() {
        // A certificate, its key and a CRL rewritten in quick succession: ten events.
        let burst: [UInt64] = (0..<10).map { 100 + $0 * 20 }
        XCTAssertEqual(reloads(events: burst, until: 3000), [280 + 150])
    }

    func testTwoBurstsApartReloadTwice() {
        let first: [UInt64] = [100, 110, 130]
        let second: [UInt64] = [1000, 1040]
        XCTAssertEqual(reloads(events: first + second, until: 3000), [280, 1190])
    }

    /// A file written every 100 ms never stays quiet for 150 ms: the first event of each
    /// round sets a deadline 600 ms on, so changes still arrive within the 2 s of a new CRL.
    func testEventsThatNeverStopStillReloadByTheMaximumDelay() {
        let stream: [UInt64] = (0..<30).map { $0 * 100 }  // 0 ... 2900 ms
        let done = reloads(events: stream, until: 4000)
        XCTAssertEqual(done, [600, 1300, 2000, 2700, 3050])
    }

    func testNothingIsDueWithoutEvents() {
        var debounce = Debounce(quiet: 150 * ms, maxDelay: 600 * ms)
        XCTAssertNil(debounce.due)
        XCTAssertFalse(debounce.isDue(at: .max))
        debounce.note(at: 5 * ms)
        XCTAssertEqual(debounce.due, 155 * ms)
        debounce.reset()
        XCTAssertNil(debounce.due, "a reload covers what was noted")
        XCTAssertFalse(debounce.isPending)
    }
}
