import XCTest

@testable import MTLSProxy

/// The relay of a message-aware listener, in memory with random short reads, writes and
/// would-blocks: the proxy's bind goes first and its response never reaches the client,
/// no request goes on before it, forwarded requests carry the proxied identity, and the
/// proxy's own answers arrive whole between the backend's messages.
final class MessageRelayTests: XCTestCase {
    private let pool = BufferPool()
    private let alice = "uid=alice,ou=people,dc=example,dc=com"

    private func requests(_ mode: ClientAuth = .saslExternal, preface: [UInt8] = [], maxRequestSize: Int = 1 << 20) -> ClientRequests {
        ClientRequests(login: ClientLogin(mode: mode, entryDN: alice), maxRequestSize: maxRequestSize,
                       bindDN: "cn=proxy,dc=example,dc=com", bindPassword: Array("pw".utf8), preface: preface)
    }

    /// Drives the relay until it is no longer open (a stop, a failure) or `rounds` pass.
    private func pumpAll(_ relay: Relay<MemoryStream, MemoryStream>, rounds: Int, between: () -> Void = {})
        -> Relay<MemoryStream, MemoryStream>.Outcome
    {
        drive(relay, rounds: rounds, between: between) { if case .open = $0 { return false } else { return true } }
    }

    func testTheBindComesFirstItsAnswerIsTakenOutAndAnswersLandBetweenMessages() {
        for seed: UInt64 in 1...30 {
            var random = SeededRandom(seed: seed)
            let client = MemoryStream(random: SeededRandom(seed: seed &+ 100))
            let backend = MemoryStream(random: SeededRandom(seed: seed &+ 200))
            client.queuesLikeTLS = true
            client.writeBudget = [7, 500, .max].randomElement(using: &random)!
            backend.maxRead = [100, 3000, .max].randomElement(using: &random)!
            let forged: [(type: String, critical: Bool, value: [UInt8]?)] = [("2.16.840.1.113730.3.4.18", true, Array("dn:x".utf8))]
            let upScript = TestLDAP.search(2) + TestLDAP.saslBind(3) + TestLDAP.search(4) + TestLDAP.search(5, controls: forged)
                + TestLDAP.search(6)
            let backendMessages = [
                LDAPResponse.encode(id: 1, tag: 1, code: .success, diagnostic: ""),  // the proxy's bind
                TestLDAP.searchResult(2, size: Int.random(in: 10...150_000, using: &random)),
                TestLDAP.searchResult(4, size: Int.random(in: 10...150_000, using: &random)),
                TestLDAP.searchResult(6, size: 20),
            ]
            let downScript = backendMessages.reduce([], +)
            let relay = Relay(client: client, backend: backend, pool: pool, requests: requests(preface: Array("PROXY".utf8)))
            let outcome = pumpAll(relay, rounds: 20_000) {
                for (stream, script) in [(client, upScript), (backend, downScript)] {
                    let fed = stream.incoming.count
                    if fed < script.count && random.chance(0.5) {
                        stream.incoming += script[fed..<min(script.count, fed + Int.random(in: 1...7000, using: &random))]
                    }
                }
            }
            XCTAssertEqual(outcome, .open(moved: false), "seed \(seed)")
            // The backend: the preface, the proxy's bind, then the requests with their identities.
            XCTAssertEqual(Array(backend.received.prefix(5)), Array("PROXY".utf8), "seed \(seed)")
            guard let sent = TestLDAP.messages(in: Array(backend.received.dropFirst(5))) else { return XCTFail("seed \(seed): cut messages") }
            XCTAssertEqual(sent.first, LDAPMessages.bindRequest(id: 1, dn: "cn=proxy,dc=example,dc=com", password: Array("pw".utf8)))
            XCTAssertEqual(sent.dropFirst().map { try! LDAPRequest(decoding: $0).messageID }, [2, 4, 6], "seed \(seed)")
            XCTAssertEqual(sent.dropFirst().map { TestLDAP.proxiedAuthorization(of: $0) }, ["", "dn:" + alice, "dn:" + alice], "seed \(seed)")
            // The client: every backend message but the bind's answer, whole, and the proxy's two answers.
            guard let got = TestLDAP.messages(in: client.received) else { return XCTFail("seed \(seed): an answer inside a message") }
            let expectedFromBackend = backendMessages.dropFirst().flatMap { TestLDAP.messages(in: $0)! }
            XCTAssertEqual(got.filter { ![3, 5].contains(TestLDAP.result(of: $0).id) }, expectedFromBackend, "seed \(seed)")
            XCTAssertEqual(got.filter { [3, 5].contains(TestLDAP.result(of: $0).id) }.map { TestLDAP.result(of: $0).code }, [0, 53], "seed \(seed)")
            XCTAssertEqual(client.retryViolations, 0, "seed \(seed)")
            relay.release()
        }
    }

    func testNoRequestReachesTheBackendBeforeItAcceptsTheProxysBind() {
        let client = MemoryStream(), backend = MemoryStream()
        client.incoming = TestLDAP.search(2)
        let relay = Relay(client: client, backend: backend, pool: pool, requests: requests())
        _ = pumpAll(relay, rounds: 10)
        XCTAssertEqual(TestLDAP.messages(in: backend.received)?.count, 1, "only the proxy's bind")
        backend.incoming = LDAPResponse.encode(id: 1, tag: 1, code: .invalidCredentials, diagnostic: "")
        guard case .stop(let stop) = pumpAll(relay, rounds: 10) else { return XCTFail("no stop") }
        XCTAssertEqual(stop.reason, .backendBindFailed)
        XCTAssertEqual(TestLDAP.messages(in: backend.received)?.count, 1, "the search went on after a refused bind")
        XCTAssertEqual(client.received, [], "the bind's answer reached the client")
        relay.release()
    }

    func testARequestAboveTheLimitAndMalformedBytesStopTheConnection() {
        for (input, reason) in [(TestLDAP.searchResult(2, size: 3000), RefusalReason.requestTooLarge),
                                ([0x30, 0x03, 0x02, 0x01, 0x00] as [UInt8], .protocolError),
                                ([0x16, 0x03, 0x01, 0x00, 0x05] as [UInt8], .protocolError)] {
            let client = MemoryStream(), backend = MemoryStream()
            client.incoming = input
            let relay = Relay(client: client, backend: backend, pool: pool, requests: requests(.none, maxRequestSize: 1000))
            guard case .stop(let stop) = pumpAll(relay, rounds: 10) else { return XCTFail("no stop for \(reason)") }
            XCTAssertEqual(stop.reason, reason)
            XCTAssertEqual(TestLDAP.result(of: stop.notice).code, 2, "protocolError")
            XCTAssertEqual(backend.received, [], "a byte of a bad request reached the backend")
            relay.release()
        }
    }

    func testARebindTakesTheBackendsAnswerOutAndAnswersTheClientAfterIt() {
        let client = MemoryStream(), backend = MemoryStream()
        let relay = Relay(client: client, backend: backend, pool: pool, requests: requests())
        backend.incoming = LDAPResponse.encode(id: 1, tag: 1, code: .success, diagnostic: "")
        let ownBind = TestLDAP.simpleBind(2, name: "cn=admin,dc=example,dc=com", password: "secret")
        client.incoming = ownBind
        _ = pumpAll(relay, rounds: 10)
        let ownAnswer = LDAPResponse.encode(id: 2, tag: 1, code: .success, diagnostic: "")
        backend.incoming += ownAnswer
        _ = pumpAll(relay, rounds: 10)  // the client binds again once it has the answer
        client.incoming += TestLDAP.saslBind(3)
        _ = pumpAll(relay, rounds: 10)
        let sent = TestLDAP.messages(in: backend.received)!
        guard sent.count == 3 else { return XCTFail("\(sent.count) messages at the backend") }
        XCTAssertEqual(sent[1], ownBind, "the client's own bind passed on")
        XCTAssertEqual(sent[2], LDAPMessages.bindRequest(id: 3, dn: "cn=proxy,dc=example,dc=com", password: Array("pw".utf8)))
        XCTAssertEqual(client.received, ownAnswer, "answered before the backend took the proxy back")
        backend.incoming += LDAPResponse.encode(id: 3, tag: 1, code: .success, diagnostic: "")
        _ = pumpAll(relay, rounds: 10)
        XCTAssertEqual(TestLDAP.messages(in: client.received)?.map { TestLDAP.result(of: $0).id }, [2, 3])
        XCTAssertEqual(relay.requests?.login.runsAs, .entry)
        relay.release()
    }

    func testABindInTheMiddleOfAnotherBindIsAProtocolError() {
        let client = MemoryStream(), backend = MemoryStream()
        let relay = Relay(client: client, backend: backend, pool: pool, requests: requests())
        backend.incoming = LDAPResponse.encode(id: 1, tag: 1, code: .success, diagnostic: "")
        client.incoming = TestLDAP.saslBind(2, mechanism: "DIGEST-MD5")
        _ = pumpAll(relay, rounds: 5)
        // The backend asks for the next step; the client's next bind is then in order.
        backend.incoming += LDAPResponse.encode(id: 2, tag: 1, code: .success, diagnostic: "")
        _ = pumpAll(relay, rounds: 5)
        client.incoming += TestLDAP.saslBind(3, mechanism: "DIGEST-MD5")
        XCTAssertEqual(pumpAll(relay, rounds: 5), .open(moved: false))
        // Now a bind before the answer to that one.
        client.incoming += TestLDAP.saslBind(4)
        guard case .stop(let stop) = pumpAll(relay, rounds: 5) else { return XCTFail("no stop") }
        XCTAssertEqual(stop.reason, .protocolError)
        XCTAssertEqual(TestLDAP.messages(in: backend.received)?.map { try! LDAPRequest(decoding: $0).messageID }, [1, 2, 3])
        relay.release()
    }

    func testOnlyABindResponseAnswersTheProxysRebind() {
        // A client that reuses its bind's messageID for a search: that search's result
        // is not the answer to the proxy's bind, and goes on to the client.
        let client = MemoryStream(), backend = MemoryStream()
        let relay = Relay(client: client, backend: backend, pool: pool, requests: requests())
        backend.incoming = LDAPResponse.encode(id: 1, tag: 1, code: .success, diagnostic: "")
        client.incoming = TestLDAP.simpleBind(2, name: "cn=admin,dc=example,dc=com", password: "secret")
        _ = pumpAll(relay, rounds: 5)
        backend.incoming += LDAPResponse.encode(id: 2, tag: 1, code: .success, diagnostic: "")
        _ = pumpAll(relay, rounds: 5)
        client.incoming += TestLDAP.search(5) + TestLDAP.saslBind(5)
        _ = pumpAll(relay, rounds: 5)
        let searchDone = LDAPResponse.encode(id: 5, tag: 5, code: .success, diagnostic: "")
        backend.incoming += searchDone
        _ = pumpAll(relay, rounds: 5)
        XCTAssertEqual(TestLDAP.messages(in: client.received)?.last, searchDone, "the search's result was taken as the bind's")
        XCTAssertNotNil(relay.requests?.interceptedMessageID, "still waiting for the BindResponse")
        backend.incoming += LDAPResponse.encode(id: 5, tag: 1, code: .success, diagnostic: "")
        _ = pumpAll(relay, rounds: 5)
        XCTAssertNil(relay.requests?.interceptedMessageID)
        XCTAssertEqual(TestLDAP.messages(in: client.received)?.map { TestLDAP.result(of: $0).tag }, [1, 5, 1])
        relay.release()
    }
}
