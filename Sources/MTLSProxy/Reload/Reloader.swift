import CGnuTLSShim
import Glibc
import Logging
import Synchronization

/// The two ends of one reload, for whoever reports them (systemd's RELOADING=1/READY=1).
enum ReloadPhase {
    case started(why: String)
    case finished(success: Bool, why: String)
}

/// Keeps every listener's trust state in step with its files, on a thread of its own
/// so that file reads and CRL parsing never block an event loop.
///
/// Triggers: SIGHUP (all listeners), inotify events (the listeners concerned, after a
/// short quiet period so that a burst of writes causes one reload), and a fingerprint
/// of the files compared every 2 s as a fallback. Each reload builds a whole new
/// TrustState and swaps it in; a state that fails validation is not swapped (the old one
/// stays: README, Revocation and reloads).
final class Reloader: @unchecked Sendable {  // the thread owns the mutable state; others only call requestAll()
    /// Quiet time after the last file event before reloading, and the longest a burst
    /// may delay it: together they keep a change within the 2 s the README
    /// promises (Revocation and reloads).
    static let debounceNanos: UInt64 = 150_000_000
    static let maxDelayNanos: UInt64 = 600_000_000
    static let rescanNanos: UInt64 = 2_000_000_000

    private let listeners: [ListenerRuntime]
    private let metrics: ProxyMetrics
    private let logger: Logger
    private let swapped: (ListenerRuntime, TrustState) -> Void
    /// Told when a reload starts and ends (the systemd notifier).
    private let phases: ((ReloadPhase) -> Void)?
    private let wakeFD: Int32
    private let sighup = Atomic<Bool>(false)
    private var fingerprints: [[String]]
    private var crlAlerts = Set<String>()

    init(listeners: [ListenerRuntime], metrics: ProxyMetrics, logger: Logger,
         phases: ((ReloadPhase) -> Void)? = nil,
         swapped: @escaping (ListenerRuntime, TrustState) -> Void) throws(SystemError) {
        self.listeners = listeners
        self.phases = phases
        self.metrics = metrics
        self.logger = logger
        self.swapped = swapped
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw SystemError("eventfd") }
        fingerprints = listeners.map { FileFingerprint.of($0.config) ?? [] }
    }

    func start() throws(SystemError) {
        let watch = try InotifyWatch()
        watch.watch(listeners.map(\.config))
        let box = UncheckedBox((self, watch))
        Threads.spawn { box.value.0.run(watch: box.value.1) }
    }

    /// SIGHUP: reload everything. Safe from any thread.
    func requestAll() {
        sighup.store(true, ordering: .relaxed)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    private func run(watch: InotifyWatch) {
        var dirty = Set<Int>()  // listeners touched since the last reload; pending in `debounce`
        var debounce = Debounce(quiet: Self.debounceNanos, maxDelay: Self.maxDelayNanos)
        var nextRescan = monotonicNanos() + Self.rescanNanos
        while true {
            let now = monotonicNanos()
            var wait = nextRescan > now ? nextRescan - now : 0
            if let due = debounce.due {
                wait = min(wait, due > now ? due - now : 0)
            }
            var fds = [pollfd(fd: watch.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, Int32((wait + 999_999) / 1_000_000))
            let after = monotonicNanos()

            var all = false
            if fds[1].revents != 0 {
                var counter: UInt64 = 0
                _ = read(wakeFD, &counter, 8)
                all = sighup.exchange(false, ordering: .relaxed)
            }
            if fds[0].revents != 0 {
                let touched = watch.drain()
                if !touched.isEmpty {
                    debounce.note(at: after)
                    dirty.formUnion(touched)
                }
            }
            if all {
                reload(Set(listeners.indices), why: "SIGHUP", watch: watch)
                dirty.removeAll()
                debounce.reset()
            } else if debounce.isDue(at: after) {
                reload(dirty, why: "files changed", watch: watch)
                dirty.removeAll()
                debounce.reset()
            }
            if after >= nextRescan {
                nextRescan = after + Self.rescanNanos
                let changed = Set(listeners.indices.filter { index in
                    FileFingerprint.of(listeners[index].config).map { $0 != fingerprints[index] } ?? false
                })
                if !changed.isEmpty { reload(changed, why: "files changed (rescan)", watch: watch) }
                watchCRLDates()
            }
        }
    }

    private func reload(_ indices: Set<Int>, why: String, watch: InotifyWatch) {
        phases?(.started(why: why))
        var success = true
        for index in indices.sorted() {
            let listener = listeners[index]
            fingerprints[index] = FileFingerprint.of(listener.config) ?? fingerprints[index]
            do {
                let trust = try TrustState(config: listener.config, previous: listener.trust)
                listener.swapTrust(trust)
                trust.logLoadNotes(to: listener.logger)
                let held = trust.crls.heldCount > 0 ? ", \(trust.crls.heldCount) held for CAs that clients send" : ""
                listener.logger.info("reloaded", metadata: [
                    "reason": "\(why)",
                    "detail": "certificate serial \(trust.serverCertificate.serialHex), \(trust.caCount) CAs, \(trust.activeCRLs.count) CRLs\(held)",
                ])
                swapped(listener, trust)
            } catch {
                success = false
                listener.metrics.reloadFailed()
                listener.logger.error("reload failed, keeping the previous state", metadata: ["reason": "\(why)", "detail": "\(error)"])
            }
        }
        watch.watch(listeners.map(\.config))  // a swapped folder has a new inode to watch
        metrics.recordReload(success: success, at: wallClockSeconds())
        phases?(.finished(success: success, why: why))
    }

    /// Logs once when a CRL enters its crl_warn_before window, and once when it passes
    /// its nextUpdate (under strict its chains are refused from that moment; the check
    /// itself happens at each handshake, this only tells the operator).
    private func watchCRLDates() {
        let now = wallClockSeconds()
        for listener in listeners {
            let warnBefore = Int(listener.config.crlWarnBeforeNanos / 1_000_000_000)
            for crl in listener.trust.activeCRLs {
                guard let next = crl.nextUpdate else { continue }
                let key = "\(listener.name)|\(crl.issuer)|\(next)"
                if next <= now {
                    if crlAlerts.insert(key + "|stale").inserted {
                        let consequence = listener.config.crlPolicy == .strict ? "; strict policy refuses its chains" : ""
                        listener.logger.error("CRL is past its nextUpdate", metadata: [
                            "issuer": "\(crl.issuer)",
                            "detail": "nextUpdate \(Timestamp.iso8601(next)) in \(crl.file)\(consequence)",
                        ])
                    }
                } else if next - now <= warnBefore, crlAlerts.insert(key + "|soon").inserted {
                    listener.logger.warning("CRL nextUpdate is near", metadata: [
                        "issuer": "\(crl.issuer)", "detail": "nextUpdate \(Timestamp.iso8601(next)) in \(crl.file)",
                    ])
                }
            }
        }
    }
}
