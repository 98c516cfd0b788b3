/// The open connections of one event loop, and what may end them from outside: a new
/// CRL (live revocation), a certificate removed from its directory entry, shutdown.
final class LiveConnections {
    private(set) var all: [UInt64: ClientConnection] = [:]
    /// Verified connections by every certificate of their chain: a new CRL finds the
    /// connections it revokes with one lookup per revoked serial (or per indexed
    /// certificate, whichever is fewer), never by scanning all connections.
    private var byCertificate: [ChainLink: [UInt64: ClientConnection]] = [:]

    func adopt(_ connection: ClientConnection) { all[connection.id] = connection }

    func forget(_ connection: ClientConnection) {
        all[connection.id] = nil
        for link in connection.chain.map(\.byName) {
            byCertificate[link]?[connection.id] = nil
            if byCertificate[link]?.isEmpty == true { byCertificate[link] = nil }
        }
    }

    /// The connection's chain verified: from now on a CRL can find it.
    func index(_ connection: ClientConnection) {
        for link in connection.chain { byCertificate[link.byName, default: [:]][connection.id] = connection }
    }

    /// After `listener` swapped in `trust`: closes its connections whose chain holds a
    /// certificate that the new CRLs revoke, each with a Notice of Disconnection.
    func closeRevoked(listener: ListenerRuntime, trust: TrustState) {
        let activeCRLs = trust.activeCRLs
        let revokedCount = activeCRLs.reduce(0) { $0 + $1.revoked.count }
        var candidates: [ClientConnection] = []
        if byCertificate.count <= revokedCount {
            for holders in byCertificate.values { candidates.append(contentsOf: holders.values) }
        } else {
            for crl in activeCRLs {
                for serial in crl.revoked {
                    if let holders = byCertificate[ChainLink(issuer: IssuerKey(name: crl.issuerKey.name), serial: serial)] {
                        candidates.append(contentsOf: holders.values)
                    }
                }
            }
        }
        // The index is by issuer name; the exact check (key identifiers too) decides.
        var seen = Set<UInt64>()
        for connection in candidates where connection.listener === listener && seen.insert(connection.id).inserted {
            guard connection.chain.contains(where: { trust.crl(for: $0.issuer)?.revoked.contains($0.serial) == true }) else {
                continue
            }
            connection.closeWithNotice(NoticeOfDisconnection.revoked, end: .revoked, detail: "certificate revoked by a new CRL")
        }
    }

    /// With revoke_active, connections whose certificate was removed from its entry are
    /// closed: every directory_cache_ttl the live identities are asked again (one search
    /// per distinct certificate), bypassing the cache.
    func recheckDirectory(_ listener: ListenerRuntime, checker: DirectoryChecker) {
        var byCertificate: [[UInt8]: [ClientConnection]] = [:]
        for connection in all.values where connection.listener === listener && connection.phase == .relaying {
            if let lookup = connection.directoryLookup { byCertificate[lookup.certificate, default: []].append(connection) }
        }
        for holders in byCertificate.values {
            checker.check(holders[0].directoryLookup!, generation: listener.trust.generation, useCache: false) { verdict in
                guard case .absent = verdict else { return }
                for connection in holders {
                    connection.closeWithNotice(NoticeOfDisconnection.removedFromDirectory, end: .revoked,
                                               detail: "certificate no longer in the directory entry")
                }
            }
        }
    }

    /// Closes what is left at once, without waiting for anything (the loop is gone).
    func closeNow(_ end: ConnectionEnd, detail: String) {
        for connection in Array(all.values) { connection.close(end, detail: detail) }
    }

    /// Ends every connection still open (after shutdown_grace), each with a Notice of
    /// Disconnection (unavailable) at a message boundary.
    func closeAll(_ end: ConnectionEnd) {
        for connection in Array(all.values) {
            connection.closeWithNotice(NoticeOfDisconnection.shuttingDown, end: end, detail: "shutdown_grace elapsed")
        }
    }
}
