import XCTest

@testable import MTLSProxy

/// Which deadline of a relaying connection comes first, and what is due when.
final class RelayDeadlinesTests: XCTestCase {
    func testIdleDeadlineFollowsTheLastActivity() {
        var deadlines = RelayDeadlines(idleNanos: 1_000)
        deadlines.lastActivity = 5_000
        XCTAssertEqual(deadlines.next, 6_000)
        XCTAssertNil(deadlines.due(now: 5_999))
        XCTAssertEqual(deadlines.due(now: 6_000), .idle)
        deadlines.lastActivity = 5_500  // bytes moved
        XCTAssertNil(deadlines.due(now: 6_000))
        XCTAssertEqual(deadlines.next, 6_500)
    }

    func testNoIdleTimeoutMeansNothingToWaitFor() {
        var deadlines = RelayDeadlines(idleNanos: 0)
        deadlines.lastActivity = 5_000
        XCTAssertNil(deadlines.next)
        XCTAssertNil(deadlines.due(now: .max))
    }

    func testTheProxysBindComesBeforeIdleWhenEarlier() {
        var deadlines = RelayDeadlines(idleNanos: 10_000)
        deadlines.bindBy = 3_000
        XCTAssertEqual(deadlines.next, 3_000)
        XCTAssertEqual(deadlines.due(now: 3_000), .proxyBind)
        deadlines.bindBy = nil  // answered
        XCTAssertEqual(deadlines.next, 10_000)
        XCTAssertNil(deadlines.due(now: 3_000))
    }

    func testAClosingWaitSetsAsideTheOtherDeadlines() {
        var deadlines = RelayDeadlines(idleNanos: 1_000)
        deadlines.bindBy = 500
        deadlines.closingBy = 4_000
        XCTAssertEqual(deadlines.next, 4_000)
        XCTAssertNil(deadlines.due(now: 3_999), "the bind and idle deadlines passed, but the close's wait decides now")
        XCTAssertEqual(deadlines.due(now: 4_000), .boundary)
    }
}
