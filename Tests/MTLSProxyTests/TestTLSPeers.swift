import CGnuTLSShim
import Glibc
import XCTest

@testable import MTLSProxy

/// A small deterministic generator, so that a random schedule that fails can be replayed
/// from its seed.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {  // SplitMix64
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }
}

/// A certificate signed by a TestCA (or self-signed when `issuer` is nil), with its key,
/// exported as PEM for the files a ListenerConfig names.
final class TestLeaf {
    let key: gnutls_x509_privkey_t
    let cert: gnutls_x509_crt_t

    init(name: String, issuer: TestCA, serial: UInt8, purpose: String) {
        var key: gnutls_x509_privkey_t?
        gnutls_x509_privkey_init(&key)
        precondition(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA, 256, 0) == 0)
        var cert: gnutls_x509_crt_t?
        gnutls_x509_crt_init(&cert)
        self.key = key!
        self.cert = cert!
        let now = time(nil)
        gnutls_x509_crt_set_version(cert, 3)
        var error: UnsafePointer<CChar>?
        precondition(gnutls_x509_crt_set_dn(cert, name, &error) == 0)
        precondition(gnutls_x509_crt_set_key(cert, key) == 0)
        var serialBytes: [UInt8] = [0x10, serial]
        gnutls_x509_crt_set_serial(cert, &serialBytes, serialBytes.count)
        gnutls_x509_crt_set_activation_time(cert, now - 3600)
        gnutls_x509_crt_set_expiration_time(cert, now + 86400)
        gnutls_x509_crt_set_basic_constraints(cert, 0, -1)
        gnutls_x509_crt_set_key_usage(cert, UInt32(GNUTLS_KEY_DIGITAL_SIGNATURE))
        precondition(gnutls_x509_crt_set_key_purpose_oid(cert, purpose, 0) == 0)
        let signed = gnutls_x509_crt_sign2(cert, issuer.cert, issuer.key, GNUTLS_DIG_SHA256, 0)
        precondition(signed == 0, "sign: \(GnuTLS.describe(signed))")
    }

    deinit {
        gnutls_x509_crt_deinit(cert)
        gnutls_x509_privkey_deinit(key)
    }

    var certificatePEM: [UInt8] { Self.pem(cert) }

    var keyPEM: [UInt8] {
        var out = gnutls_datum_t()
        gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out)
        return GnuTLS.takeBytes(&out)
    }

    static func pem(_ cert: gnutls_x509_crt_t) -> [UInt8] {
        var out = gnutls_datum_t()
        gnutls_x509_crt_export2(cert, GNUTLS_X509_FMT_PEM, &out)
        return GnuTLS.takeBytes(&out)
    }
}

/// A CA, a server certificate and a client certificate (clientAuth), with the server's
/// files in a temporary folder: what a listener and a client of it need.
final class TestPKI {
    let ca = TestCA(name: "CN=Test Root CA")
    let server: TestLeaf
    let client: TestLeaf
    let folder: String

    init() {
        server = TestLeaf(name: "CN=localhost", issuer: ca, serial: 1, purpose: GNUTLS_KP_TLS_WWW_SERVER)
        client = TestLeaf(name: "CN=client,OU=tests", issuer: ca, serial: 2, purpose: GNUTLS_KP_TLS_WWW_CLIENT)
        var template = Array("/tmp/mtls-proxy-tests-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { preconditionFailure("mkdtemp") }
        folder = String(cString: made)
        // Chains of two certificates on both sides: handshake messages of about 1 KB, more
        // than one small record.
        write("server.pem", server.certificatePEM + TestLeaf.pem(ca.cert))
        write("server.key", server.keyPEM)
        write("ca.pem", TestLeaf.pem(ca.cert))
    }

    deinit {
        for name in ["server.pem", "server.key", "ca.pem"] { unlink(folder + "/" + name) }
        rmdir(folder)
    }

    private func write(_ name: String, _ bytes: [UInt8]) {
        let fd = open(folder + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0)
        precondition(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count)
        Glibc.close(fd)
    }

    /// A listener section whose files are this PKI's (other settings at their defaults).
    func listenerConfig(priority: String = ListenerConfig.defaultPriority) -> ListenerConfig {
        var config = ListenerConfig(name: "test")
        config.cert = folder + "/server.pem"
        config.key = folder + "/server.key"
        config.caBundle = folder + "/ca.pem"
        config.priority = priority
        return config
    }

    /// Client credentials holding the client certificate, or none (`withCertificate` false).
    func clientCredentials(withCertificate: Bool = true) -> ClientCredentials {
        ClientCredentials(certificate: withCertificate ? client : nil, issuer: ca)
    }
}

/// GnuTLS client credentials, freed when this goes (the owner a client TLSSession keeps).
final class ClientCredentials {
    let raw: gnutls_certificate_credentials_t

    init(certificate: TestLeaf?, issuer: TestCA? = nil) {
        var creds: gnutls_certificate_credentials_t?
        gnutls_certificate_allocate_credentials(&creds)
        raw = creds!
        if let certificate {
            var certs: [gnutls_x509_crt_t?] = [certificate.cert] + (issuer.map { [$0.cert] } ?? [])
            let rc = gnutls_certificate_set_x509_key(raw, &certs, Int32(certs.count), certificate.key)
            precondition(rc >= 0, "set_x509_key: \(GnuTLS.describe(rc))")
        }
    }

    deinit { gnutls_certificate_free_credentials(raw) }
}

/// One direction of an in-memory connection.
final class ByteQueue {
    var bytes: [UInt8] = []
    var head = 0
    /// The writer is gone: an empty queue reads as EOF.
    var closed = false
    /// An edge-triggered readiness event is due: bytes arrived since the reader last
    /// looked. A driver that calls the reader again only then finds what a real event
    /// loop would find, including a reader that stops while bytes are still waiting.
    var signalled = false

    var count: Int { bytes.count - head }

    func append(_ new: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: new)
        signalled = true
    }

    func close() {
        closed = true
        signalled = true
    }

    func take(into buffer: UnsafeMutableRawBufferPointer, max: Int) -> Int {
        let n = Swift.min(max, buffer.count, count)
        bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + head, byteCount: n) }
        head += n
        if head == bytes.count { bytes.removeAll(keepingCapacity: true); head = 0 }
        return n
    }
}

/// A TLS session's transport in memory: what one side pushes lands in the other's inbox.
/// With a generator, reads are cut to random sizes and some calls say .wouldBlock
/// although bytes are there (what a socket's readiness can look like to GnuTLS).
final class MemoryTransport: TLSTransport {
    let inbox: ByteQueue
    let outbox: ByteQueue
    var random: SeededRandom?
    /// Pushes beyond this many bytes waiting in the outbox would block (a full socket).
    var outboxCapacity = Int.max
    private(set) var pushedBytes = 0

    init(inbox: ByteQueue, outbox: ByteQueue) {
        self.inbox = inbox
        self.outbox = outbox
    }

    /// Two transports joined back to back.
    static func pair(seed: UInt64? = nil) -> (MemoryTransport, MemoryTransport) {
        let one = ByteQueue(), two = ByteQueue()
        let a = MemoryTransport(inbox: one, outbox: two), b = MemoryTransport(inbox: two, outbox: one)
        if let seed {
            a.random = SeededRandom(seed: seed)
            b.random = SeededRandom(seed: seed &+ 1)
        }
        return (a, b)
    }

    var hasBufferedInput: Bool { false }

    func pull(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        if inbox.count == 0 { return inbox.closed ? .closed : .wouldBlock }
        var limit = Int.max
        if random != nil {
            // Bytes that have not arrived yet: they will, with an event of their own.
            if random!.chance(0.2) {
                inbox.signalled = true
                return .wouldBlock
            }
            limit = Int.random(in: 1...64, using: &random!)
        }
        let n = inbox.take(into: buffer, max: limit)
        if inbox.count > 0 && n < buffer.count { inbox.signalled = true }  // the rest arrives later
        return .processed(n)
    }

    func push(_ vectors: UnsafePointer<iovec>, count: Int32) -> IOResult {
        var room = outboxCapacity - outbox.count
        guard room > 0 else { return .wouldBlock }
        var moved = 0
        for index in 0..<Int(count) where room > 0 {
            let vector = vectors[index]
            let n = min(room, vector.iov_len)
            outbox.append(UnsafeRawBufferPointer(start: vector.iov_base, count: n))
            moved += n
            room -= n
        }
        pushedBytes += moved
        return moved > 0 ? .processed(moved) : .wouldBlock
    }
}

/// Byte streams compared by count and first difference: a failure message that fits on
/// a line, unlike XCTAssertEqual's dump of both arrays.
func assertSameBytes(_ actual: [UInt8], _ expected: [UInt8], _ message: @autoclosure () -> String = "",
                     file: StaticString = #filePath, line: UInt = #line) {
    guard actual != expected else { return }
    let common = min(actual.count, expected.count)
    let firstDifference = (0..<common).first { actual[$0] != expected[$0] } ?? common
    XCTFail("\(message()): got \(actual.count) bytes, expected \(expected.count), first difference at \(firstDifference)",
            file: file, line: line)
}
