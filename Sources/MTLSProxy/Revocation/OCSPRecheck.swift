/// With `ocsp` and `revoke_active`: every second, each worker looks for open
/// connections whose OCSP answers have expired and asks again (through the cache, so
/// one request per certificate however many connections share it). A fresh `revoked`
/// closes them with a Notice of Disconnection, like a new CRL does.
enum OCSPRecheck {
    static let periodNanos: UInt64 = 1_000_000_000

    static func start(_ listener: ListenerRuntime, worker: Worker) -> LoopTimer {
        worker.loop.every(periodNanos) { [unowned worker] _ in
            guard !worker.draining else { return }
            let now = wallClockSeconds()
            for connection in worker.live.all.values where connection.listener === listener {
                connection.recheckRevocation(now: now)
            }
        }
    }
}

extension RevocationGate {
    /// When a connection whose check gave no usable answer (best-effort let it in) is
    /// asked about again: a minute, or ocsp_max_age if shorter.
    static func retrySeconds(_ config: RevocationConfig) -> Int {
        max(1, min(60, Int(config.ocspMaxAgeNanos / 1_000_000_000)))
    }
}
