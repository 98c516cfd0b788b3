import CGnuTLSShim
import Glibc

/// The epoll bits as UInt32, named once.
enum Epoll {
    static let input = EPOLLIN.rawValue
    static let output = EPOLLOUT.rawValue
    static let hangup = EPOLLHUP.rawValue
    static let error = EPOLLERR.rawValue
    static let readHangup = EPOLLRDHUP.rawValue
    static let edgeTriggeredBoth = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
}

/// One epoll instance, owned, with the buffer its waits fill. Each registered fd
/// carries a 64-bit token of the caller's choosing. A failed epoll_ctl is a bug of ours
/// (a closed or doubly registered descriptor), never the peer's doing: it stops here.
final class EpollSet {
    private let epoll: Descriptor
    private let ready: UnsafeMutablePointer<epoll_event>
    private let capacity: Int32 = 256

    init() throws(SystemError) {
        let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard fd >= 0 else { throw SystemError("epoll_create1") }
        epoll = Descriptor(fd)
        ready = .allocate(capacity: Int(capacity))
    }

    deinit {
        ready.deallocate()
        epoll.close()
    }

    func add(_ fd: Int32, events: UInt32, token: UInt64) {
        control(EPOLL_CTL_ADD, fd, events: events, token: token)
    }

    func modify(_ fd: Int32, events: UInt32, token: UInt64) {
        control(EPOLL_CTL_MOD, fd, events: events, token: token)
    }

    func remove(_ fd: Int32) {
        control(EPOLL_CTL_DEL, fd, events: 0, token: 0)
    }

    private func control(_ operation: Int32, _ fd: Int32, events: UInt32, token: UInt64) {
        var event = epoll_event(events: events, data: epoll_data_t(u64: token))
        guard epoll_ctl(epoll.raw, operation, fd, &event) == 0 else {
            preconditionFailure("epoll_ctl \(operation) fd \(fd): \(SystemError("epoll_ctl"))")
        }
    }

    /// Waits up to `timeoutMillis` (-1: no limit; 0: only looks) and hands each ready
    /// fd's token and event bits to `body`; returns how many there were. A signal ends
    /// the wait early with none.
    @discardableResult
    func wait(timeoutMillis: Int32, _ body: (_ token: UInt64, _ events: UInt32) -> Void) -> Int {
        let count = epoll_wait(epoll.raw, ready, capacity, timeoutMillis)
        if count < 0 {
            guard errno == EINTR else { preconditionFailure("epoll_wait: \(SystemError("epoll_wait"))") }
            return 0
        }
        for i in 0..<Int(count) { body(ready[i].data.u64, ready[i].events) }
        return Int(count)
    }
}

/// An eventfd that wakes a loop from another thread.
final class WakeUpSignal {
    let descriptor: Descriptor

    init() throws(SystemError) {
        let fd = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard fd >= 0 else { throw SystemError("eventfd") }
        descriptor = Descriptor(fd)
    }

    deinit { descriptor.close() }

    /// Safe from any thread.
    func signal() {
        var one: UInt64 = 1
        _ = write(descriptor.raw, &one, 8)
    }

    /// Resets the counter (the loop then runs what it was woken for).
    func consume() {
        var counter: UInt64 = 0
        _ = read(descriptor.raw, &counter, 8)
    }
}
