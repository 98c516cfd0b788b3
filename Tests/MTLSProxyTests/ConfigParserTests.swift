import XCTest

@testable import MTLSProxy

final class ConfigParserTests: XCTestCase {
    private let minimal = """
        [ldaps]
        listen = 127.0.0.1:636
        backend = 127.0.0.1:389
        cert = /etc/p/server.pem
        key = /etc/p/server.key
        ca_bundle = /etc/p/ca.pem

        """

    private func parse(_ text: String, path: String? = "/etc/p/proxy.conf") throws(ConfigError) -> ProxyConfig {
        try ConfigParser.parse(text: text, path: path)
    }

    private func error(_ text: String) -> ConfigError? {
        do {
            _ = try parse(text)
            return nil
        } catch {
            return error
        }
    }

    func testMinimalListenerGetsTheDocumentedDefaults() throws {
        let listener = try parse(minimal).listeners[0]
        XCTAssertEqual(listener.name, "ldaps")
        XCTAssertEqual(listener.listen, .inet(host: "127.0.0.1", port: 636))
        XCTAssertEqual(listener.handshakeTimeoutNanos, 10_000_000_000)
        XCTAssertEqual(listener.idleTimeoutNanos, 30 * 60 * 1_000_000_000)
        XCTAssertEqual(listener.connectTimeoutNanos, 5_000_000_000)
        XCTAssertEqual(listener.maxConnections, 10_000)
        XCTAssertNil(listener.crlPolicy, "without crl_dir nothing is checked")
        XCTAssertTrue(listener.priority.contains("%SERVER_PRECEDENCE"))
        XCTAssertTrue(listener.priority.contains("-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"))
    }

    func testCRLPolicyDefaultsToStrictWhenAFolderIsSet() throws {
        let listener = try parse(minimal + "crl_dir = crls\n").listeners[0]
        XCTAssertEqual(listener.crlPolicy, .strict)
        XCTAssertEqual(listener.crlDir, "/etc/p/crls", "relative to the config file")
        let relaxed = try parse(minimal + "crl_dir = /crl\ncrl_policy = best-effort\n").listeners[0]
        XCTAssertEqual(relaxed.crlPolicy, .bestEffort)
    }

    func testGlobalKeysAndComments() throws {
        let config = try parse("""
            # a comment
            workers = 3   # trailing comment
            log_format = json
            health_listen = [::1]:8080
            shutdown_grace = 500ms
            drain_delay = 2s

            """ + minimal)
        XCTAssertEqual(config.global.workers, 3)
        XCTAssertEqual(config.global.logFormat, .json)
        XCTAssertEqual(config.global.healthListen, .inet6(host: "::1", port: 8080))
        XCTAssertEqual(config.global.shutdownGraceNanos, 500_000_000)
        XCTAssertEqual(config.global.drainDelayNanos, 2_000_000_000)
        XCTAssertEqual(try parse(minimal).global.drainDelayNanos, 0, "no delay unless asked for")
        XCTAssertNil(try parse("workers = auto\n" + minimal).global.workers)
    }

    func testSeveralListeners() throws {
        let config = try parse(minimal + minimal.replacingFirst("[ldaps]", with: "[second]"))
        XCTAssertEqual(config.listeners.map(\.name), ["ldaps", "second"])
    }

    func testUnknownKeyNamesFileAndLine() {
        let error = error(minimal + "idle_timout = 5s\n")
        XCTAssertEqual(error?.file, "/etc/p/proxy.conf")
        XCTAssertEqual(error?.line, 7)
        XCTAssertEqual(error?.message, "unknown key 'idle_timout'")
    }

    func testKeyInTheWrongPlaceSaysWhere() {
        XCTAssertTrue(error("listen = 127.0.0.1:1\n")?.message.contains("listener key") ?? false)
        XCTAssertTrue(error(minimal + "workers = 2\n")?.message.contains("global key") ?? false)
    }

    func testMissingRequiredKey() {
        let error = error("[x]\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:2\n")
        XCTAssertEqual(error?.line, 1)
        XCTAssertEqual(error?.message, "[x]: missing required key 'cert'")
    }

    func testBadValues() {
        XCTAssertEqual(error(minimal + "max_connections = lots\n")?.line, 7)
        XCTAssertNotNil(error(minimal + "revoke_active = maybe\n"))
        XCTAssertNotNil(error(minimal + "handshake_timeout = 0\n"), "a handshake deadline of 0 would never fire")
        XCTAssertNotNil(error(minimal + "crl_policy = lax\n"))
        XCTAssertNotNil(error(minimal + "crl_policy = strict\n"), "crl_policy needs crl_dir")
        XCTAssertNotNil(error("[x]\nlisten = unix:/tmp/s\n"), "listeners are TCP only")
        XCTAssertNotNil(error("no listener at all = 1\n"))
        XCTAssertNotNil(error(""), "a config without listeners")
    }

    func testDuplicateKeyIsAnError() {
        XCTAssertEqual(error(minimal + "listen = 127.0.0.1:2\n")?.message, "'listen' is set twice")
    }

    func testDirectoryCheckCombinations() {
        XCTAssertTrue(error(minimal + "verify_cert_in_directory = yes\ncert_map = search\n")?.message.contains("cert_map_base") ?? false)
        XCTAssertTrue(error(minimal + "verify_cert_in_directory = yes\ndirectory_bind_dn = cn=x\n")?.message.contains("password") ?? false)
        XCTAssertTrue(error(minimal + "verify_cert_in_directory = yes\nproxy_protocol = v2\n")?.message.contains("directory_url") ?? false)
        XCTAssertNil(error(minimal + "verify_cert_in_directory = yes\ndirectory_url = ldapi://%2Frun%2Fslapd%2Fldapi\n"))
        let listener = try? parse(minimal + "verify_cert_in_directory = yes\ndirectory_url = ldapi://%2Frun%2Fslapd%2Fldapi\n").listeners[0]
        XCTAssertEqual(listener?.directoryEndpoint, .unix(path: "/run/slapd/ldapi"))
        // A '%' not followed by two hex digits stays as it is (a sign is no digit: "%+f", "%-0").
        let odd = try? parse(minimal + "verify_cert_in_directory = yes\ndirectory_url = ldapi://%2Frun%2F%+f%-0%4\n").listeners[0]
        XCTAssertEqual(odd?.directoryEndpoint, .unix(path: "/run/%+f%-0%4"))
        XCTAssertEqual(try? parse(minimal + "directory_url = ldap://ldap.example.com\n").listeners[0].directoryEndpoint,
                       .inet(host: "ldap.example.com", port: 389))
        XCTAssertNil(error(minimal + "allow_cn = alice, bob\n"))
        let subjects = try? parse(minimal + "allow_subject = UID=a,DC=example; UID=b,DC=example\n").listeners[0].allowSubject
        XCTAssertEqual(subjects, ["UID=a,DC=example", "UID=b,DC=example"])
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = range(of: target) else { return self }
        return replacingCharacters(in: range, with: replacement)
    }
}
