/// A wake-up on one event loop that runs a closure: deadlines of connections, periodic
/// jobs (`loop.every`) and one-shot delays (`loop.after`) are all one of these.
///
/// Arming only ever moves the wake-up earlier. A connection that pushes its idle
/// deadline later on every read therefore costs nothing; its closure looks at the real
/// deadline when it fires and arms again if that is still ahead.
final class LoopTimer {
    /// The deadline this timer has in the loop's heap (0 = not armed).
    fileprivate(set) var armedAt: UInt64 = 0
    fileprivate let key: UInt64
    fileprivate let action: (_ now: UInt64) -> Void
    /// For `every`: the period after which it arms itself again (0 = one-shot).
    fileprivate var period: UInt64
    private unowned let loop: EventLoop

    fileprivate init(loop: EventLoop, key: UInt64, period: UInt64, action: @escaping (_ now: UInt64) -> Void) {
        self.loop = loop
        self.key = key
        self.period = period
        self.action = action
    }

    var isArmed: Bool { armedAt != 0 }

    /// Makes sure the closure runs no later than `deadline` (monotonic nanoseconds).
    func arm(at deadline: UInt64) {
        guard armedAt == 0 || deadline < armedAt else { return }
        armedAt = deadline
        loop.timers.push(deadline: deadline, key: key)
        loop.timerTable[key] = self
    }

    /// Stops the timer (a periodic one too); it may be armed again later.
    func cancel() {
        period = 0
        armedAt = 0
        loop.timerTable[key] = nil
    }

    fileprivate func fire(now: UInt64) {
        armedAt = 0
        loop.timerTable[key] = nil
        action(now)
        if period > 0 { arm(at: now + period) }
    }
}

extension EventLoop {
    /// A timer that is not armed yet: the owner arms it with `arm(at:)`.
    func timer(_ action: @escaping (_ now: UInt64) -> Void) -> LoopTimer {
        LoopTimer(loop: self, key: makeTimerKey(), period: 0, action: action)
    }

    /// Runs `action` once, `nanos` from now.
    @discardableResult
    func after(_ nanos: UInt64, _ action: @escaping (_ now: UInt64) -> Void) -> LoopTimer {
        let timer = timer(action)
        timer.arm(at: monotonicNanos() + nanos)
        return timer
    }

    /// Runs `action` every `nanos` until the returned timer is cancelled; the first run
    /// is one period from now, or at once with `startNow`.
    @discardableResult
    func every(_ nanos: UInt64, startNow: Bool = false, _ action: @escaping (_ now: UInt64) -> Void) -> LoopTimer {
        precondition(nanos > 0, "a periodic timer needs a period")
        let timer = LoopTimer(loop: self, key: makeTimerKey(), period: nanos, action: action)
        let now = monotonicNanos()
        timer.arm(at: startNow ? now : now + nanos)
        return timer
    }

    /// Runs the timers whose deadline has come, earliest first. A heap entry whose timer
    /// was cancelled, or armed again earlier, is stale and skipped.
    func fireTimers(now: UInt64) {
        while let earliest = timers.earliest, earliest <= now {
            let entry = timers.pop()!
            guard let timer = timerTable[entry.key], timer.armedAt == entry.deadline else { continue }
            timer.fire(now: now)
        }
    }
}
