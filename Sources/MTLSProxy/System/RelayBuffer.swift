/// One side of a relay: the client's TLS session or the backend's socket in the proxy,
/// memory in tests.
protocol RelayStream: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult
    /// Writes a prefix of `bytes`. After .wouldBlock, a stream with `hasPendingWrite`
    /// must be given the same bytes again.
    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult
    /// Ends our writing (FIN, close_notify); false: would block, call again when writable.
    func finishWriting() -> Bool
    /// Whether a read may find bytes without a new readiness event.
    var hasBufferedInput: Bool { get }
    var hasPendingWrite: Bool { get }
}

extension RelayStream {
    /// Writes a prefix of `bytes[offset...]`: the buffer pointer stays here, next to the
    /// streams, rather than in the LDAP code that queues small messages in arrays.
    func write(_ bytes: [UInt8], from offset: Int) -> IOResult {
        bytes.withUnsafeBytes { write(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
    }

    /// Reads at most `limit` bytes onto the end of `bytes`.
    func read(appendingTo bytes: inout [UInt8], limit: Int) -> IOResult {
        var chunk = [UInt8](repeating: 0, count: limit)
        let result = chunk.withUnsafeMutableBytes { read(into: $0) }
        if case .processed(let n) = result { bytes += chunk.prefix(n) }
        return result
    }
}

/// Fixed-size byte buffers for the relay, recycled per event loop: a connection holds a
/// buffer only while bytes are in flight, so idle connections cost no buffer memory.
final class BufferPool {
    /// Four TLS records' worth: one recv(2) from the backend or the client fills several
    /// records, and one send(2) to the backend drains several. Held only while bytes
    /// are in flight, so idle connections do not pay for the size.
    static let bufferSize = 64 * 1024
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

    /// Reads once into the free space with `read` (a socket's or a TLS session's).
    mutating func fill(from pool: BufferPool, with read: (UnsafeMutableRawBufferPointer) -> IOResult) -> IOResult {
        let space = writable(from: pool)
        let result = read(UnsafeMutableRawBufferPointer(start: space.pointer, count: space.count))
        if case .processed(let n) = result { commit(n) }
        return result
    }

    mutating func fill<S: RelayStream>(from stream: S, pool: BufferPool) -> IOResult {
        fill(from: pool) { stream.read(into: $0) }
    }

    /// Writes up to `limit` of the held bytes to `stream` once; `observe` sees the bytes
    /// that went, before they are dropped from the buffer.
    mutating func drain<S: RelayStream>(
        to stream: S, limit: Int = .max, observe: (UnsafeRawBufferPointer) -> Void = { _ in }
    ) -> IOResult {
        let bytes = UnsafeRawBufferPointer(start: readable, count: Swift.min(count, limit))
        let result = stream.write(bytes)
        if case .processed(let n) = result {
            observe(UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
            consume(n)
        }
        return result
    }

    /// The bytes held, first to last, for a writer or a reader of message boundaries.
    func withReadable<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        body(UnsafeRawBufferPointer(start: storage.map { $0 + start }, count: count))
    }

    /// Replaces what is held with `bytes` (at most one buffer's worth).
    mutating func replace(with bytes: [UInt8], pool: BufferPool) {
        start = 0
        end = 0
        let space = writable(from: pool)
        let n = min(bytes.count, space.count)
        bytes.withUnsafeBytes { space.pointer.copyMemory(from: $0.baseAddress!, byteCount: n) }
        commit(n)
    }

    mutating func discard(to pool: BufferPool) {
        if let buffer = storage { pool.give(buffer) }
        storage = nil
        start = 0
        end = 0
    }
}
