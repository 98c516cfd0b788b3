import CGnuTLSShim
import XCTest

@testable import MTLSProxy

final class HandshakeFailureTests: XCTestCase {
    private func isEmpty(_ bytes: [UInt8], tls13: Bool = false) -> Bool {
        bytes.withUnsafeBytes { HandshakeFailure.isEmptyCertificateList($0, tls13: tls13) }
    }

    func testOnlyAWellFormedEmptyListIsNoCertificate() {
        XCTAssertTrue(isEmpty([0, 0, 0]))
        XCTAssertFalse(isEmpty([]))  // no body: malformed
        XCTAssertFalse(isEmpty([0, 0]))
        XCTAssertFalse(isEmpty([0, 0, 0, 0]))
        XCTAssertFalse(isEmpty([0, 0, 5, 0, 0, 2, 1, 2]))
        XCTAssertTrue(isEmpty([0, 0, 0, 0], tls13: true))  // empty context, empty list
        XCTAssertTrue(isEmpty([2, 9, 9, 0, 0, 0], tls13: true))
        XCTAssertFalse(isEmpty([0, 0, 0], tls13: true))
        XCTAssertFalse(isEmpty([], tls13: true))
    }

    func testNoCertificateFoundNeedsTheEmptyList() {
        XCTAssertEqual(HandshakeFailure.classify(GNUTLS_E_NO_CERTIFICATE_FOUND, sentEmptyCertificateList: true), .noCertificate)
        XCTAssertEqual(HandshakeFailure.classify(GNUTLS_E_NO_CERTIFICATE_FOUND, sentEmptyCertificateList: false), .protocolError)
        XCTAssertEqual(HandshakeFailure.classify(GNUTLS_E_CERTIFICATE_REQUIRED, sentEmptyCertificateList: false), .noCertificate)
    }

    func testOtherErrors() {
        XCTAssertEqual(HandshakeFailure.classify(GNUTLS_E_PREMATURE_TERMINATION, sentEmptyCertificateList: false), .clientGone)
        XCTAssertEqual(HandshakeFailure.classify(GNUTLS_E_FATAL_ALERT_RECEIVED, sentEmptyCertificateList: false), .clientGone)
        XCTAssertEqual(HandshakeFailure.classify(GNUTLS_E_UNEXPECTED_PACKET_LENGTH, sentEmptyCertificateList: false), .protocolError)
        // The mapping the proxy sends for protocol errors, as gnutls-serv does.
        var level: Int32 = 0
        XCTAssertEqual(gnutls_error_to_alert(GNUTLS_E_UNEXPECTED_PACKET_LENGTH, &level), Int32(GNUTLS_A_DECODE_ERROR.rawValue))
        XCTAssertEqual(level, Int32(GNUTLS_AL_FATAL.rawValue))
    }
}
