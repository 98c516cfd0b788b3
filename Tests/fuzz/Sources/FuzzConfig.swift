import MTLSProxy

/// The config file: any text either fails with a ConfigError or gives a config whose
/// listeners have every required key, absolute paths, and endpoints and durations that
/// read back as themselves.
func fuzzConfig(_ data: [UInt8]) {
    let text = String(decoding: data, as: UTF8.self)  // as `mtls-proxy --config` reads it
    guard let config = try? ConfigParser.parse(text: text, path: "/etc/mtls-proxy/proxy.conf") else { return }
    check(!config.listeners.isEmpty, "a parsed config has a listener")
    var endpoints = [config.global.healthListen].compactMap { $0 }
    var durations = [config.global.shutdownGraceNanos]
    for listener in config.listeners {
        guard let listen = listener.listen, let backend = listener.backend, let cert = listener.cert, let key = listener.key,
            let caBundle = listener.caBundle
        else { return check(false, "listener [\(listener.name)] lacks a required key") }
        endpoints += [listen, backend]
        for path in [cert, key, caBundle] + [listener.crlDir, listener.ticketKeyFile].compactMap({ $0 }) {
            check(path.hasPrefix("/"), "path '\(path)' is not made absolute")
        }
        durations += [listener.handshakeTimeoutNanos, listener.idleTimeoutNanos, listener.connectTimeoutNanos,
                      listener.crlWarnBeforeNanos, listener.directoryTimeoutNanos, listener.directoryCacheTTLNanos]
        _ = listener.directoryEndpoint
        _ = listener.crlPolicy
    }
    for endpoint in endpoints {
        check((try? Endpoint.parse(endpoint.description, allowUnix: true).get()) == endpoint, "\(endpoint) does not read back")
    }
    for nanos in durations {
        let text = ConfigDuration.describe(nanos)
        check(ConfigDuration.parseNanoseconds(text) == nanos, "duration \(nanos) ns is described as '\(text)'")
    }
}
