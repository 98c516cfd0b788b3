/// verify_cert_in_directory for one verified client: does the user's entry hold exactly
/// this certificate? What the answer means, `directory_unavailable` included, is decided
/// here; the connection only learns whether to go on.
enum DirectoryGate {
    enum Decision {
        /// Go on; the entry the certificate maps to, when the directory named it.
        case pass(entryDN: String?)
        case refuse(RefusalReason, detail: String)
    }

    static func ask(_ lookup: DirectoryLookup, listener: ListenerRuntime, worker: Worker, generation: UInt64,
                    peer: SocketAddress, subject: String, decided: @escaping (Decision) -> Void) {
        worker.directoryChecker(for: listener).check(lookup, generation: generation) { verdict in
            decided(decision(verdict, listener: listener, peer: peer, subject: subject))
        }
    }

    static func decision(_ verdict: DirectoryVerdict, listener: ListenerRuntime, peer: SocketAddress, subject: String) -> Decision {
        switch verdict {
        case .present(let entryDN):
            return .pass(entryDN: entryDN)
        case .absent(let detail):
            return .refuse(.notInDirectory, detail: detail)
        case .unavailable(let why) where listener.config.directoryUnavailable == .allow:
            listener.logger.warning("directory unavailable, allowing", metadata: [
                "client": "\(peer)", "subject": "\(subject)", "detail": "\(why)",
            ])
            return .pass(entryDN: nil)
        case .unavailable(let why):
            return .refuse(.directoryUnavailable, detail: why)
        }
    }
}
