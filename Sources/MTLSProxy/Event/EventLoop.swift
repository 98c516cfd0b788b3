import Synchronization

/// Something that owns a file descriptor registered with an event loop.
protocol EventHandler: AnyObject {
    /// Called on the loop thread with the epoll event bits for `fd`.
    func handleEvent(fd: Int32, events: UInt32)
}

/// One epoll event loop, run by one thread. Everything but `execute` and `wakeUp`
/// must be called on that thread.
final class EventLoop: @unchecked Sendable {  // shared only through execute(), which locks
    let index: Int
    private let epoll: EpollSet
    private let wake: WakeUpSignal
    /// Handlers by fd (descriptor numbers are small and dense: an array is the fastest
    /// table). A registration id in the epoll token lets us drop events that were queued
    /// for an fd closed and reused within the same batch.
    private var handlers: [(id: UInt32, handler: EventHandler)?] = []
    private var nextRegistrationID: UInt32 = 1
    /// Timers by key while armed (see LoopTimer), and their deadlines in a heap.
    var timers = TimerHeap()
    var timerTable: [UInt64: LoopTimer] = [:]
    private var nextTimerKey: UInt64 = 1
    private let inbox = Mutex<[@Sendable () -> Void]>([])
    private var stopped = false
    /// The wake-up eventfd's token: registration id 0 is never given to a handler.
    private var wakeToken: UInt64 { UInt64(UInt32(bitPattern: wake.descriptor.raw)) }

    init(index: Int) throws(SystemError) {
        self.index = index
        epoll = try EpollSet()
        wake = try WakeUpSignal()
        epoll.add(wake.descriptor.raw, events: Epoll.input, token: wakeToken)
    }

    // MARK: - File descriptors

    private static func token(fd: Int32, id: UInt32) -> UInt64 { UInt64(id) << 32 | UInt64(UInt32(bitPattern: fd)) }

    func register(fd: Int32, events: UInt32, handler: EventHandler) {
        let id = nextRegistrationID
        nextRegistrationID = nextRegistrationID == UInt32.max ? 1 : nextRegistrationID + 1
        if Int(fd) >= handlers.count { handlers += Array(repeating: nil, count: Int(fd) + 1 - handlers.count) }
        handlers[Int(fd)] = (id, handler)
        epoll.add(fd, events: events, token: Self.token(fd: fd, id: id))
    }

    func modify(fd: Int32, events: UInt32) {
        guard Int(fd) < handlers.count, let registration = handlers[Int(fd)] else { return }
        epoll.modify(fd, events: events, token: Self.token(fd: fd, id: registration.id))
    }

    /// Forgets an fd. Call before close(2) so that the kernel set stays in step.
    func deregister(fd: Int32) {
        guard Int(fd) < handlers.count, handlers[Int(fd)] != nil else { return }
        handlers[Int(fd)] = nil
        epoll.remove(fd)
    }

    // MARK: - Timers

    func makeTimerKey() -> UInt64 {
        defer { nextTimerKey += 1 }
        return nextTimerKey
    }

    // MARK: - Cross-thread

    /// Runs `task` on this loop's thread. Safe from any thread.
    func execute(_ task: @escaping @Sendable () -> Void) {
        inbox.withLock { $0.append(task) }
        wakeUp()
    }

    func wakeUp() { wake.signal() }

    private func drainInbox() {
        wake.consume()
        let tasks = inbox.withLock { tasks in
            defer { tasks.removeAll() }
            return tasks
        }
        for task in tasks { task() }
    }

    // MARK: - Running

    func stop() { stopped = true }

    /// After a wait that found work, the loop looks again without sleeping for up to
    /// this long before it blocks. Under load the next event is usually microseconds
    /// away, and falling asleep for it costs more: a wake-up, and on a virtual machine
    /// an idle vCPU the host may give away for a scheduler tick (the bench showed the
    /// p99.9 of request/response at 1.5x HAProxy's without this, at or below it with it,
    /// and no more CPU per request). An idle loop never spins: its last wait found nothing.
    static let spinBeforeSleepNanos: UInt64 = 10_000

    func run() {
        var busy = false
        while !stopped {
            var timeout: Int32 = -1
            if let earliest = timers.earliest {
                let now = monotonicNanos()
                // Round up: waking a millisecond early would only spin.
                timeout = earliest <= now ? 0 : Int32(min((earliest - now + 999_999) / 1_000_000, 60_000))
            }
            var found = 0
            if busy && timeout != 0 {
                let until = monotonicNanos() + Self.spinBeforeSleepNanos
                repeat { found = epoll.wait(timeoutMillis: 0, dispatch) } while found == 0 && monotonicNanos() < until
            }
            if found == 0 { found = epoll.wait(timeoutMillis: timeout, dispatch) }
            busy = found > 0
            if !timers.isEmpty { fireTimers(now: monotonicNanos()) }
        }
    }

    private func dispatch(_ token: UInt64, _ events: UInt32) {
        if token == wakeToken { return drainInbox() }
        let fd = Int(UInt32(truncatingIfNeeded: token))
        guard fd < handlers.count, let registration = handlers[fd], registration.id == UInt32(token >> 32) else { return }
        registration.handler.handleEvent(fd: Int32(fd), events: events)
    }
}
