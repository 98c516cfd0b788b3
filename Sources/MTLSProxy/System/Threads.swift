import CGnuTLSShim
import Glibc

/// Starts an OS thread running `body`: the event loops and the reload work each get
/// one, and nothing else does (no thread per connection).
enum Threads {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    @discardableResult
    static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return thread
    }

    static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }

    /// Cores this process may run on (its CPU affinity, else the online ones):
    /// `workers = auto`. Two loops time-sharing one core cost more than they bring.
    static func availableCores() -> Int {
        let allowed = Int(shim_allowed_cpus())
        return max(1, allowed > 0 ? allowed : Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}
