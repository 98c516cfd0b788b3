/// Fixed-size byte buffers for the relay, recycled per event loop: a connection holds a
/// buffer only while bytes are in flight, so idle connections cost no buffer memory.
final class BufferPool {
    /// Four TLS records' worth: one recv(2) from the backend or the client fills several
    /// records, and one send(2) to the backend drains several. Held only while bytes
    /// are in flight, so idle connections do not pay for the size.
    static let bufferSize = 64 * 1024
    /// The most plaintext one TLS record carries.
    static let maxRecordSize = 16 * 1024
    private var free: [UnsafeMutableRawPointer] = []
    private let keep: Int

    init(keep: Int = 64) { self.keep = keep }

    deinit { for buffer in free { buffer.deallocate() } }

    func take() -> UnsafeMutableRawPointer {
        free.popLast() ?? UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 16)
    }

    func give(_ buffer: UnsafeMutableRawPointer) {
        if free.count < keep { free.append(buffer) } else { buffer.deallocate() }
    }
}

/// Bytes travelling one way: filled at `end`, drained from `start`. The storage comes
/// from the pool on demand and goes back as soon as the buffer is empty.
struct RelayBuffer {
    private(set) var storage: UnsafeMutableRawPointer?
    private(set) var start = 0
    private(set) var end = 0

    var count: Int { end - start }
    var isEmpty: Bool { start == end }
    var freeSpace: Int { BufferPool.bufferSize - end + start }
    var hasSpace: Bool { freeSpace > 0 }

    /// Where to write at most `writableCount` new bytes (taking storage if needed).
    mutating func writable(from pool: BufferPool) -> (pointer: UnsafeMutableRawPointer, count: Int) {
        if storage == nil { storage = pool.take() }
        if end == BufferPool.bufferSize && start > 0 {
            // Slide the unread tail to the front: at most one buffer's worth, and only
            // when the reader is behind.
            storage!.copyMemory(from: storage! + start, byteCount: end - start)
            end -= start
            start = 0
        }
        return (storage! + end, BufferPool.bufferSize - end)
    }

    mutating func commit(_ n: Int) { end += n }

    var readable: UnsafeMutableRawPointer { storage! + start }

    mutating func consume(_ n: Int) {
        start += n
        if start == end { start = 0; end = 0 }
    }

    /// Returns the storage to the pool when nothing is in flight.
    mutating func releaseIfEmpty(to pool: BufferPool) {
        if let buffer = storage, isEmpty {
            pool.give(buffer)
            storage = nil
        }
    }

    mutating func discard(to pool: BufferPool) {
        if let buffer = storage { pool.give(buffer) }
        storage = nil
        start = 0
        end = 0
    }
}
