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

    func testSocketIOOnANonBlockingPair() {
        var pair: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue), 0, &pair), 0)
        defer { close(pair[0]) }
        var buffer = [UInt8](repeating: 0, count: 4)
        XCTAssertEqual(SocketIO.receive(pair[0], into: &buffer), .wouldBlock)
        XCTAssertEqual(SocketIO.send(pair[1], Array("xxhello".utf8), from: 2), .moved(5))
        XCTAssertEqual(SocketIO.receive(pair[0], into: &buffer), .moved(4))
        XCTAssertEqual(buffer, Array("hell".utf8))
        XCTAssertEqual(SocketIO.receive(pair[0], into: &buffer), .moved(1))
        close(pair[1])
        XCTAssertEqual(SocketIO.receive(pair[0], into: &buffer), .closed)
        XCTAssertEqual(SocketIO.send(pair[0], [1]), .failed(EPIPE), "no SIGPIPE: the test process lives on")
    }
}
