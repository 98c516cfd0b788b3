import SwiftASN1
import XCTest

@testable import MTLSProxy

/// The certificate as the login: what becomes of each request (ClientLogin), and the
/// request decoding and re-encoding it relies on (LDAPRequest).
final class ClientLoginTests: XCTestCase {
    private let alice = "UID=alice,OU=people,DC=example,DC=com"
    private let forged: [(type: String, critical: Bool, value: [UInt8]?)] = [
        ("2.16.840.1.113730.3.4.18", true, Array("dn:uid=bob,ou=people,dc=example,dc=com".utf8))
    ]

    private func step(_ login: inout ClientLogin, _ message: [UInt8]) -> ClientLogin.Step {
        login.step(try! LDAPRequest(decoding: message), message: message)
    }

    private func forwardedAuthz(_ step: ClientLogin.Step) -> String? {
        guard case .forward(let bytes) = step else { return "(not forwarded: \(step))" }
        return TestLDAP.proxiedAuthorization(of: bytes)
    }

    private func answerCode(_ step: ClientLogin.Step) -> Int? {
        guard case .answer(let bytes) = step else { return nil }
        return TestLDAP.result(of: bytes).code
    }

    func testSASLExternalRunsAsAnonymousUntilTheBindThenAsTheEntry() {
        var login = ClientLogin(mode: .saslExternal, entryDN: alice)
        XCTAssertEqual(forwardedAuthz(step(&login, TestLDAP.search(1))), "", "before the bind: anonymous")
        XCTAssertEqual(answerCode(step(&login, TestLDAP.saslBind(2))), 0)
        XCTAssertEqual(forwardedAuthz(step(&login, TestLDAP.search(3))), "dn:" + alice)
        XCTAssertEqual(login.authzDescription, "dn:" + alice)
        XCTAssertEqual(answerCode(step(&login, TestLDAP.simpleBind(4, name: "", password: ""))), 0, "anonymous bind answered by the proxy")
        XCTAssertEqual(forwardedAuthz(step(&login, TestLDAP.search(5))), "")
    }

    func testExternalAuthzIdMustNameTheSameEntryComparedAsDNs() {
        var login = ClientLogin(mode: .saslExternal, entryDN: alice)
        XCTAssertEqual(answerCode(step(&login, TestLDAP.saslBind(1, credentials: "dn:uid=Alice, ou=People ,dc=EXAMPLE,dc=com"))), 0)
        XCTAssertEqual(login.runsAs, .entry)
        XCTAssertEqual(answerCode(step(&login, TestLDAP.saslBind(2, credentials: "dn:uid=bob,ou=people,dc=example,dc=com"))), 50)
        XCTAssertEqual(login.runsAs, .anonymous, "a failed bind leaves the connection anonymous")
        XCTAssertEqual(forwardedAuthz(step(&login, TestLDAP.search(3))), "")
        XCTAssertEqual(answerCode(step(&login, TestLDAP.saslBind(4, credentials: "u:alice"))), 50)
        XCTAssertEqual(answerCode(step(&login, TestLDAP.saslBind(5, credentials: "DN:uid=alice,ou=people,dc=example,dc=com"))), 0,
                       "the dn: prefix is case-insensitive")
    }

    func testAClientsOwnProxiedAuthorizationIsRefusedAndNeverForwarded() {
        for mode in [ClientAuth.saslExternal, .certificate] {
            var login = ClientLogin(mode: mode, entryDN: alice)
            XCTAssertEqual(answerCode(step(&login, TestLDAP.search(1, controls: forged))), 53, "\(mode)")
            let obsolete: [(type: String, critical: Bool, value: [UInt8]?)] = [("2.16.840.1.113730.3.4.12", false, Array("dn:x".utf8))]
            XCTAssertEqual(answerCode(step(&login, TestLDAP.search(2, controls: obsolete))), 53, "\(mode): the obsolete OID")
            XCTAssertEqual(step(&login, TestLDAP.abandon(3, controls: forged)), .drop, "\(mode): an abandon has no response")
        }
    }

    func testCertificateModeRunsAsTheEntryFromTheFirstRequestAndRefusesOtherBinds() {
        var login = ClientLogin(mode: .certificate, entryDN: alice)
        XCTAssertEqual(forwardedAuthz(step(&login, TestLDAP.search(1))), "dn:" + alice)
        XCTAssertEqual(answerCode(step(&login, TestLDAP.simpleBind(2, name: "cn=admin,dc=example,dc=com", password: "secret"))), 48)
        XCTAssertEqual(answerCode(step(&login, TestLDAP.saslBind(3, mechanism: "DIGEST-MD5"))), 48)
        XCTAssertTrue(login.backendIsProxy, "nothing was passed on")
    }

    func testANamedBindIsPassedOnAndTheNextExternalBindRebindsTheBackendFirst() {
        var login = ClientLogin(mode: .saslExternal, entryDN: alice)
        let bind = TestLDAP.simpleBind(1, name: "cn=admin,dc=example,dc=com", password: "secret")
        XCTAssertEqual(step(&login, bind), .forward(bind), "passed on unchanged")
        XCTAssertFalse(login.backendIsProxy)
        XCTAssertEqual(forwardedAuthz(step(&login, TestLDAP.search(2))), nil, "no control: the backend knows who this is")
        guard case .rebindThenAnswer(let id, let answer) = step(&login, TestLDAP.saslBind(3)) else { return XCTFail("no rebind") }
        XCTAssertEqual(id, 3, "the rebind uses the client's bind's messageID")
        XCTAssertEqual(TestLDAP.result(of: answer).code, 0)
    }

    func testStartTLSInsideTLSIsAnOperationsErrorInEveryMode() {
        for mode in ClientAuth.allCases {
            var login = ClientLogin(mode: mode, entryDN: alice)
            let code = answerCode(step(&login, TestLDAP.extended(1, name: LDAPRequest.startTLSName)))
            XCTAssertEqual(code, 1, "\(mode)")
        }
    }

    func testModeNoneForwardsRequestsUnchanged() {
        var login = ClientLogin(mode: .none, entryDN: "")
        let search = TestLDAP.search(1, controls: forged)
        XCTAssertEqual(step(&login, search), .forward(search))
    }

    func testUnbindAndAbandonCarryNoControl() {
        var login = ClientLogin(mode: .certificate, entryDN: alice)
        XCTAssertEqual(step(&login, TestLDAP.unbind(1)), .forward(TestLDAP.unbind(1)))
        XCTAssertEqual(step(&login, TestLDAP.abandon(2)), .forward(TestLDAP.abandon(2)))
    }

    // MARK: - Decoding

    func testTheRewriteKeepsTheOperationAndTheClientsControls() throws {
        let paged: [(type: String, critical: Bool, value: [UInt8]?)] = [("1.2.840.113556.1.4.319", false, [0x30, 0x05, 0x02, 0x01, 0x05, 0x04, 0x00])]
        let original = TestLDAP.search(7, controls: paged)
        let rewritten = try LDAPRequest(decoding: original).withProxiedAuthorization("dn:uid=x")
        let decoded = try LDAPRequest(decoding: rewritten)
        XCTAssertEqual(decoded.messageID, 7)
        XCTAssertEqual(decoded.operation, .search)
        XCTAssertEqual(decoded.controls.map(\.type), ["1.2.840.113556.1.4.319", "2.16.840.1.113730.3.4.18"])
        XCTAssertEqual(TestLDAP.proxiedAuthorization(of: rewritten), "dn:uid=x")
        // Without its controls, the rewritten message is the original one.
        let bare = try LDAPRequest(decoding: TestLDAP.search(7)).withProxiedAuthorization("")
        XCTAssertEqual(Array(bare[2..<(2 + TestLDAP.search(7).count - 2)]), Array(TestLDAP.search(7)[2...]))
    }

    /// The rewrite writes its DER by hand: it must be the bytes swift-asn1's serializer
    /// writes for the same envelope, long-form lengths (128+, 256+, 65,536+) included.
    func testTheRewriteIsTheDEREncodingOfTheEnvelope() throws {
        let control: (type: String, critical: Bool, value: [UInt8]?) = ("1.2.840.113556.1.4.319", false, [0x30, 0x05, 0x02, 0x01, 0x05, 0x04, 0x00])
        for clientControls in [0, 1, 4] {
            for authzLength in [0, 3, 90, 127, 128, 200, 255, 256, 70_000] {
                let original = TestLDAP.search(300, controls: Array(repeating: control, count: clientControls))
                let authzId = "dn:" + String(repeating: "x", count: authzLength)
                let rewritten = try LDAPRequest(decoding: original).withProxiedAuthorization(authzId)
                XCTAssertEqual(rewritten, try Self.serializerRewrite(original, authzId), "\(clientControls) controls, authzId of \(authzLength + 3)")
            }
        }
    }

    /// The envelope as swift-asn1 writes it: messageID and operation as they came, the
    /// client's controls, then the proxied authorization control.
    private static func serializerRewrite(_ message: [UInt8], _ authzId: String) throws -> [UInt8] {
        guard case .constructed(let parts) = try BER.parse(message).content else { throw DecodeFailure() }
        let nodes = Array(parts)
        var clientControls: [ArraySlice<UInt8>] = []
        if nodes.count == 3, case .constructed(let list) = nodes[2].content { clientControls = list.map(\.encodedBytes) }
        var serializer = DER.Serializer()
        try serializer.appendConstructedNode(identifier: .sequence) { envelope in
            envelope.serializeRawBytes(nodes[0].encodedBytes)
            envelope.serializeRawBytes(nodes[1].encodedBytes)
            try envelope.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) { list in
                for control in clientControls { list.serializeRawBytes(control) }
                try list.appendConstructedNode(identifier: .sequence) { control in
                    try control.serialize(ASN1OctetString(contentBytes: ArraySlice("2.16.840.1.113730.3.4.18".utf8)))
                    try control.serialize(true)
                    try control.serialize(ASN1OctetString(contentBytes: ArraySlice(authzId.utf8)))
                }
            }
        }
        return serializer.serializedBytes
    }

    private struct DecodeFailure: Error {}

    func testMalformedRequestsAreRefused() {
        let cases: [(String, [UInt8])] = [
            ("not a sequence", [0x04, 0x01, 0x00]),
            ("messageID 0", TestLDAP.message(0) { op in op.appendPrimitiveNode(identifier: TestLDAP.app(2)) { _ in } }),
            ("a response, not a request", LDAPResponse.encode(id: 1, tag: 1, code: .success, diagnostic: "")),
            ("no operation", [0x30, 0x03, 0x02, 0x01, 0x01]),
            ("truncated", Array(TestLDAP.search(1).dropLast())),
            ("bind without authentication", TestLDAP.message(1) { op in
                try op.appendConstructedNode(identifier: TestLDAP.app(0)) { bind in
                    try bind.serialize(3)
                    try bind.serialize(ASN1OctetString(contentBytes: []))
                }
            }),
        ]
        for (name, bytes) in cases {
            XCTAssertThrowsError(try LDAPRequest(decoding: bytes), name)
        }
    }

    func testEveryRequestIsCheckedAtEveryDepthAndForwardedAsCanonicalDER() throws {
        // Hidden elements slapd would read as controls or attribute lists.
        let trailing = TestLDAP.message(2) { op in
            try op.appendConstructedNode(identifier: TestLDAP.app(23)) { ext in
                ext.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) {
                    $0.append(contentsOf: LDAPRequest.whoAmIName.utf8)
                }
                ext.appendPrimitiveNode(identifier: ASN1Identifier(tagWithNumber: 1, tagClass: .contextSpecific)) { $0.append(1) }
                try ext.serialize(ASN1OctetString(contentBytes: [0x78]))
            }
        }
        XCTAssertThrowsError(try LDAPRequest(decoding: trailing), "an element after requestValue")
        let nulOID: [(type: String, critical: Bool, value: [UInt8]?)] = [("2.16.840.1.113730.3.4.18\u{0}", true, Array("dn:x".utf8))]
        XCTAssertThrowsError(try LDAPRequest(decoding: TestLDAP.search(3, controls: nulOID)), "a NUL in the controlType")
        let badFilter = TestLDAP.message(4) { op in
            try op.appendConstructedNode(identifier: TestLDAP.app(3)) { search in
                try search.serialize(ASN1OctetString(contentBytes: []))
                try 0.serialize(into: &search, withIdentifier: .enumerated)
                try 0.serialize(into: &search, withIdentifier: .enumerated)
                try search.serialize(0)
                try search.serialize(0)
                try search.serialize(false)
                try search.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 3, tagClass: .contextSpecific)) { ava in
                    for part in ["uid", "bob", "mail"] { try ava.serialize(ASN1OctetString(contentBytes: ArraySlice(part.utf8))) }
                }
                search.appendConstructedNode(identifier: .sequence) { _ in }
            }
        }
        XCTAssertThrowsError(try LDAPRequest(decoding: badFilter), "an AVA of three elements")

        // BER a client may write (long-form lengths) is accepted and goes on as DER.
        let der = TestLDAP.search(5)
        var ber: [UInt8] = [0x30, 0x82, 0x00, UInt8(der.count - 2)]  // the same message, its length in long form
        ber += der[2...]
        let request = try LDAPRequest(decoding: ber)
        XCTAssertEqual(request.reencoded(), der)
        XCTAssertEqual(Array(request.withProxiedAuthorization("dn:x").prefix(2)), [0x30, UInt8(der.count - 2 + 2 + 37)], "controls [0] around one 37-byte control")
    }

    func testDistinguishedNamesCompareAsDNs() {
        XCTAssertTrue(DistinguishedName.same("UID=alice,OU=people,DC=example,DC=com", "uid=Alice, ou=People,dc=example,dc=com"))
        XCTAssertTrue(DistinguishedName.same("0.9.2342.19200300.100.1.1=alice,ou=people", "uid=alice,ou=people"))
        XCTAssertTrue(DistinguishedName.same("cn=a\\,b,o=x", "cn=A\\2cB,o=x"))
        XCTAssertTrue(DistinguishedName.same("cn=a+sn=b,o=x", "sn=B+cn=A,o=x"))
        XCTAssertFalse(DistinguishedName.same("uid=alice,ou=people", "uid=alice2,ou=people"))
        XCTAssertFalse(DistinguishedName.same("uid=alice,ou=people", "uid=alice"))
        XCTAssertFalse(DistinguishedName.same("uid=alice,ou=people", "uid=alice;ou=other"))
        XCTAssertFalse(DistinguishedName.same("garbage", "garbage"), "not a DN at all")
        XCTAssertFalse(DistinguishedName.same("uid=alice\\,ou=people\\,dc=example\\,dc=com", "uid=alice,ou=people,dc=example,dc=com"),
                       "one RDN with escaped commas is not three RDNs")
        XCTAssertFalse(DistinguishedName.same("cn=a\\+sn=b,o=x", "cn=a+sn=b,o=x"), "an escaped plus is not a multi-valued RDN")
    }

    func testResponseHeadsFindTheMessageIDBeforeTheRestArrives() {
        let result = TestLDAP.searchResult(300, size: 1000)
        XCTAssertEqual(LDAPResponseHead.read(Array(result.prefix(2))), .incomplete)
        guard case .message(let id, let tag, let length) = LDAPResponseHead.read(Array(result.prefix(12))) else { return XCTFail() }
        XCTAssertEqual(id, 300)
        XCTAssertEqual(tag, 0x64, "SearchResultEntry")
        XCTAssertEqual(length, result.count - LDAPResponse.encode(id: 300, tag: 5, code: .success, diagnostic: "").count)
        XCTAssertEqual(LDAPResponseHead.read([0x31, 0x03, 0x02, 0x01, 0x01]), .notLDAP)
    }
}
