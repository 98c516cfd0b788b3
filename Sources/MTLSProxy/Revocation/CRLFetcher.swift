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
/// its issuer's CRL), read again after every reload, and the client chains seen (a
/// client certificate's names its issuing CA's CRL). Each URL is fetched with
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
    }

    private let sources = Mutex<[String: Source]>([:])
    private let seenChains = Mutex<Set<[UInt8]>>([])
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

    /// A client chain verified (or refused for want of a CRL): the distribution points
    /// of its certificates. Each chain is read once.
    func note(chain: PeerChain, listener: ListenerRuntime) {
        guard listener.config.revocation.crlFetch, listener.config.crlDir != nil else { return }
        let fresh = seenChains.withLock { seen -> Bool in
            if seen.count >= 10_000 { seen.removeAll() }
            return seen.insert(chain.cacheKey).inserted
        }
        guard fresh else { return }
        var added = false
        for cert in chain.certificates {
            for url in DistributionPoints.urls(certificate: cert.der) {
                added = add(url, issuer: cert.info.rawIssuer, listener: listener) || added
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
        for (subject, der) in trust.caDERBySubject {
            _ = subject
            guard let info = X509List.withCertificate(der: der, CertificateInfo.init), !info.isSelfIssued else { continue }
            for url in DistributionPoints.urls(certificate: der) { _ = add(url, issuer: info.rawIssuer, listener: listener) }
        }
    }

    @discardableResult
    private func add(_ text: String, issuer: [UInt8], listener: ListenerRuntime) -> Bool {
        guard let url = HTTPURL(text), let dir = listener.config.crlDir else { return false }
        let key = listener.name + " " + url.description
        return sources.withLock { sources in
            guard sources[key] == nil, sources.count < 1000 else { return false }
            sources[key] = Source(url: url, issuer: issuer, listener: listener, file: dir + "/" + Self.fileName(for: url))
            return true
        }
    }

    /// `fetched-HOST-PATH-HASH.crl`: its own name, stable across restarts, never hidden
    /// (the folder scan skips hidden files), unlike any a CA tool would write.
    static func fileName(for url: HTTPURL) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in url.description.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
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
            let due = sources.withLock { $0.filter { $0.value.nextFetch <= now }.map(\.key) }
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
        sources.withLock { $0[key] = source }
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
    /// a CA this listener trusts (the bundle's, or one a verified client chain brought).
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
            nextUpdate = crl.nextUpdate.map { min($0, nextUpdate ?? $0) } ?? nextUpdate
        }
        return .success(nextUpdate)
    }

    /// Atomically: a temporary hidden name (the folder scan skips it), then a rename.
    private func store(_ bytes: [UInt8], to path: String) -> Bool {
        let slash = path.lastIndex(of: "/")!
        let temporary = String(path[...slash]) + "." + String(path[path.index(after: slash)...]) + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { close(fd); unlink(temporary); return false }
            offset += n
        }
        guard fsync(fd) == 0, close(fd) == 0, rename(temporary, path) == 0 else { unlink(temporary); return false }
        return true
    }
}
