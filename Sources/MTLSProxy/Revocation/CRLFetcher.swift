import CGnuTLSShim
import Glibc
import Logging
import Synchronization

/// crl_fetch: downloads the CRLs that distribution points name, into `crl_dir`, on a
/// thread of its own (a download may take up to its timeout; the reload thread and the
/// event loops never wait for it). The usual folder watching then loads them, so a
/// downloaded CRL is verified, counted and used exactly like one put there by hand, and
/// a restart finds it.
///
/// Where the URLs come from: the CAs of `ca_bundle` (a CA's distribution point names
/// its issuer's CRL), read again after every reload, and the certificates on the
/// verified path of the client chains seen (a client certificate's names its issuing
/// CA's CRL); never a certificate that did not verify (see `note`). Each URL is fetched with
/// If-None-Match / If-Modified-Since, within 10 s and 64 MiB, and written only when its
/// CRL parses and is signed by the CA that its issuer name and key identifier point to:
/// a failed or forged download keeps the file already there. The next fetch comes after
/// half the time left to the CRL's nextUpdate, at least 5 s and at most 1 h later (1 h
/// without a nextUpdate); a failure is retried after 5 s, doubling up to 5 min.
final class CRLFetcher: @unchecked Sendable {  // `sources` under the lock; the thread owns the rest
    static let shared = CRLFetcher()

    static let timeoutNanos: UInt64 = 10_000_000_000
    static let maxBytes = 64 << 20
    static let minIntervalSeconds = 5
    static let maxIntervalSeconds = 3600
    static let maxBackoffSeconds = 300
    static let maxSources = 1000
    /// A source no client chain named for this long (and that no bundle CA names) goes.
    static let unusedSeconds = 7 * 86400
    static let renoteSeconds = 3600
    /// How long the first client of an issuer whose CRL is being fetched for the first
    /// time may wait for it (the download itself goes on up to its own timeout).
    static let firstWaitNanos: UInt64 = 5_000_000_000

    struct Source {
        var url: HTTPURL
        /// The CRL's expected issuer (the raw issuer name of the certificate that named it).
        var issuer: [UInt8]
        var listener: ListenerRuntime
        var file: String
        var nextFetch = 0
        var backoff = 0
        var etag: String?
        var lastModified: String?
        /// The first download has ended (either way): nobody waits on it any more.
        var attempted = false
        /// When the first download ended (monotonic).
        var firstEnded: UInt64 = 0
        var lastError: String?
        /// A CA of the bundle names it (kept as long as it does).
        var fromBundle = false
        /// When a verified client chain last named it (wall clock).
        var lastUsed = 0
    }

    private let sources = Mutex<[String: Source]>([:])
    private let seenChains = Mutex<[[UInt8]: Int]>([:])
    private var listeners: [ListenerRuntime] = []
    private var generations: [ObjectIdentifier: UInt64] = [:]
    private var wakeFD: Int32 = -1
    private let started = Atomic<Bool>(false)

    /// Starts the thread for the listeners that have crl_fetch (none: nothing runs).
    func start(_ all: [ListenerRuntime]) {
        listeners = all.filter { $0.config.revocation.crlFetch && $0.config.crlDir != nil }
        guard !listeners.isEmpty, !started.exchange(true, ordering: .relaxed) else { return }
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        for listener in listeners { noteBundle(listener) }
        Threads.spawn { [self] in run() }
    }

    // MARK: - What to fetch

    /// A client chain that reached a trust anchor: the distribution points of the
    /// certificates on that path (`path`, DER), and of nothing else the client sent (an
    /// unverified certificate could name any URL: the proxy would fetch it, and record
    /// a stranger as the issuer expected there). Each chain is read once an hour (which
    /// also tells the sources it names that they are still in use).
    func note(chain: PeerChain, path: [[UInt8]], listener: ListenerRuntime) {
        guard listener.config.revocation.crlFetch, listener.config.crlDir != nil, !path.isEmpty else { return }
        let now = wallClockSeconds()
        let fresh = seenChains.withLock { seen -> Bool in
            if let last = seen[chain.cacheKey], now - last < Self.renoteSeconds { return false }
            if seen.count >= 10_000 { seen.removeAll() }
            seen[chain.cacheKey] = now
            return true
        }
        guard fresh else { return }
        var added = false
        for der in path {
            guard let info = X509List.withCertificate(der: der, CertificateInfo.init) else { continue }
            for url in DistributionPoints.urls(certificate: der) {
                added = add(url, issuer: info.rawIssuer, listener: listener, now: now) || added
            }
        }
        if added { wake() }
    }

    /// Whether a CRL of one of `issuers` is being fetched for the first time: then the
    /// client may wait for it rather than be refused at once.
    func firstFetchPending(issuers: [[UInt8]], listener: ListenerRuntime) -> Bool {
        sources.withLock { sources in
            sources.values.contains { $0.listener === listener && !$0.attempted && issuers.contains($0.issuer) }
        }
    }

    /// Whether every first download for these issuers ended at least `settle`
    /// nanoseconds ago (time for the folder watch to load what it wrote).
    func firstFetchesDone(issuers: [[UInt8]], listener: ListenerRuntime, for settle: UInt64) -> Bool {
        let now = monotonicNanos()
        return sources.withLock { sources in
            !sources.values.contains { source in
                source.listener === listener && issuers.contains(source.issuer)
                    && (!source.attempted || now < source.firstEnded + settle)
            }
        }
    }

    private func noteBundle(_ listener: ListenerRuntime) {
        let trust = listener.trust
        generations[ObjectIdentifier(listener)] = trust.generation
        var named: Set<String> = []
        for der in trust.caDERBySubject.values {
            guard let info = X509List.withCertificate(der: der, CertificateInfo.init), !info.isSelfIssued else { continue }
            for url in DistributionPoints.urls(certificate: der) {
                add(url, issuer: info.rawIssuer, listener: listener, now: wallClockSeconds(), fromBundle: true)
                if let parsed = HTTPURL(url) { named.insert(Self.key(listener, parsed, issuer: info.rawIssuer)) }
            }
        }
        // A CA that left the bundle no longer keeps its source.
        sources.withLock { sources in
            for (key, source) in sources where source.listener === listener && source.fromBundle && !named.contains(key) {
                sources[key]?.fromBundle = false
            }
        }
    }

    private static func key(_ listener: ListenerRuntime, _ url: HTTPURL, issuer: [UInt8]) -> String {
        listener.name + " " + url.description + " " + issuer.map { String($0, radix: 16) }.joined(separator: ".")
    }

    /// Sources are keyed by URL and expected issuer: two CAs naming one URL are two
    /// sources (each download must be its own issuer's CRL). When full, the source
    /// unused the longest gives way.
    @discardableResult
    private func add(_ text: String, issuer: [UInt8], listener: ListenerRuntime, now: Int, fromBundle: Bool = false) -> Bool {
        guard let url = HTTPURL(text), let dir = listener.config.crlDir else { return false }
        let key = Self.key(listener, url, issuer: issuer)
        return sources.withLock { sources in
            if sources[key] != nil {
                sources[key]!.lastUsed = now
                if fromBundle { sources[key]!.fromBundle = true }
                return false
            }
            Self.prune(&sources, now: now)
            if sources.count >= Self.maxSources {
                guard let oldest = sources.filter({ !$0.value.fromBundle }).min(by: { $0.value.lastUsed < $1.value.lastUsed }) else {
                    return false
                }
                sources[oldest.key] = nil
            }
            var source = Source(url: url, issuer: issuer, listener: listener, file: dir + "/" + Self.fileName(for: url, issuer: issuer))
            source.fromBundle = fromBundle
            source.lastUsed = now
            sources[key] = source
            return true
        }
    }

    /// Drops the sources neither the bundle nor any client chain named for a week.
    private static func prune(_ sources: inout [String: Source], now: Int) {
        for (key, source) in sources where !source.fromBundle && now - source.lastUsed > unusedSeconds { sources[key] = nil }
    }

    /// `fetched-HOST-PATH-HASH.crl`: its own name, stable across restarts, never hidden
    /// (the folder scan skips hidden files), unlike any a CA tool would write. The hash
    /// covers the URL and the expected issuer.
    static func fileName(for url: HTTPURL, issuer: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array(url.description.utf8) + [0] + issuer { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let readable = String((url.host + url.path).map { $0.isLetter || $0.isNumber ? $0 : "_" }.prefix(60))
        return "fetched-\(readable)-\(String(hash, radix: 16)).crl"
    }

    private func wake() {
        guard wakeFD >= 0 else { return }
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    // MARK: - The thread

    private func run() {
        while true {
            for listener in listeners where generations[ObjectIdentifier(listener)] != listener.trust.generation {
                noteBundle(listener)
            }
            let now = wallClockSeconds()
            let due = sources.withLock { sources in
                Self.prune(&sources, now: now)
                return sources.filter { $0.value.nextFetch <= now }.map(\.key)
            }
            for key in due { fetch(key) }
            let next = sources.withLock { $0.values.map(\.nextFetch).min() } ?? Int.max
            // At least once a second: a reload may have brought CAs with new URLs.
            let waitMillis: Int32 = next <= wallClockSeconds() ? 0 : 1000
            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            if poll(&fds, 1, waitMillis) > 0 {
                var counter: UInt64 = 0
                _ = read(wakeFD, &counter, 8)
            }
        }
    }

    private func fetch(_ key: String) {
        guard var source = sources.withLock({ $0[key] }) else { return }
        var headers: [(String, String)] = []
        if let etag = source.etag { headers.append(("If-None-Match", etag)) }
        if let modified = source.lastModified { headers.append(("If-Modified-Since", modified)) }
        let logger = source.listener.logger
        let now = wallClockSeconds()
        switch BlockingHTTP.get(source.url, headers: headers, timeoutNanos: Self.timeoutNanos, maxBody: Self.maxBytes) {
        case .success(let reply) where reply.status == 304:
            source.nextFetch = now + Self.interval(nextUpdate: currentNextUpdate(source), now: now)
            source.backoff = 0
        case .success(let reply) where reply.status == 200:
            switch accept(reply.body, source: source) {
            case .success(let nextUpdate):
                if store(reply.body, to: source.file) {
                    source.etag = reply.header("etag")
                    source.lastModified = reply.header("last-modified")
                    source.nextFetch = now + Self.interval(nextUpdate: nextUpdate, now: now)
                    source.backoff = 0
                    source.lastError = nil
                    logger.info("CRL fetched", metadata: ["url": "\(source.url)", "detail": "written to \(source.file)"])
                } else {
                    fail(&source, "cannot write \(source.file): \(String(cString: strerror(errno)))", now: now)
                }
            case .failure(let why):
                fail(&source, "\(why)", now: now)
            }
        case .success(let reply):
            fail(&source, "HTTP \(reply.status)", now: now)
        case .failure(let failure):
            fail(&source, "\(failure)", now: now)
        }
        if !source.attempted { source.firstEnded = monotonicNanos() }
        source.attempted = true
        sources.withLock { sources in
            // Noted meanwhile (lastUsed, fromBundle) or pruned: what the fetch did not decide stays.
            guard let current = sources[key] else { return }
            source.lastUsed = current.lastUsed
            source.fromBundle = current.fromBundle
            sources[key] = source
        }
    }

    private func fail(_ source: inout Source, _ why: String, now: Int) {
        source.backoff = source.backoff == 0 ? Self.minIntervalSeconds : min(source.backoff * 2, Self.maxBackoffSeconds)
        source.nextFetch = now + source.backoff
        source.lastError = why
        source.listener.logger.warning("CRL download failed, keeping what crl_dir holds", metadata: [
            "url": "\(source.url)", "detail": "\(why); next try in \(source.backoff)s",
        ])
    }

    /// Half the time left to nextUpdate, within [5 s, 1 h]; 1 h without one. A CRL
    /// already past its nextUpdate is asked for again after the shortest interval.
    static func interval(nextUpdate: Int?, now: Int) -> Int {
        guard let nextUpdate else { return maxIntervalSeconds }
        return min(maxIntervalSeconds, max(minIntervalSeconds, (nextUpdate - now) / 2))
    }

    private func currentNextUpdate(_ source: Source) -> Int? {
        source.listener.trust.crl(for: IssuerKey(name: source.issuer))?.nextUpdate
    }

    /// The download must hold exactly CRLs that parse, of the expected issuer, signed by
    /// a CA this listener trusts (the bundle's, or one a verified client chain brought),
    /// none older than the CRL of its issuer loaded now (the same or a newer one only).
    private func accept(_ bytes: [UInt8], source: Source) -> Result<Int?, OCSPFailure> {
        let documents = CRLFile.documents(in: bytes)
        guard !documents.isEmpty else { return .failure(.malformed("not a CRL")) }
        let trust = source.listener.trust
        var candidates: [[UInt8]] = []
        if let bundled = trust.caDERBySubject[source.issuer] { candidates.append(bundled) }
        candidates += trust.clientIssuers.registry.all.map(\.der)
        var nextUpdate: Int?
        for result in documents {
            guard case .success(let crl) = result else { return .failure(.malformed("a CRL in it does not parse")) }
            guard crl.issuerName == source.issuer else { return .failure(.malformed("a CRL of another issuer")) }
            if let unsupported = crl.unsupported { return .failure(.malformed(unsupported)) }
            let signed = candidates.contains { der in
                X509List.withCertificate(der: der) { cert -> Bool in
                    let info = CertificateInfo(cert)
                    guard info.rawSubject == crl.issuerName else { return false }
                    if let keyID = crl.authorityKeyID, !info.subjectKeyID.isEmpty, keyID != info.subjectKeyID { return false }
                    return CRLSignature.verify(crl, signer: cert) == .valid
                } ?? false
            }
            guard signed else { return .failure(.malformed("not signed by the trusted CA it names")) }
            // An older CRL, even a validly signed one still within its dates, would undo
            // the revocations of the newer one loaded (someone on the path replaying it).
            let downloaded = CRLInfo(crl, file: source.file)
            if let loaded = trust.crl(for: downloaded.issuerKey), loaded.issuerKey.name == crl.issuerName,
               loaded.supersedes(downloaded) {
                return .failure(.malformed("older than the one loaded (\(Self.describe(downloaded)) against \(Self.describe(loaded)))"))
            }
            nextUpdate = crl.nextUpdate.map { min($0, nextUpdate ?? $0) } ?? nextUpdate
        }
        return .success(nextUpdate)
    }

    private static func describe(_ crl: CRLInfo) -> String {
        if let number = crl.number { return "number " + SerialNumber(number).description }
        return "thisUpdate " + Timestamp.iso8601(crl.thisUpdate)
    }

    /// Atomically: a temporary hidden name (the folder scan skips it), then a rename.
    private func store(_ bytes: [UInt8], to path: String) -> Bool {
        let hidden = FilePath.parent(of: path) + "/." + FilePath.lastComponent(of: path) + ".tmp"
        return FileBytes.writeAtomically(bytes, to: path, through: hidden)
    }
}
