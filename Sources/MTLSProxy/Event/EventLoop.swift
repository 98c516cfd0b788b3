import CGnuTLSShim
import Glibc
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
    private let epfd: Int32
    private let wakeFD: Int32
    /// Handlers by fd; a registration id in the epoll data lets us drop events that were
    /// queued for an fd closed and reused within the same batch.
    private var handlers: [Int32: (id: UInt32, handler: EventHandler)] = [:]
    private var nextRegistrationID: UInt32 = 1
    /// Timers by key while armed (see LoopTimer), and their deadlines in a heap.
    var timers = TimerHeap()
    var timerTable: [UInt64: LoopTimer] = [:]
    private var nextTimerKey: UInt64 = 1
    private let inbox = Mutex<[@Sendable () -> Void]>([])
    private var stopped = false

    init(index: Int) throws(SystemError) {
        self.index = index
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epfd >= 0 else { throw SystemError("epoll_create1") }
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw SystemError("eventfd") }
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: UInt64(UInt32(bitPattern: wakeFD))))
        epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &event)
    }

    deinit {
        close(wakeFD)
        close(epfd)
    }

    // MARK: - File descriptors

    func register(fd: Int32, events: UInt32, handler: EventHandler) {
        let id = nextRegistrationID
        nextRegistrationID = nextRegistrationID == UInt32.max ? 1 : nextRegistrationID + 1
        handlers[fd] = (id, handler)
        var event = epoll_event(events: events, data: epoll_data_t(u64: UInt64(id) << 32 | UInt64(UInt32(bitPattern: fd))))
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) != 0 {
            preconditionFailure("epoll_ctl ADD fd \(fd): \(SystemError("epoll_ctl"))")
        }
    }

    func modify(fd: Int32, events: UInt32) {
        guard let registration = handlers[fd] else { return }
        var event = epoll_event(
            events: events, data: epoll_data_t(u64: UInt64(registration.id) << 32 | UInt64(UInt32(bitPattern: fd))))
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event)
    }

    /// Forgets an fd. Call before close(2) so that the kernel set stays in step.
    func deregister(fd: Int32) {
        guard handlers.removeValue(forKey: fd) != nil else { return }
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
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

    func wakeUp() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    private func drainInbox() {
        var counter: UInt64 = 0
        _ = read(wakeFD, &counter, 8)
        let tasks = inbox.withLock { tasks in
            defer { tasks.removeAll() }
            return tasks
        }
        for task in tasks { task() }
    }

    // MARK: - Running

    func stop() { stopped = true }

    func run() {
        let capacity = 256
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while !stopped {
            var timeout: Int32 = -1
            if let earliest = timers.earliest {
                let now = monotonicNanos()
                // Round up: waking a millisecond early would only spin.
                timeout = earliest <= now ? 0 : Int32(min((earliest - now + 999_999) / 1_000_000, 60_000))
            }
            let count = epoll_wait(epfd, events, Int32(capacity), timeout)
            if count < 0 {
                if errno == EINTR { continue }
                preconditionFailure("epoll_wait: \(SystemError("epoll_wait"))")
            }
            for i in 0..<Int(count) {
                let data = events[i].data.u64
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
                if fd == wakeFD && data >> 32 == 0 {
                    drainInbox()
                    continue
                }
                guard let registration = handlers[fd], registration.id == UInt32(data >> 32) else { continue }
                registration.handler.handleEvent(fd: fd, events: events[i].events)
            }
            if !timers.isEmpty { fireTimers(now: monotonicNanos()) }
        }
    }
}

/// The epoll bits as UInt32, named once.
enum Epoll {
    static let input = EPOLLIN.rawValue
    static let output = EPOLLOUT.rawValue
    static let hangup = EPOLLHUP.rawValue
    static let error = EPOLLERR.rawValue
    static let readHangup = EPOLLRDHUP.rawValue
    static let edgeTriggeredBoth = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
}
