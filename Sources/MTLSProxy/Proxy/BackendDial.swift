/// Connecting to the backend within connect_timeout, for one verified client.
///
/// When no descriptor is free (the client took the last one), the connect is tried
/// again every `retryNanos` until the timeout, rather than refusing a verified client.
struct BackendDial {
    enum Step {
        case connected(StreamSocket)
        /// Completion shows as writability; `finish` then says how it went.
        case inProgress(StreamSocket)
        case retry(at: UInt64)
        case failed(String)
    }

    static let retryNanos: UInt64 = 100_000_000

    let deadline: UInt64
    private let address: SocketAddress
    private let timeoutNanos: UInt64
    private var waitingForDescriptor = false

    init(to address: SocketAddress, timeoutNanos: UInt64, now: UInt64) {
        self.address = address
        self.timeoutNanos = timeoutNanos
        deadline = now + timeoutNanos
    }

    mutating func attempt(now: UInt64, log: (String) -> Void) -> Step {
        switch Socket.connect(to: address) {
        case .connected(let socket):
            return .connected(StreamSocket(socket))
        case .inProgress(let socket):
            return .inProgress(StreamSocket(socket))
        case .failed(let error):
            if Socket.isResourceShortage(error.errno) && now + Self.retryNanos < deadline {
                if !waitingForDescriptor {
                    waitingForDescriptor = true
                    log("waiting for a descriptor to connect to the backend: \(error)")
                }
                return .retry(at: now + Self.retryNanos)
            }
            return .failed(waitingForDescriptor ? "\(error), still after \(ConfigDuration.describe(timeoutNanos))" : "\(error)")
        }
    }

    /// The outcome of a connect in progress, once its socket turned writable: nil when
    /// it is connected, else why not.
    func finish(_ socket: StreamSocket, backend: Endpoint) -> String? {
        let error = Socket.pendingError(socket.raw)
        return error == 0 ? nil : "connect to \(backend): \(SystemError.describe(error))"
    }

    func timedOut(backend: Endpoint) -> String {
        "connect to \(backend) timed out after \(ConfigDuration.describe(timeoutNanos))"
    }
}
