import ArgumentParser
import Glibc
import Logging
import MTLSProxy

@main
struct MTLSProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mtls-proxy",
        abstract: "A mutual-TLS front door for LDAP servers: verifies client certificates, then relays to the backend.",
        discussion: """
            Run with a config file (see proxy.conf.example), or give one listener on the command line.
            Signals: SIGHUP reloads certificates, keys, CA bundles and CRLs; SIGTERM/SIGINT drain and stop.
            Exit status: 0 clean stop or passing --check; 1 bad configuration, certificate, key, CA bundle or CRL;
            2 any other failure to start.
            """,
        version: MTLSProxyVersion.string
    )

    @Option(help: "Configuration file.")
    var config: String?

    @Flag(help: "Load and validate everything, print a summary, and exit.")
    var check = false

    @Option(help: "Listen address for the one-listener form (HOST:PORT or [V6]:PORT).")
    var listen: String?

    @Option(help: "Backend address (HOST:PORT, [V6]:PORT or unix:/path).")
    var backend: String?

    @Option(help: "Server certificate chain, PEM, leaf first.")
    var cert: String?

    @Option(help: "Server private key, PEM.")
    var key: String?

    @Option(name: .customLong("ca-bundle"), help: "PEM file of CAs trusted to issue client certificates.")
    var caBundle: String?

    @Option(name: .customLong("crl-dir"), help: "Folder of CRLs (PEM or DER).")
    var crlDir: String?

    @Option(name: .customLong("health-listen"), help: "HOST:PORT for /healthz, /readyz and /metrics.")
    var healthListen: String?

    mutating func run() throws {
        let parsed: ProxyConfig
        do {
            parsed = try loadConfig()
        } catch {
            fail("\(error)", status: 1)
        }
        LoggingSystem.bootstrap { _ in
            LineLogHandler(format: parsed.global.logFormat, level: parsed.global.logLevel.swiftLogLevel)
        }
        let logger = Logger(label: "mtls-proxy")
        do {
            let loaded = try LoadedConfiguration(parsed)
            if check {
                print(loaded.summary)
                print("configuration OK")
                return
            }
            let status = try ProxyServer(loaded, logger: logger).run()
            if status != 0 { throw ExitCode(status) }
        } catch let error as StartupError {
            fail(error.description, status: error.exitCode)
        }
    }

    private func loadConfig() throws -> ProxyConfig {
        let flagValues: [(String, String?)] = [
            ("--listen", listen), ("--backend", backend), ("--cert", cert), ("--key", key), ("--ca-bundle", caBundle),
            ("--crl-dir", crlDir), ("--health-listen", healthListen),
        ]
        if let path = config {
            if let flag = flagValues.first(where: { $0.1 != nil }) {
                throw ConfigError(file: nil, line: nil, "\(flag.0) cannot be combined with --config")
            }
            let text: String
            do {
                text = String(decoding: try ConfigFile.read(path), as: UTF8.self)
            } catch {
                throw ConfigError(file: path, line: nil, "\(error)")
            }
            return try ConfigParser.parse(text: text, path: path)
        }
        // The one-listener form: the same keys, so the same validation and messages.
        var lines = ["[default]"]
        let keys = ["listen", "backend", "cert", "key", "ca_bundle", "crl_dir"]
        for (key, value) in zip(keys, flagValues.map(\.1)) {
            if let value { lines.append("\(key) = \(value)") }
        }
        if let healthListen { lines.insert("health_listen = \(healthListen)", at: 0) }
        let missing = flagValues.prefix(5).filter { $0.1 == nil }.map(\.0)
        guard missing.isEmpty else {
            throw ConfigError(file: nil, line: nil, "give --config PATH, or all of --listen, --backend, --cert, --key and --ca-bundle "
                + "(missing: \(missing.joined(separator: ", ")))")
        }
        do {
            return try ConfigParser.parse(text: lines.joined(separator: "\n"), path: nil)
        } catch {
            // Line numbers of a file the user never wrote would only confuse.
            throw ConfigError(file: nil, line: nil, error.message)
        }
    }

    private func fail(_ message: String, status: Int32) -> Never {
        StandardError.write("mtls-proxy: \(message)\n")
        Glibc.exit(status)
    }
}
