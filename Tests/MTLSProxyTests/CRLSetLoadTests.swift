import CGnuTLSShim
import Glibc
import XCTest

@testable import MTLSProxy

/// CRLSet.load on real folders: CRLs made and signed by GnuTLS, a CA bundle in PEM.
final class CRLSetLoadTests: XCTestCase {
    private let now = Int(time(nil))
    private var folder = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/mtls-crlset-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        folder = String(cString: try XCTUnwrap(made))
    }

    override func tearDown() {
        for name in (try? CRLSet.listFiles(folder)) ?? [] { unlink(folder + "/" + name) }
        rmdir(folder)
    }

    private func write(_ name: String, _ bytes: [UInt8]) {
        let fd = open(folder + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0, "open \(name)")
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        precondition(written == bytes.count, "write \(name)")
        close(fd)
    }

    private func load(bundle: TestCA, previous: CRLSet? = nil) throws -> CRLSet {
        try CRLSet.load(directory: folder, trustedCAs: bundle.pem, previous: previous)
    }

    func testLoadsTheCRLOfABundledCA() throws {
        let ca = TestCA(name: "CN=Bundled CA,O=mtls-proxy test")
        write("ca.crl", ca.crl(revoking: [[0x05], [0x01, 0x00]], thisUpdate: now - 60, nextUpdate: now + 3600))
        let set = try load(bundle: ca)
        let crl = try XCTUnwrap(set.crl(for: ca.info.ownKey))
        XCTAssertEqual(crl.revoked, [SerialNumber([0x05]), SerialNumber([0x01, 0x00])])
        XCTAssertEqual(crl.file, folder + "/ca.crl")
        XCTAssertEqual(crl.issuer, "CN=Bundled CA,O=mtls-proxy test")
        XCTAssertEqual(set.filesRead, 1)
        XCTAssertEqual(set.heldCount, 0)
        XCTAssertEqual(set.warnings, [])
        XCTAssertEqual(set.rejectedCount, 0)
    }

    func testHoldsTheCRLOfAnUnknownCA() throws {
        let bundled = TestCA(name: "CN=Bundled CA")
        let stranger = TestCA(name: "CN=Client-only CA")
        write("stranger.crl", stranger.crl(revoking: [[0x07]], thisUpdate: now - 60, nextUpdate: now + 3600))
        let set = try load(bundle: bundled)
        XCTAssertTrue(set.byIssuer.isEmpty, "not trusted before its CA is")
        XCTAssertNil(set.crl(for: stranger.info.ownKey))
        XCTAssertEqual(set.heldCount, 1)
        XCTAssertEqual(set.held[stranger.info.rawSubject]?.first?.info.revoked, [SerialNumber([0x07])])
        XCTAssertEqual(set.rejectedCount, 0)
        XCTAssertTrue(set.unreadable.isEmpty)
    }

    func testSkipsACorruptFileAndKeepsWhatItHadLoadedBefore() throws {
        let ca = TestCA(name: "CN=Bundled CA")
        let crl = ca.crl(revoking: [[0x09]], thisUpdate: now - 60, nextUpdate: now + 3600)
        write("ca.crl", crl)
        let before = try load(bundle: ca)
        XCTAssertNotNil(before.crl(for: ca.info.ownKey))

        write("ca.crl", Array("-----BEGIN X509 CRL-----\nnot base64 at all\n".utf8))  // caught half-written
        write("junk.crl", [0x00, 0x01, 0x02])
        let fresh = try load(bundle: ca)
        XCTAssertNil(fresh.crl(for: ca.info.ownKey), "no previous state: nothing to keep")
        XCTAssertEqual(Set(fresh.unreadable.map(\.file)), [folder + "/ca.crl", folder + "/junk.crl"])
        XCTAssertEqual(fresh.rejectedCount, 2)
        XCTAssertEqual(fresh.filesRead, 2)

        let reloaded = try load(bundle: ca, previous: before)
        XCTAssertEqual(reloaded.crl(for: ca.info.ownKey)?.revoked, [SerialNumber([0x09])], "a revocation never lapses on a bad write")
        XCTAssertTrue(reloaded.warnings.contains { $0.contains("keeping the CRL of CN=Bundled CA") }, "\(reloaded.warnings)")
    }

    func testEmptyFolderLoadsNothingAndDropsWhatWasLoadedBefore() throws {
        let ca = TestCA(name: "CN=Bundled CA")
        write("ca.crl", ca.crl(revoking: [[0x09]], thisUpdate: now - 60, nextUpdate: now + 3600))
        let before = try load(bundle: ca)
        XCTAssertEqual(before.byIssuer.count, 1)
        unlink(folder + "/ca.crl")
        let set = try load(bundle: ca, previous: before)
        XCTAssertTrue(set.byIssuer.isEmpty, "a file that is gone takes its CRLs with it")
        XCTAssertEqual(set.heldCount, 0)
        XCTAssertEqual(set.filesRead, 0)
        XCTAssertEqual(set.warnings, [])
        XCTAssertTrue(set.unreadable.isEmpty)
    }

    func testAMissingFolderThrows() {
        XCTAssertThrowsError(try CRLSet.load(directory: folder + "/absent", trustedCAs: TestCA(name: "CN=CA").pem))
    }

    func testTheNewerCRLOfAnIssuerWinsWhateverTheFileOrder() throws {
        let ca = TestCA(name: "CN=Bundled CA")
        let older = ca.crl(revoking: [[0x01]], thisUpdate: now - 7200, nextUpdate: now + 3600, number: [0x03])
        let newer = ca.crl(revoking: [[0x01], [0x02]], thisUpdate: now - 60, nextUpdate: now + 3600, number: [0x09])
        for (first, second) in [(newer, older), (older, newer)] {
            write("a.crl", first)
            write("b.crl", second)
            let set = try load(bundle: ca)
            XCTAssertEqual(set.byIssuer.count, 1)
            let crl = try XCTUnwrap(set.crl(for: ca.info.ownKey))
            XCTAssertEqual(crl.number, [0x09])
            XCTAssertEqual(crl.revoked, [SerialNumber([0x01]), SerialNumber([0x02])])
            XCTAssertEqual(crl.file, folder + (first == newer ? "/a.crl" : "/b.crl"))
            XCTAssertEqual(set.rejectedCount, 0, "an older CRL is superseded, not an error")
        }
    }
}
