import XCTest

@testable import MTLSProxy

/// The event loop's timers, run on the test's own thread: each test ends the loop from
/// a timer, so `run()` returns.
final class LoopTimerTests: XCTestCase {
    private let millisecond: UInt64 = 1_000_000

    func testAfterRunsOnceAndEveryRepeatsUntilCancelled() throws {
        let loop = try EventLoop(index: 0)
        var once = 0
        var ticks = 0
        loop.after(2 * millisecond) { _ in once += 1 }
        var ticker: LoopTimer?
        ticker = loop.every(millisecond) { _ in
            ticks += 1
            if ticks == 5 { ticker?.cancel() }
        }
        loop.after(30 * millisecond) { _ in loop.stop() }
        loop.run()
        XCTAssertEqual(once, 1)
        XCTAssertEqual(ticks, 5, "a cancelled periodic timer must not run again")
        XCTAssertFalse(ticker!.isArmed)
    }

    func testTimersFireInDeadlineOrder() throws {
        let loop = try EventLoop(index: 0)
        var order: [Int] = []
        for (index, delay) in [5, 1, 3, 2, 4].enumerated() {
            loop.after(UInt64(delay) * millisecond) { _ in order.append(index) }
        }
        loop.after(10 * millisecond) { _ in loop.stop() }
        loop.run()
        XCTAssertEqual(order, [1, 3, 2, 4, 0])
    }

    /// Arming only moves a wake-up earlier: a later deadline is the owner's business,
    /// checked when the timer fires (what idle timeouts rely on).
    func testArmingLaterKeepsTheEarlierWakeUp() throws {
        let loop = try EventLoop(index: 0)
        let start = monotonicNanos()
        var firedAt: UInt64 = 0
        let timer = loop.timer { now in firedAt = now }
        timer.arm(at: start + 2 * millisecond)
        timer.arm(at: start + 20 * millisecond)
        loop.after(10 * millisecond) { _ in loop.stop() }
        loop.run()
        XCTAssertGreaterThanOrEqual(firedAt, start + 2 * millisecond)
        XCTAssertLessThan(firedAt, start + 10 * millisecond, "the earlier deadline must win")
    }

    func testCancelledAndReArmedTimerFiresOnlyAtTheNewDeadline() throws {
        let loop = try EventLoop(index: 0)
        let start = monotonicNanos()
        var fired: [UInt64] = []
        let timer = loop.timer { now in fired.append(now) }
        timer.arm(at: start + 1 * millisecond)
        timer.cancel()
        timer.arm(at: start + 5 * millisecond)
        loop.after(10 * millisecond) { _ in loop.stop() }
        loop.run()
        XCTAssertEqual(fired.count, 1, "the stale heap entry of the cancelled deadline must be skipped")
        XCTAssertGreaterThanOrEqual(fired[0], start + 5 * millisecond)
    }
}
