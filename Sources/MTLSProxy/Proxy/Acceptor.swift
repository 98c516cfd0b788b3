import Glibc

/// Accepts on one listening socket of one worker.
final class Acceptor: EventHandler {
    let fd: Int32
    let listener: ListenerRuntime
    unowned let worker: Worker
    private(set) lazy var pause = AcceptPause(fd: fd, handler: self, loop: worker.loop, logger: listener.logger)
    private lazy var overLimitLog = OverLimitLog(loop: worker.loop, logger: listener.logger, limit: listener.config.maxConnections)

    init(fd: Int32, listener: ListenerRuntime, worker: Worker) {
        self.fd = fd
        self.listener = listener
        self.worker = worker
    }

    func handleEvent(fd: Int32, events: UInt32) {
        // Take a batch per wake-up; the rest wait for the next round so that a flood of
        // new connections cannot starve the ones already open.
        for _ in 0..<64 {
            switch Socket.accept(fd) {
            case .wouldBlock:
                return
            case .retry:
                continue
            case .exhausted(let error):
                // Out of descriptors: pausing, not returning, or the level-triggered
                // socket would wake the loop again at once.
                return pause.failed(error)
            case .accepted(let socket, let peer):
                guard listener.reserveSlot() else {
                    refuseOverLimit(socket, peer: peer)
                    continue
                }
                Socket.setNoDelay(socket.raw)
                let connection = ClientConnection(
                    socket: socket, peer: peer, listener: listener, trust: listener.trust, worker: worker)
                worker.live.adopt(connection)
                connection.start()
            }
        }
    }

    private func refuseOverLimit(_ socket: Descriptor, peer: SocketAddress) {
        socket.close()
        listener.metrics.connections[.overLimit]?.increment()
        overLimitLog.refused(peer)
    }
}
