import XCTest

@testable import MTLSProxy

/// The pure parts of the revocation services: the HTTP response reader, URLs, the answer
/// cache (expiry, one request in flight, bounds), the policy decisions, the config keys.
final class HTTPReplyParserTests: XCTestCase {
    private func parse(_ text: String, closed: Bool = false, maxBody: Int = 1024) -> HTTPReplyParser.Outcome {
        HTTPReplyParser.parse(Array(text.utf8), closed: closed, maxBody: maxBody)
    }

    private func body(_ outcome: HTTPReplyParser.Outcome) -> String? {
        guard case .complete(let reply) = outcome else { return nil }
        return String(decoding: reply.body, as: UTF8.self)
    }

    func testContentLengthFramesTheBody() {
        XCTAssertEqual(body(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")), "hello")
        XCTAssertEqual(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"), .incomplete)
        // Bytes after the body are not part of it.
        XCTAssertEqual(body(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello")), "he")
    }

    func testHeadersAreCaseInsensitiveAndTrimmed() {
        guard case .complete(let reply) = parse("HTTP/1.0 404 Not Found\r\nCONTENT-length:  0 \r\nETag: \"x\"\r\n\r\n") else {
            return XCTFail("not complete")
        }
        XCTAssertEqual(reply.status, 404)
        XCTAssertEqual(reply.header("etag"), "\"x\"")
    }

    func testIncompleteHeadIsIncompleteUntilTheClose() {
        XCTAssertEqual(parse("HTTP/1.1 200 OK\r\nContent-"), .incomplete)
        if case .invalid = parse("HTTP/1.1 200 OK\r\nContent-", closed: true) {} else { XCTFail("a close mid-header is invalid") }
        if case .invalid = parse("", closed: true) {} else { XCTFail("a close without an answer is invalid") }
    }

    func testBodyFramedByTheClose() {
        XCTAssertEqual(parse("HTTP/1.1 200 OK\r\n\r\nabc"), .incomplete)
        XCTAssertEqual(body(parse("HTTP/1.1 200 OK\r\n\r\nabc", closed: true)), "abc")
    }

    func testChunkedBody() {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n"
        XCTAssertEqual(body(parse(text)), "abcde")
        XCTAssertEqual(parse(String(text.dropLast(2))), .incomplete)
        if case .invalid = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n") {} else { XCTFail("bad size") }
        if case .invalid = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n") {} else { XCTFail("no CRLF") }
    }

    func testLimitsAndMalformedInput() {
        if case .invalid = parse("HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n") {} else { XCTFail("over the body limit") }
        if case .invalid = parse("HTTP/1.1 200 OK\r\n\r\n" + String(repeating: "a", count: 2000), closed: true) {} else {
            XCTFail("close-framed body over the limit")
        }
        if case .invalid = parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab") {} else {
            XCTFail("conflicting lengths")
        }
        if case .invalid = parse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n") {} else { XCTFail("negative length") }
        if case .invalid = parse("SSH-2.0-OpenSSH\r\n\r\n") {} else { XCTFail("not HTTP") }
        if case .invalid = parse("HTTP/1.1 200 OK\r\nno colon\r\n\r\n") {} else { XCTFail("bad header") }
        if case .invalid = parse(String(repeating: "x", count: HTTPReplyParser.maxHeaderBytes + 1)) {} else {
            XCTFail("endless header")
        }
    }

    func testNoBodyStatuses() {
        XCTAssertEqual(body(parse("HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n")), "")
    }
}

final class HTTPURLTests: XCTestCase {
    func testParts() {
        let url = HTTPURL("http://127.0.0.1:8888/ocsp?x=1#frag")!
        XCTAssertEqual(url.host, "127.0.0.1")
        XCTAssertEqual(url.port, 8888)
        XCTAssertEqual(url.path, "/ocsp?x=1")
        XCTAssertEqual(url.hostHeader, "127.0.0.1:8888")
        XCTAssertEqual(HTTPURL("HTTP://ocsp.example.com")!.path, "/")
        XCTAssertEqual(HTTPURL("http://ocsp.example.com")!.port, 80)
        XCTAssertEqual(HTTPURL("http://ocsp.example.com")!.hostHeader, "ocsp.example.com")
        let v6 = HTTPURL("http://[::1]:81/a")!
        XCTAssertEqual(v6.host, "::1")
        XCTAssertEqual(v6.hostHeader, "[::1]:81")
        XCTAssertEqual(v6.endpoint, .inet6(host: "::1", port: 81))
    }

    func testRefused() {
        for text in ["https://x/", "ldap://x/", "http://", "http:///a", "http://u@x/", "http://x:0/", "http://x:99999/",
                     "http://x y/", "http://[::1/", "http://x/a b",
                     // Found by the http-reply fuzz target: a host with a stray bracket and colons.
                     "http://Z::1]:8080/", "http://a:b:80/", "http://[zz]/", "http://x]/"] {
            XCTAssertNil(HTTPURL(text), text)
        }
    }

    func testRequestBytes() {
        let url = HTTPURL("http://127.0.0.1:81/r")!
        let post = String(decoding: HTTPClientRequest.post(url, contentType: "application/ocsp-request", body: [1, 2]), as: UTF8.self)
        XCTAssertTrue(post.hasPrefix("POST /r HTTP/1.1\r\nHost: 127.0.0.1:81\r\n"))
        XCTAssertTrue(post.contains("Content-Length: 2\r\n"))
        XCTAssertTrue(post.hasSuffix("\r\n\r\n\u{1}\u{2}"))
    }
}

final class OCSPCacheTests: XCTestCase {
    private let key = ChainLink(issuer: IssuerKey(name: [1, 2, 3]), serial: SerialNumber([0x42]))
    private let other = ChainLink(issuer: IssuerKey(name: [1, 2, 3]), serial: SerialNumber([0x43]))

    private final class Seen: @unchecked Sendable {
        var outcomes: [OCSPCache.Outcome] = []
    }

    func testOneRequestInFlightPerCertificateAndEveryWaiterIsTold() {
        let cache = OCSPCache()
        let seen = Seen()
        let waiter: OCSPCache.Waiter = { seen.outcomes.append($0) }
        guard case .fetch = cache.lookup(key, now: 1000, waiter: waiter) else { return XCTFail("the first asks") }
        for _ in 0..<5 {
            guard case .joined = cache.lookup(key, now: 1000, waiter: waiter) else { return XCTFail("the others wait") }
        }
        guard case .fetch = cache.lookup(other, now: 1000, waiter: { _ in }) else { return XCTFail("another certificate asks") }
        let answer = OCSPAnswer(status: .good, thisUpdate: 900, nextUpdate: 5000)
        cache.complete(key, outcome: .success(answer), now: 1000, maxAgeSeconds: 3600)
        XCTAssertEqual(seen.outcomes.count, 6)
        guard case .cached(let cached, let until) = cache.lookup(key, now: 1001, waiter: waiter) else { return XCTFail("cached") }
        XCTAssertEqual(cached, answer)
        XCTAssertEqual(until, 4600)  // max age wins over a later nextUpdate
        XCTAssertEqual(seen.outcomes.count, 6)
    }

    func testAnswersExpireAtNextUpdateOrMaxAge() {
        XCTAssertEqual(OCSPCache.expiry(of: OCSPAnswer(status: .good, thisUpdate: 0, nextUpdate: 1500), now: 1000, maxAgeSeconds: 3600), 1500)
        XCTAssertEqual(OCSPCache.expiry(of: OCSPAnswer(status: .good, thisUpdate: 0, nextUpdate: nil), now: 1000, maxAgeSeconds: 60), 1060)
        let cache = OCSPCache()
        _ = cache.lookup(key, now: 1000, waiter: { _ in })
        cache.complete(key, outcome: .success(OCSPAnswer(status: .revoked, thisUpdate: 0, nextUpdate: 1500)), now: 1000, maxAgeSeconds: 3600)
        guard case .cached = cache.lookup(key, now: 1499, waiter: { _ in }) else { return XCTFail("fresh until nextUpdate") }
        guard case .fetch = cache.lookup(key, now: 1500, waiter: { _ in }) else { return XCTFail("asks again at nextUpdate") }
    }

    func testFailuresAreNotKept() {
        let cache = OCSPCache()
        _ = cache.lookup(key, now: 1000, waiter: { _ in })
        cache.complete(key, outcome: .failure(.unavailable("down")), now: 1000, maxAgeSeconds: 3600)
        guard case .fetch = cache.lookup(key, now: 1000, waiter: { _ in }) else { return XCTFail("the next client asks again") }
    }

    func testTheCacheIsBounded() {
        let cache = OCSPCache(capacity: 10)
        for serial in 0..<25 as Range<UInt8> {
            let link = ChainLink(issuer: IssuerKey(name: [9]), serial: SerialNumber([serial + 1]))
            _ = cache.lookup(link, now: 1000, waiter: { _ in })
            cache.complete(link, outcome: .success(OCSPAnswer(status: .good, thisUpdate: 0, nextUpdate: nil)), now: 1000, maxAgeSeconds: 60)
            XCTAssertLessThanOrEqual(cache.count, 10)
        }
    }
}

final class OCSPPolicyTests: XCTestCase {
    private func checked(_ outcome: Result<OCSPAnswer, OCSPFailure>, cached: Bool = false) -> OCSPPolicy.Checked {
        OCSPPolicy.Checked(serial: "0a", outcome: outcome, cached: cached)
    }

    private let good = Result<OCSPAnswer, OCSPFailure>.success(OCSPAnswer(status: .good, thisUpdate: 0, nextUpdate: nil))
    private let revoked = Result<OCSPAnswer, OCSPFailure>.success(OCSPAnswer(status: .revoked, thisUpdate: 0, nextUpdate: nil))
    private let unknown = Result<OCSPAnswer, OCSPFailure>.success(OCSPAnswer(status: .unknown, thisUpdate: 0, nextUpdate: nil))
    private let down = Result<OCSPAnswer, OCSPFailure>.failure(.unavailable("down"))

    private func reason(_ decision: OCSPPolicy.Decision) -> RefusalReason? {
        if case .refuse(let reason, _) = decision { return reason }
        return nil
    }

    func testStrict() {
        XCTAssertEqual(OCSPPolicy.decide([checked(good)], policy: .strict), .pass(note: "good"))
        XCTAssertEqual(OCSPPolicy.decide([checked(good, cached: true)], policy: .strict), .pass(note: "good (cached)"))
        XCTAssertEqual(reason(OCSPPolicy.decide([checked(revoked)], policy: .strict)), .revoked)
        XCTAssertEqual(reason(OCSPPolicy.decide([checked(unknown)], policy: .strict)), .ocspUnknown)
        XCTAssertEqual(reason(OCSPPolicy.decide([checked(down)], policy: .strict)), .ocspUnavailable)
        for failure in [OCSPFailure.malformed("x"), .badSignature("x"), .stale("x"), .wrongCertificate("x"), .responderError("x")] {
            XCTAssertEqual(reason(OCSPPolicy.decide([checked(.failure(failure))], policy: .strict)), .ocspUnavailable)
        }
    }

    func testBestEffortRefusesOnlyRevoked() {
        XCTAssertEqual(reason(OCSPPolicy.decide([checked(revoked)], policy: .bestEffort)), .revoked)
        XCTAssertNil(reason(OCSPPolicy.decide([checked(unknown)], policy: .bestEffort)))
        guard case .pass(let note) = OCSPPolicy.decide([checked(down)], policy: .bestEffort) else { return XCTFail("passes") }
        XCTAssertTrue(note.hasPrefix("ocsp_unavailable, allowed (best-effort)"), note)
    }

    func testRevokedAnywhereInTheChainWins() {
        // An unreachable responder for the leaf does not hide a revoked intermediate.
        XCTAssertEqual(reason(OCSPPolicy.decide([checked(down), checked(good), checked(revoked)], policy: .strict)), .revoked)
        XCTAssertEqual(reason(OCSPPolicy.decide([checked(good), checked(unknown)], policy: .strict)), .ocspUnknown)
    }

    func testRefusalAlerts() {
        XCTAssertEqual(RefusalReason.ocspUnavailable.alert(tls13: true), RefusalReason.crlMissing.alert(tls13: true))
        XCTAssertEqual(RefusalReason.ocspUnknown.alert(tls13: false), RefusalReason.crlExpired.alert(tls13: false))
    }
}

final class RevocationConfigTests: XCTestCase {
    private let base = """
        [ldaps]
        listen = 127.0.0.1:636
        backend = 127.0.0.1:389
        cert = /etc/p/server.pem
        key = /etc/p/server.key
        ca_bundle = /etc/p/ca.pem

        """

    func testDefaults() throws {
        let config = try ConfigParser.parse(text: base, path: nil).listeners[0].revocation
        XCTAssertEqual(config.ocsp, .off)
        XCTAssertNil(config.ocspResponder)
        XCTAssertEqual(config.ocspPolicy, .strict)
        XCTAssertEqual(config.ocspTimeoutNanos, 2_000_000_000)
        XCTAssertEqual(config.ocspMaxAgeNanos, 3_600_000_000_000)
        XCTAssertFalse(config.crlFetch)
    }

    func testKeys() throws {
        let text = base + "ocsp = chain\nocsp_responder = http://127.0.0.1:8080/ocsp\nocsp_policy = best-effort\n"
            + "ocsp_timeout = 500ms\nocsp_max_age = 10m\n"
        let config = try ConfigParser.parse(text: text, path: nil).listeners[0].revocation
        XCTAssertEqual(config.ocsp, .chain)
        XCTAssertEqual(config.ocspResponder?.description, "http://127.0.0.1:8080/ocsp")
        XCTAssertEqual(config.ocspPolicy, .bestEffort)
        XCTAssertEqual(config.ocspTimeoutNanos, 500_000_000)
        XCTAssertEqual(config.ocspMaxAgeNanos, 600_000_000_000)
    }

    func testBadValuesNameTheLine() {
        for (line, expected) in [("ocsp = yes", "ocsp must be one of off|leaf|chain"), ("ocsp_responder = https://x/", "http://"),
                                 ("ocsp_timeout = 0s", "more than 0"), ("ocsp_policy = lax", "strict|best-effort")] {
            XCTAssertThrowsError(try ConfigParser.parse(text: base + line + "\n", path: "/p.conf")) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains("/p.conf:7") && text.contains(expected), text)
            }
        }
        XCTAssertThrowsError(try ConfigParser.parse(text: "ocsp = leaf\n" + base, path: "/p.conf")) { error in
            XCTAssertTrue("\(error)".contains("listener key"), "\(error)")
        }
    }
}

final class CRLFetcherScheduleTests: XCTestCase {
    func testRefetchAtHalfTheTimeLeftWithinBounds() {
        XCTAssertEqual(CRLFetcher.interval(nextUpdate: 1000 + 600, now: 1000), 300)
        XCTAssertEqual(CRLFetcher.interval(nextUpdate: 1000 + 4, now: 1000), 5)  // at least 5 s
        XCTAssertEqual(CRLFetcher.interval(nextUpdate: 1000 - 60, now: 1000), 5)  // already stale: soon
        XCTAssertEqual(CRLFetcher.interval(nextUpdate: 1000 + 7 * 86400, now: 1000), 3600)  // at most 1 h
        XCTAssertEqual(CRLFetcher.interval(nextUpdate: nil, now: 1000), 3600)
    }

    func testFileNamesAreStableVisibleAndDistinct() {
        let a = CRLFetcher.fileName(for: HTTPURL("http://crl.example.com/ca/int.crl")!)
        XCTAssertEqual(a, CRLFetcher.fileName(for: HTTPURL("http://crl.example.com/ca/int.crl")!))
        XCTAssertTrue(a.hasPrefix("fetched-crl_example_com_ca_int_crl-") && a.hasSuffix(".crl"), a)
        XCTAssertFalse(a.contains("/"))
        // Names that read alike still differ (the hash of the whole URL).
        XCTAssertNotEqual(CRLFetcher.fileName(for: HTTPURL("http://x/a.b")!), CRLFetcher.fileName(for: HTTPURL("http://x/a_b")!))
    }
}
