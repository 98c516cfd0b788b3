import XCTest

@testable import MTLSProxy

/// The walk from a client certificate to the bundle, on made-up certificates: names,
/// key identifiers and serials are all it looks at.
final class ChainPathTests: XCTestCase {
    private static let template = TestCA(name: "CN=Template").info

    private func cert(_ subject: String, issuer: String, serial: UInt8, ski: [UInt8] = [], aki: [UInt8] = []) -> CertificateInfo {
        var info = Self.template
        info.subject = subject
        info.rawSubject = Array(subject.utf8)
        info.issuer = issuer
        info.rawIssuer = Array(issuer.utf8)
        info.serial = SerialNumber([serial])
        info.subjectKeyID = ski
        info.authorityKeyID = aki
        return info
    }

    private func sent(_ info: CertificateInfo) -> SentCertificate {
        SentCertificate(info: info, der: info.rawSubject + info.rawIssuer + [UInt8(info.serial.bytes[0])])
    }

    func testClientCAUpToTheBundledRoot() {
        let root = cert("Root", issuer: "Root", serial: 1, ski: [1])
        let intermediate = cert("Int", issuer: "Root", serial: 2, ski: [2], aki: [1])
        let leaf = cert("Leaf", issuer: "Int", serial: 3, aki: [2])
        let path = ChainPath.walk(leaf: leaf, sent: [sent(leaf), sent(intermediate)], bundle: [root.rawSubject: root])
        XCTAssertTrue(path.anchored)
        XCTAssertEqual(path.links.map(\.serial), [SerialNumber([3]), SerialNumber([2])], "the leaf and the intermediate")
        XCTAssertEqual(path.caFromClient.map(\.info.subject), ["Int"])
    }

    func testCrossSignedTwinThatLeadsNowhereIsSkipped() {
        let rootQ = cert("Q", issuer: "Q", serial: 9)
        let byP = cert("X", issuer: "P", serial: 5, ski: [7])
        let byQ = cert("X", issuer: "Q", serial: 6, ski: [7])
        let leaf = cert("Leaf", issuer: "X", serial: 3, aki: [7])
        let path = ChainPath.walk(leaf: leaf, sent: [sent(leaf), sent(byP), sent(byQ)], bundle: [rootQ.rawSubject: rootQ])
        XCTAssertTrue(path.anchored)
        XCTAssertEqual(path.caFromClient.map(\.info.serial), [SerialNumber([6])], "the twin signed by the trusted root")
        XCTAssertEqual(path.links.last?.issuer.name, Array("Q".utf8))
    }

    func testKeyIdentifierPicksAmongCAsOfOneName() {
        let root = cert("Root", issuer: "Root", serial: 1)
        let oldKey = cert("Int", issuer: "Root", serial: 2, ski: [0xaa])
        let newKey = cert("Int", issuer: "Root", serial: 4, ski: [0xbb])
        let leaf = cert("Leaf", issuer: "Int", serial: 3, aki: [0xbb])
        let path = ChainPath.walk(leaf: leaf, sent: [sent(leaf), sent(oldKey), sent(newKey)], bundle: [root.rawSubject: root])
        XCTAssertEqual(path.caFromClient.map(\.info.serial), [SerialNumber([4])])
    }

    func testABundledCAWhoseIssuerIsNotBundledIsTheAnchor() {
        let intermediate = cert("Int", issuer: "Root", serial: 2)
        let leaf = cert("Leaf", issuer: "Int", serial: 3)
        let path = ChainPath.walk(leaf: leaf, sent: [sent(leaf)], bundle: [intermediate.rawSubject: intermediate])
        XCTAssertTrue(path.anchored)
        XCTAssertEqual(path.links.map(\.serial), [SerialNumber([3])], "nothing checks the anchor's own revocation")
    }

    func testBundledIntermediatesAreWalkedUpToTheRoot() {
        let root = cert("Root", issuer: "Root", serial: 1)
        let intermediate = cert("Int", issuer: "Root", serial: 2)
        let leaf = cert("Leaf", issuer: "Int", serial: 3)
        let path = ChainPath.walk(leaf: leaf, sent: [sent(leaf)], bundle: [root.rawSubject: root, intermediate.rawSubject: intermediate])
        XCTAssertEqual(path.links.map(\.serial), [SerialNumber([3]), SerialNumber([2])], "the root's CRL may revoke the intermediate")
        XCTAssertTrue(path.caFromClient.isEmpty)
    }

    func testManyLookAlikesCannotMakeTheWalkExpensive() {
        let root = cert("Root", issuer: "Root", serial: 1)
        // 40 CAs named X, each issued by "X" too: every path loops or leads nowhere.
        let lookAlikes = (0..<40).map { cert("X", issuer: "X\($0 % 3)", serial: UInt8(10 + $0)) }
        let cycle = (0..<3).map { cert("X\($0)", issuer: "X", serial: UInt8(100 + $0)) }
        let leaf = cert("Leaf", issuer: "X", serial: 3)
        let path = ChainPath.walk(leaf: leaf, sent: [sent(leaf)] + (lookAlikes + cycle).map(sent), bundle: [root.rawSubject: root])
        XCTAssertFalse(path.anchored)
        XCTAssertLessThanOrEqual(path.links.count, 16)
    }
}
