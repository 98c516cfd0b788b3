/// `ocsp` for one verified client: asks the responder about the certificates that
/// `ocsp` names (the answer cache first, one request per certificate for the whole
/// process), and says whether the connection may go on. What the answers mean under
/// `ocsp_policy` is OCSPPolicy's; the connection only learns the decision.
enum RevocationGate {
    /// The decision, and until when the answers it rests on hold (wall-clock seconds;
    /// nil when no answer was used): with revoke_active, the connection is asked about
    /// again then.
    typealias Decided = (OCSPPolicy.Decision, _ until: Int?) -> Void

    /// Largest OCSP response read (a response with a few responder certificates is a
    /// few KiB).
    static let maxResponseBytes = 256 * 1024

    /// Checks `links` (the verified chain, leaf first) of the client whose certificates
    /// are `peer`. `decided` runs once, on `loop`.
    static func ask(links: [ChainLink], peer: PeerChain, trust: TrustState, listener: ListenerRuntime, loop: EventLoop,
                    decided: @escaping Decided) {
        let config = listener.config.revocation
        let targets = config.ocsp == .leaf ? Array(links.prefix(1)) : links
        guard !targets.isEmpty else { return decided(.pass(note: "nothing to ask (the client certificate is a trust anchor)"), nil) }
        let collector = Collector(count: targets.count, policy: config.ocspPolicy, decided: decided)
        let now = wallClockSeconds()
        var pairs: [(subject: [UInt8], issuer: [UInt8])]?
        for (index, key) in targets.enumerated() {
            let bound = LoopBound { (outcome: OCSPCache.Outcome) in
                collector.set(index, serial: key.serial.description, outcome: outcome, cached: false,
                              until: Self.until(outcome, now: wallClockSeconds(), config: config))
            }
            let waiter: OCSPCache.Waiter = { outcome in loop.execute { bound.value(outcome) } }
            switch OCSPCache.shared.lookup(key, now: now, waiter: waiter) {
            case .cached(let answer, let until):
                listener.metrics.ocsp.cacheHits.increment()
                collector.set(index, serial: key.serial.description, outcome: .success(answer), cached: true, until: until)
            case .joined:
                break
            case .fetch:
                if pairs == nil { pairs = certificatePairs(peer: peer, trust: trust) }
                fetch(key, pair: index < pairs!.count ? pairs![index] : nil, listener: listener, loop: loop)
            }
        }
    }

    /// Asks the responder about one certificate and completes the cache entry (which
    /// hands the outcome to every waiter).
    private static func fetch(_ key: ChainLink, pair: (subject: [UInt8], issuer: [UInt8])?, listener: ListenerRuntime, loop: EventLoop) {
        let config = listener.config.revocation
        let maxAge = Int(config.ocspMaxAgeNanos / 1_000_000_000)
        func complete(_ outcome: OCSPCache.Outcome) {
            OCSPCache.shared.complete(key, outcome: outcome, now: wallClockSeconds(), maxAgeSeconds: maxAge)
        }
        guard let pair else { return complete(.failure(.unavailable("the issuer certificate of serial \(key.serial) is not at hand"))) }
        let url = config.ocspResponder ?? OCSPMessage.responderURLs(certificate: pair.subject).lazy.compactMap(HTTPURL.init).first
        guard let url else {
            return complete(.failure(.unavailable("no responder: the certificate names no http:// OCSP responder and ocsp_responder is unset")))
        }
        guard let body = OCSPMessage.request(certificate: pair.subject, issuer: pair.issuer) else {
            return complete(.failure(.malformed("cannot build an OCSP request for serial \(key.serial)")))
        }
        listener.metrics.ocsp.requests.increment()
        let started = monotonicNanos()
        HTTPExchange.start(on: loop, url: url, request: HTTPClientRequest.post(url, contentType: "application/ocsp-request", body: body),
                           timeoutNanos: config.ocspTimeoutNanos, maxBody: maxResponseBytes) { result in
            let outcome: OCSPCache.Outcome
            switch result {
            case .failure(let failure):
                outcome = .failure(failure)
            case .success(let response) where response.status != 200:
                outcome = .failure(.unavailable("\(url): HTTP \(response.status)"))
            case .success(let response):
                outcome = OCSPMessage.verify(response: response.body, certificate: pair.subject, issuer: pair.issuer,
                                             now: wallClockSeconds())
            }
            listener.metrics.ocsp.record(outcome, seconds: Double(monotonicNanos() - started) / 1e9)
            OCSPResponderHealth.shared.record(url.description, outcome: outcome, at: wallClockSeconds())
            switch outcome {
            case .success(let answer):
                listener.logger.debug("OCSP answer", metadata: [
                    "responder": "\(url)", "serial": "\(key.serial)", "status": "\(answer.status.rawValue)",
                    "next_update": "\(answer.nextUpdate.map(Timestamp.iso8601) ?? "none")",
                ])
            case .failure(let failure):
                listener.logger.warning("OCSP answer unusable", metadata: [
                    "responder": "\(url)", "serial": "\(key.serial)", "detail": "\(failure)",
                ])
            }
            complete(outcome)
        }
    }

    /// Until when an outcome may be relied on (failures: not at all).
    private static func until(_ outcome: OCSPCache.Outcome, now: Int, config: RevocationConfig) -> Int? {
        guard case .success(let answer) = outcome else { return nil }
        return OCSPCache.expiry(of: answer, now: now, maxAgeSeconds: Int(config.ocspMaxAgeNanos / 1_000_000_000))
    }

    /// Each certificate of the verified path with its issuer, as DER, in the order of
    /// the path's links: the issuer from the CA bundle where it is there, else the next
    /// CA the client sent on that path (as ChainPath walks it).
    static func certificatePairs(peer: PeerChain, trust: TrustState) -> [(subject: [UInt8], issuer: [UInt8])] {
        let sent = peer.certificates
        guard let leaf = sent.first else { return [] }
        let path = ChainPath.walk(leaf: leaf.info, sent: sent, trust: trust)
        var pairs: [(subject: [UInt8], issuer: [UInt8])] = []
        var current = leaf
        var fromClient = path.caFromClient[...]
        for _ in path.links {
            let next: SentCertificate
            if let info = trust.caBySubject[current.info.rawIssuer], let der = trust.caDERBySubject[current.info.rawIssuer] {
                next = SentCertificate(info: info, der: der)
            } else if let client = fromClient.popFirst() {
                next = client
            } else {
                break
            }
            pairs.append((current.der, next.der))
            current = next
        }
        return pairs
    }

    /// Gathers the outcomes of one connection's certificates (on its loop) and decides
    /// once all are in.
    private final class Collector {
        private var checked: [OCSPPolicy.Checked?]
        private var remaining: Int
        private var until: Int?
        private let policy: CRLPolicy
        private var decided: Decided?

        init(count: Int, policy: CRLPolicy, decided: @escaping Decided) {
            checked = Array(repeating: nil, count: count)
            remaining = count
            self.policy = policy
            self.decided = decided
        }

        func set(_ index: Int, serial: String, outcome: OCSPCache.Outcome, cached: Bool, until answerUntil: Int?) {
            guard checked[index] == nil else { return }
            checked[index] = OCSPPolicy.Checked(serial: serial, outcome: outcome, cached: cached)
            if let answerUntil { until = min(until ?? answerUntil, answerUntil) }
            remaining -= 1
            guard remaining == 0, let decided else { return }
            self.decided = nil
            decided(OCSPPolicy.decide(checked.map { $0! }, policy: policy), until)
        }
    }
}
