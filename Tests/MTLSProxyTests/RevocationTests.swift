import CGnuTLSShim
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

    func testChunkedTrailersAreBounded() {
        // The body ends, then trailer lines that never end: over the header limit, the
        // answer is invalid (it was "incomplete" for ever before).
        let line = "x-pad: " + String(repeating: "a", count: 1000) + "\r\n"
        let flood = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + String(repeating: line, count: 20)
        guard case .invalid(let why) = parse(flood) else { return XCTFail("endless trailers accepted as incomplete") }
        XCTAssertTrue(why.contains("trailers"), why)
        // One endless trailer line, without a CRLF, too.
        let long = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: " + String(repeating: "a", count: 20_000)
        if case .invalid = parse(long) {} else { XCTFail("an endless trailer line") }
        // A few trailers are fine.
        XCTAssertEqual(body(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + line + "\r\n")), "a")
    }

    func testFedByteByByteSaysWhatTheWholeSays() {
        let texts = [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        ]
        for text in texts {
            let whole = parse(text)
            var reader = HTTPReplyReader(maxBody: 1024)
            var last = HTTPReplyParser.Outcome.incomplete
            for byte in text.utf8 { last = reader.feed([byte], closed: false) }
            XCTAssertEqual(last, whole, text)
            // A verdict never changes once reached.
            XCTAssertEqual(reader.feed(Array("more".utf8), closed: true), whole)
        }
    }

    func testAllTheBytesReceivedAreBounded() {
        // Tiny chunks: framing many times the body. The reader stops at rawLimit.
        var reader = HTTPReplyReader(maxBody: 1024)
        var outcome = reader.feed(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8), closed: false)
        var sent = 0
        while outcome == .incomplete && sent < 10 * reader.rawLimit {
            let piece = Array(("1;" + String(repeating: "e", count: 50) + "\r\nx\r\n").utf8)
            outcome = reader.feed(piece, closed: false)
            sent += piece.count
        }
        guard case .invalid = outcome else { return XCTFail("never stopped: \(outcome)") }
        XCTAssertLessThanOrEqual(sent, reader.rawLimit + 64)
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
        guard case .fetch = cache.lookup(key, now: 1000, maxAgeSeconds: 3600, waiter: waiter) else { return XCTFail("the first asks") }
        for _ in 0..<5 {
            guard case .joined = cache.lookup(key, now: 1000, maxAgeSeconds: 3600, waiter: waiter) else { return XCTFail("the others wait") }
        }
        guard case .fetch = cache.lookup(other, now: 1000, maxAgeSeconds: 3600, waiter: { _ in }) else { return XCTFail("another certificate asks") }
        let answer = OCSPAnswer(status: .good, thisUpdate: 900, nextUpdate: 5000)
        cache.complete(key, outcome: .success(answer), now: 1000)
        XCTAssertEqual(seen.outcomes.count, 6)
        guard case .cached(let cached, let until) = cache.lookup(key, now: 1001, maxAgeSeconds: 3600, waiter: waiter) else { return XCTFail("cached") }
        XCTAssertEqual(cached, answer)
        XCTAssertEqual(until, 4600)  // max age wins over a later nextUpdate
        XCTAssertEqual(seen.outcomes.count, 6)
    }

    func testAnswersExpireAtNextUpdateOrMaxAge() {
        XCTAssertEqual(OCSPCache.expiry(of: OCSPAnswer(status: .good, thisUpdate: 0, nextUpdate: 1500), now: 1000, maxAgeSeconds: 3600), 1500)
        XCTAssertEqual(OCSPCache.expiry(of: OCSPAnswer(status: .good, thisUpdate: 990, nextUpdate: nil), now: 1000, maxAgeSeconds: 60), 1060)
        // Without nextUpdate, ocsp_max_age counts from thisUpdate (plus the skew) too.
        XCTAssertEqual(OCSPCache.expiry(of: OCSPAnswer(status: .good, thisUpdate: 0, nextUpdate: nil), now: 1000, maxAgeSeconds: 60),
                       60 + OCSPMessage.skewSeconds)
        let cache = OCSPCache()
        _ = cache.lookup(key, now: 1000, maxAgeSeconds: 3600, waiter: { _ in })
        cache.complete(key, outcome: .success(OCSPAnswer(status: .revoked, thisUpdate: 0, nextUpdate: 1500)), now: 1000)
        guard case .cached = cache.lookup(key, now: 1499, maxAgeSeconds: 3600, waiter: { _ in }) else { return XCTFail("fresh until nextUpdate") }
        guard case .fetch = cache.lookup(key, now: 1500, maxAgeSeconds: 3600, waiter: { _ in }) else { return XCTFail("asks again at nextUpdate") }
    }

    func testEachListenerJudgesAnAnswerByItsOwnMaxAge() {
        // One process, two listeners: ocsp_max_age 60 s and 1 h. The answer fetched for
        // the first is still good for the second after a minute, not for the first.
        let cache = OCSPCache()
        _ = cache.lookup(key, now: 1000, maxAgeSeconds: 60, waiter: { _ in })
        cache.complete(key, outcome: .success(OCSPAnswer(status: .good, thisUpdate: 990, nextUpdate: 9000)), now: 1000)
        guard case .cached(_, let until) = cache.lookup(key, now: 1030, maxAgeSeconds: 60, waiter: { _ in }) else {
            return XCTFail("fresh for its own listener")
        }
        XCTAssertEqual(until, 1060)
        guard case .cached(_, let longer) = cache.lookup(key, now: 1100, maxAgeSeconds: 3600, waiter: { _ in }) else {
            return XCTFail("the 1 h listener still uses it after a minute")
        }
        XCTAssertEqual(longer, 4600)
        guard case .fetch = cache.lookup(key, now: 1100, maxAgeSeconds: 60, waiter: { _ in }) else {
            return XCTFail("the 60 s listener asks again after a minute")
        }
    }

    func testTwoCAsOfOneNameHaveDistinctCacheKeysWithoutAKI() {
        // A certificate without an authority key identifier is filed by its issuer's
        // public key: two CAs of one name (a key rollover) do not share answers.
        func der(_ ca: TestCA) -> [UInt8] {
            var out = gnutls_datum_t()
            gnutls_x509_crt_export2(ca.cert, GNUTLS_X509_FMT_DER, &out)
            return GnuTLS.takeBytes(&out)
        }
        let old = TestCA(name: "CN=Same Name CA"), new = TestCA(name: "CN=Same Name CA")
        let oldID = OCSPMessage.issuerKeyID(der(old)), newID = OCSPMessage.issuerKeyID(der(new))
        XCTAssertNotNil(oldID)
        XCTAssertEqual(oldID, OCSPMessage.issuerKeyID(der(old)))
        XCTAssertNotEqual(oldID, newID)
    }

    func testFailuresAreNotKept() {
        let cache = OCSPCache()
        _ = cache.lookup(key, now: 1000, maxAgeSeconds: 3600, waiter: { _ in })
        cache.complete(key, outcome: .failure(.unavailable("down")), now: 1000)
        guard case .fetch = cache.lookup(key, now: 1000, maxAgeSeconds: 3600, waiter: { _ in }) else { return XCTFail("the next client asks again") }
    }

    func testTheCacheIsBounded() {
        let cache = OCSPCache(capacity: 10)
        for serial in 0..<25 as Range<UInt8> {
            let link = ChainLink(issuer: IssuerKey(name: [9]), serial: SerialNumber([serial + 1]))
            _ = cache.lookup(link, now: 1000, maxAgeSeconds: 60, waiter: { _ in })
            cache.complete(link, outcome: .success(OCSPAnswer(status: .good, thisUpdate: 990, nextUpdate: nil)), now: 1000)
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
        let a = CRLFetcher.fileName(for: HTTPURL("http://crl.example.com/ca/int.crl")!, issuer: [1, 2])
        XCTAssertEqual(a, CRLFetcher.fileName(for: HTTPURL("http://crl.example.com/ca/int.crl")!, issuer: [1, 2]))
        XCTAssertTrue(a.hasPrefix("fetched-crl_example_com_ca_int_crl-") && a.hasSuffix(".crl"), a)
        XCTAssertFalse(a.contains("/"))
        // Names that read alike still differ (the hash of the whole URL).
        XCTAssertNotEqual(CRLFetcher.fileName(for: HTTPURL("http://x/a.b")!, issuer: [1]),
                          CRLFetcher.fileName(for: HTTPURL("http://x/a_b")!, issuer: [1]))
        // One URL named by two issuers: two sources, two files.
        XCTAssertNotEqual(CRLFetcher.fileName(for: HTTPURL("http://x/a")!, issuer: [1]),
                          CRLFetcher.fileName(for: HTTPURL("http://x/a")!, issuer: [2]))
    }
}

final class HostResolverTests: XCTestCase {
    func testOnlyRealNumericAddressesSkipTheLookupThread() {
        XCTAssertNotNil(HostResolver.literal(.inet(host: "127.0.0.1", port: 80)))
        XCTAssertNotNil(HostResolver.literal(.inet6(host: "::1", port: 80)))
        // Digits and dots, but no address: getaddrinfo would send a DNS query for it,
        // which must not happen on an event loop.
        XCTAssertNil(HostResolver.literal(.inet(host: "999.1.1.1", port: 80)))
        XCTAssertNil(HostResolver.literal(.inet(host: "1.2.3", port: 80)))
        XCTAssertNil(HostResolver.literal(.inet6(host: "1:2:3:4:5:6:7:8:9", port: 80)), "a malformed IPv6 literal")
        XCTAssertNil(HostResolver.literal(.inet(host: "ocsp.example.com", port: 80)))
        XCTAssertEqual(HostResolver.literal(.inet(host: "10.1.2.3", port: 8080))?.description,
                       HostResolver.shared.resolveBlocking(.inet(host: "10.1.2.3", port: 8080))?.description)
    }

    func testLookupsAreMergedPerNameAndBounded() {
        var lookups = PendingLookups<Int>(limit: 2)
        XCTAssertEqual(lookups.join("a", 1), .first)
        XCTAssertEqual(lookups.join("a", 2), .joined, "a second client of one name joins the lookup under way")
        XCTAssertEqual(lookups.join("b", 3), .first)
        XCTAssertEqual(lookups.join("c", 4), .full, "no third thread")
        XCTAssertEqual(lookups.join("b", 5), .joined, "joining needs no thread")
        XCTAssertEqual(lookups.finish("a"), [1, 2])
        XCTAssertEqual(lookups.join("c", 6), .first)
        XCTAssertEqual(lookups.count, 2)
    }
}

final class OCSPResponderHealthTests: XCTestCase {
    func testEachListenerSeesItsOwnResponders() {
        let health = OCSPResponderHealth()
        let good = Result<OCSPAnswer, OCSPFailure>.success(OCSPAnswer(status: .good, thisUpdate: 0, nextUpdate: nil))
        health.record("http://a/", listener: "one", outcome: good, at: 10)
        health.record("http://b/", listener: "two", outcome: .failure(.unavailable("down")), at: 11)
        XCTAssertEqual(Array(health.snapshot(listener: "one").keys), ["http://a/"])
        XCTAssertEqual(health.snapshot(listener: "two")["http://b/"]?.answered, false)
        XCTAssertTrue(health.snapshot(listener: "three").isEmpty)
    }
}
