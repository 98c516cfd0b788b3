import CGnuTLSShim
import XCTest

@testable import MTLSProxy

final class VerificationPolicyTests: XCTestCase {
    private let root: [UInt8] = [1]
    private let intermediate: [UInt8] = [2]
    private let now = 1_800_000_000

    private func crl(_ issuer: [UInt8], revoked: [[UInt8]] = [], nextUpdate: Int?) -> CRLInfo {
        CRLInfo(issuer: "CN=\(issuer)", issuerKey: IssuerKey(name: issuer), revoked: Set(revoked.map(SerialNumber.init)), thisUpdate: now - 100,
                nextUpdate: nextUpdate, number: nil, file: "test.crl")
    }

    /// alice (serial 0x10) issued by the intermediate (serial 0x20) issued by the root.
    private var chain: [ChainLink] {
        [ChainLink(issuer: IssuerKey(name: intermediate), serial: SerialNumber([0x10])),
         ChainLink(issuer: IssuerKey(name: root), serial: SerialNumber([0x20]))]
    }

    private func decide(status: UInt32 = 0, crls: [CRLInfo], policy: CRLPolicy? = .strict) -> RefusalReason? {
        var set = CRLSet()
        for crl in crls { set.byIssuer[crl.issuerKey] = crl }
        return VerificationPolicy.decide(chainStatus: status, chain: chain, crls: set, policy: policy, now: now)
    }

    func testCleanChainWithCurrentCRLsIsAccepted() {
        XCTAssertNil(decide(crls: [crl(root, nextUpdate: now + 60), crl(intermediate, nextUpdate: now + 60)]))
    }

    func testRevokedLeafOrIntermediate() {
        XCTAssertEqual(decide(crls: [crl(root, nextUpdate: now + 60), crl(intermediate, revoked: [[0x10]], nextUpdate: now + 60)]), .revoked)
        XCTAssertEqual(decide(crls: [crl(root, revoked: [[0x20]], nextUpdate: now + 60), crl(intermediate, nextUpdate: now + 60)]), .revoked,
                       "a revoked intermediate revokes everything below it")
    }

    func testStrictNeedsACurrentCRLForEveryIssuer() {
        XCTAssertEqual(decide(crls: [crl(root, nextUpdate: now + 60)]), .crlMissing)
        XCTAssertEqual(decide(crls: [crl(root, nextUpdate: now + 60), crl(intermediate, nextUpdate: now - 1)]), .crlExpired)
        XCTAssertNil(decide(crls: [crl(root, nextUpdate: nil), crl(intermediate, nextUpdate: nil)]), "no nextUpdate never goes stale")
    }

    func testBestEffortChecksOnlyWhereACRLExists() {
        XCTAssertNil(decide(crls: [], policy: .bestEffort))
        XCTAssertNil(decide(crls: [crl(intermediate, nextUpdate: now - 1)], policy: .bestEffort))
        XCTAssertEqual(decide(crls: [crl(intermediate, revoked: [[0x10]], nextUpdate: now - 1)], policy: .bestEffort), .revoked,
                       "a stale CRL still revokes what it lists")
    }

    func testNoPolicyMeansNoRevocationCheck() {
        XCTAssertNil(decide(crls: [crl(intermediate, revoked: [[0x10]], nextUpdate: now + 60)], policy: nil))
    }

    func testUnknownCAWinsOverEverythingElse() {
        let status = GNUTLS_CERT_INVALID.rawValue | GNUTLS_CERT_SIGNER_NOT_FOUND.rawValue | GNUTLS_CERT_EXPIRED.rawValue
        XCTAssertEqual(decide(status: status, crls: [crl(intermediate, revoked: [[0x10]], nextUpdate: now + 60)]), .unknownCA)
    }

    func testRevokedWinsOverExpired() {
        let status = GNUTLS_CERT_INVALID.rawValue | GNUTLS_CERT_EXPIRED.rawValue
        XCTAssertEqual(decide(status: status, crls: [crl(root, nextUpdate: now + 60), crl(intermediate, revoked: [[0x10]], nextUpdate: now + 60)]), .revoked)
    }

    func testStatusBitsMapToReasons() {
        let invalid = GNUTLS_CERT_INVALID.rawValue
        XCTAssertNil(VerificationPolicy.refusal(forChainStatus: 0))
        XCTAssertEqual(VerificationPolicy.refusal(forChainStatus: invalid | GNUTLS_CERT_EXPIRED.rawValue), .expired)
        XCTAssertEqual(VerificationPolicy.refusal(forChainStatus: invalid | GNUTLS_CERT_NOT_ACTIVATED.rawValue), .notYetValid)
        XCTAssertEqual(VerificationPolicy.refusal(forChainStatus: invalid | GNUTLS_CERT_PURPOSE_MISMATCH.rawValue), .wrongPurpose)
        XCTAssertEqual(VerificationPolicy.refusal(forChainStatus: invalid | GNUTLS_CERT_SIGNATURE_FAILURE.rawValue), .badCertificate)
    }

    func testAlertsNameTheReason() {
        XCTAssertEqual(RefusalReason.noCertificate.alert(tls13: true), 116)
        XCTAssertEqual(RefusalReason.noCertificate.alert(tls13: false), 40)
        XCTAssertEqual(RefusalReason.unknownCA.alert(tls13: true), 48)
        XCTAssertEqual(RefusalReason.revoked.alert(tls13: true), 44)
        XCTAssertEqual(RefusalReason.expired.alert(tls13: true), 45)
        XCTAssertEqual(RefusalReason.wrongPurpose.alert(tls13: true), 42)
        XCTAssertEqual(RefusalReason.crlExpired.alert(tls13: true), 46)
    }

    func testKeyIdentifiersTellApartCAsOfTheSameName() {
        // Two intermediates named alike (a key rollover): the old key's CRL revokes 0x10,
        // the new key's CRL does not. A certificate from the new key is not revoked.
        var old = crl(intermediate, revoked: [[0x10]], nextUpdate: now + 60)
        old.issuerKey.keyID = [0xAA]
        old.number = [9]
        var new = crl(intermediate, nextUpdate: now + 60)
        new.issuerKey.keyID = [0xBB]
        new.number = [1]
        var set = CRLSet()
        set.byIssuer[old.issuerKey] = old
        set.byIssuer[new.issuerKey] = new
        XCTAssertEqual(set.crl(for: IssuerKey(name: intermediate, keyID: [0xBB]))?.issuerKey.keyID, [0xBB])
        XCTAssertEqual(set.crl(for: IssuerKey(name: intermediate, keyID: [0xAA]))?.revoked.count, 1)
        XCTAssertEqual(set.crl(for: IssuerKey(name: intermediate))?.issuerKey.keyID, [0xAA],
                       "a certificate without a key identifier gets the newest CRL of its issuer's name")
        XCTAssertNil(set.crl(for: IssuerKey(name: intermediate, keyID: [0xCC])), "an unknown key has no CRL")
        var plain = crl(root, nextUpdate: now + 60)
        plain.issuerKey.keyID = []
        set.byIssuer[plain.issuerKey] = plain
        XCTAssertNotNil(set.crl(for: IssuerKey(name: root, keyID: [0x01])), "a CRL without a key identifier covers its name")
    }

    func testNewerCRLSupersedes() {
        var older = crl(root, nextUpdate: now + 60)
        var newer = older
        older.number = [0x05]
        newer.number = [0x01, 0x00]
        XCTAssertTrue(newer.supersedes(older))
        XCTAssertFalse(older.supersedes(newer))
        older.number = nil
        newer.number = nil
        newer.thisUpdate = older.thisUpdate + 1
        XCTAssertTrue(newer.supersedes(older))
    }
}
