import Glibc
import XCTest

@testable import MTLSProxy

/// The System/ helpers that other folders call instead of raw syscalls.
final class SystemTests: XCTestCase {
    func testFilePathSplitsAtTheLastSlash() {
        XCTAssertEqual(FilePath.parent(of: "/etc/mtls/crl"), "/etc/mtls")
        XCTAssertEqual(FilePath.parent(of: "/crl"), "/")
        XCTAssertEqual(FilePath.parent(of: "crl"), ".")
        XCTAssertEqual(FilePath.parent(of: "conf/crl/a.pem"), "conf/crl")
        XCTAssertEqual(FilePath.lastComponent(of: "/etc/mtls/crl"), "crl")
        XCTAssertEqual(FilePath.lastComponent(of: "crl"), "crl")
        XCTAssertEqual(FilePath.lastComponent(of: "/"), "")
    }

    func testInotifyDecodesTheKernelLayout() {
        func event(wd: Int32, mask: UInt32, name: String, padded: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            for word in [UInt32(bitPattern: wd), mask, 0, UInt32(padded)] { withUnsafeBytes(of: word) { bytes += $0 } }
            return bytes + Array(name.utf8) + [UInt8](repeating: 0, count: padded - name.utf8.count)
        }
        let bytes = event(wd: 3, mask: UInt32(IN_CREATE), name: "crl.pem", padded: 16)
            + event(wd: 5, mask: UInt32(IN_DELETE_SELF), name: "", padded: 0)
            + event(wd: 7, mask: UInt32(IN_CREATE), name: "cut", padded: 16).prefix(20)  // cut short
        XCTAssertEqual(Inotify.decode(bytes[...]), [Inotify.Event(watch: 3, name: "crl.pem"), Inotify.Event(watch: 5, name: "")])
        XCTAssertEqual(Inotify.decode(bytes[4...]).count, 0, "garbage lengths read nothing past the end")
    }

    func testInotifyReportsANewFileOfAWatchedFolder() throws {
        var template = Array("/tmp/mtls-inotify-XXXXXX".utf8CString)
        let folder = String(cString: try XCTUnwrap(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }))
        defer { unlink(folder + "/new.crl"); rmdir(folder) }
        let fd = try Inotify.open()
        defer { close(fd) }
        let wd = try XCTUnwrap(Inotify.addWatch(fd, path: folder, mask: UInt32(IN_CREATE)))
        XCTAssertNil(Inotify.addWatch(fd, path: folder + "/absent", mask: UInt32(IN_CREATE)))
        XCTAssertEqual(Inotify.readPending(fd), [], "nothing yet, and it does not block")
        close(open(folder + "/new.crl", O_CREAT | O_WRONLY, 0o600))
        XCTAssertEqual(Inotify.readPending(fd), [Inotify.Event(watch: wd, name: "new.crl")])
    }

    func testDescriptorIOOnANonBlockingPair() {
        var pair: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue), 0, &pair), 0)
        let reader = Descriptor(pair[0]), writer = Descriptor(pair[1])
        defer { reader.close() }
        var buffer = [UInt8](repeating: 0, count: 4)
        XCTAssertEqual(reader.receive(into: &buffer), .wouldBlock)
        XCTAssertEqual(writer.send(Array("xxhello".utf8), from: 2), .processed(5))
        XCTAssertEqual(reader.receive(into: &buffer), .processed(4))
        XCTAssertEqual(buffer, Array("hell".utf8))
        XCTAssertEqual(reader.receive(into: &buffer), .processed(1))
        writer.close()
        writer.close()  // closes once: a second call must not close a reused number
        XCTAssertEqual(reader.receive(into: &buffer), .closed)
        XCTAssertEqual(reader.send([1]), .failed(SystemError.describe(EPIPE)), "no SIGPIPE: the test process lives on")
    }

    /// A short read means the kernel queue was empty: the next read waits for an edge
    /// instead of costing an EAGAIN system call; after the peer's FIN it reads to EOF.
    func testStreamSocketSkipsTheReadAfterAShortOne() {
        var pair: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue), 0, &pair), 0)
        let socket = StreamSocket(Descriptor(pair[0])), writer = Descriptor(pair[1])
        defer { socket.descriptor.close() }
        var buffer = [UInt8](repeating: 0, count: 8)
        func read() -> IOResult { buffer.withUnsafeMutableBytes { socket.read(into: $0) } }
        XCTAssertEqual(writer.send([1, 2, 3]), .processed(3))
        XCTAssertEqual(read(), .processed(3))
        XCTAssertEqual(writer.send([4]), .processed(1))
        XCTAssertEqual(read(), .wouldBlock, "no edge seen since the short read")
        socket.noteEvents(Epoll.input)
        XCTAssertEqual(read(), .processed(1))
        XCTAssertEqual(writer.send([5, 6]), .processed(2))
        writer.close()
        socket.noteEvents(Epoll.input | Epoll.readHangup)
        XCTAssertEqual(read(), .processed(2))
        XCTAssertEqual(read(), .closed, "after the peer's FIN a short read must not hide the EOF")
    }
}
