/// What a certificate needs for the directory check: its DER, and the values a
/// `cert_map_filter` template may use.
struct DirectoryLookup: Sendable {
    var certificate: [UInt8]
    var subject: String
    var cn: String
    var uid: String
    var email: String
    var serial: String

    /// The client's end-entity certificate: its DER, and the mapping values of its leaf
    /// (empty when the leaf does not import) next to those of the verified identity.
    init(chain: PeerChain, identity: PeerIdentity) {
        certificate = chain.der[0]
        subject = identity.subject
        cn = identity.commonName ?? ""
        serial = identity.serialHex
        let leaf = chain.leaf
        uid = leaf?.uid ?? ""
        email = leaf?.email ?? ""
    }

    /// Fills a cert_map_filter template; every value is escaped per RFC 4515 first, so a
    /// certificate can never add filter syntax.
    func filter(from template: String) -> String {
        var text = template
        for (name, value) in [("{subject}", subject), ("{cn}", cn), ("{uid}", uid), ("{email}", email), ("{serial}", serial)] {
            text = text.replacingAll(name, with: LDAPFilter.escape(value))
        }
        return text
    }
}

enum DirectoryVerdict: Equatable {
    /// The certificate maps to this entry (and, when checked, the entry holds it).
    case present(entryDN: String)
    case absent(String)
    case unavailable(String)
}

/// The directory check of one listener on one event loop: maps the certificate to an
/// entry (`cert_map`), asks the directory whether the entry holds exactly this
/// certificate (verify_cert_in_directory), and caches the answer for
/// `directory_cache_ttl`, negative answers too. Without the certificate check, the
/// mapping alone must find exactly one entry: that entry is the client's login.
final class DirectoryChecker {
    static let attributes = ["userCertificate;binary", "userCertificate"]

    private let config: ListenerConfig
    private let listener: ListenerRuntime
    private var connections: [DirectoryConnection] = []
    private var cache: [[UInt8]: (generation: UInt64, expires: UInt64, verdict: DirectoryVerdict)] = [:]

    init(listener: ListenerRuntime, loop: EventLoop) {
        self.listener = listener
        config = listener.config
        guard let address = listener.directoryAddress else { return }
        for _ in 0..<2 {
            connections.append(DirectoryConnection(
                loop: loop, address: address, bindDN: config.directoryBindDN, password: listener.directoryPassword,
                timeoutNanos: config.directoryTimeoutNanos
            ) { [weak listener] up in listener?.directoryState.store(up ? 1 : 2, ordering: .relaxed) })
        }
    }

    /// Connects the pool at start, so that /readyz knows the directory's state early.
    func warmUp() {
        let now = monotonicNanos()
        for connection in connections { connection.connect(now: now) }
    }

    func check(_ lookup: DirectoryLookup, generation: UInt64, useCache: Bool = true, done: @escaping (DirectoryVerdict) -> Void) {
        let now = monotonicNanos()
        if useCache, let hit = cache[lookup.certificate], hit.generation == generation, now < hit.expires {
            listener.metrics.directoryCacheHits.increment()
            return done(hit.verdict)
        }
        let build: (Int) -> [UInt8]
        switch config.certMap {
        case .subject:
            let filter = LDAPFilter.present("objectClass")
            build = { id in
                LDAPMessages.searchRequest(id: id, base: lookup.subject, scope: .base, filter: filter, attributes: Self.attributes)
            }
        case .search:
            let text = lookup.filter(from: config.certMapFilter ?? "(userCertificate;binary=*)")
            guard let filter = try? LDAPFilter.parse(text) else { return done(.unavailable("cert_map_filter '\(text)' does not parse")) }
            let base = config.certMapBase ?? ""
            build = { id in LDAPMessages.searchRequest(id: id, base: base, scope: .subtree, filter: filter, attributes: Self.attributes) }
        }
        guard !connections.isEmpty else { return done(.unavailable("no directory configured")) }
        let connection = connections.min { $0.load < $1.load }!  // the least busy of the pool
        listener.metrics.directoryRequests.increment()
        let ttl = config.directoryCacheTTLNanos
        connection.search(build) { [weak self] answer in
            switch answer {
            case .unavailable(let why):
                done(.unavailable(why))
            case .entries(let entries):
                let verdict = Self.verdict(entries, certificate: lookup.certificate, checkCertificate: self?.config.verifyCertInDirectory ?? true,
                                           isLogin: self?.config.clientAuth != ClientAuth.none)
                if ttl > 0 { self?.remember(lookup.certificate, generation: generation, verdict: verdict, ttl: ttl) }
                done(verdict)
            }
        }
    }

    /// `isLogin`: the entry becomes the client's identity (client_auth), so it must be one.
    static func verdict(_ entries: [DirectoryEntry], certificate: [UInt8], checkCertificate: Bool, isLogin: Bool) -> DirectoryVerdict {
        guard checkCertificate else {
            // The mapping is the login: it must name one entry, or nobody.
            switch entries.count {
            case 1: return .present(entryDN: entries[0].dn)
            case 0: return .absent("no entry for the certificate")
            default: return .absent("\(entries.count) entries match the certificate: the mapping must find one")
            }
        }
        // An entry holding exactly this certificate. For the check alone any such candidate
        // will do; as the login, two such entries are no answer (which one would it be?).
        let holders = entries.filter { $0.certificates.contains(certificate) }
        if isLogin && holders.count > 1 {
            return .absent("\(holders.count) entries hold this certificate: the mapping must find one to be the login")
        }
        if let entry = holders.first { return .present(entryDN: entry.dn) }
        let held = entries.contains { !$0.certificates.isEmpty }
        return .absent(held ? "the entry holds other certificates" : "no entry, or no certificate in it")
    }

    private func remember(_ certificate: [UInt8], generation: UInt64, verdict: DirectoryVerdict, ttl: UInt64) {
        if cache.count >= 16384 { cache.removeAll(keepingCapacity: true) }
        cache[certificate] = (generation, monotonicNanos() + ttl, verdict)
    }
}

extension String {
    /// Replaces every occurrence of `target` (no Foundation here).
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
