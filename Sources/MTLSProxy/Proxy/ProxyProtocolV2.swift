/// The PROXY protocol version 2 header (haproxy.org's proxy-protocol.txt, section 2.2):
/// sent to the backend before any client byte, so that slapd (on a `pldap://` listener)
/// sees the real client address in its logs and ACLs. Besides the addresses it carries
/// one small TLV: PP2_TYPE_SSL with the TLS version and the client certificate's CN,
/// never the certificate itself, keeping the header far below slapd's 520-byte limit.
package enum ProxyProtocolV2 {
    package static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    package static let maxCommonNameBytes = 64

    package static func header(client: (bytes: [UInt8], port: UInt16)?, local: (bytes: [UInt8], port: UInt16)?,
                       tlsVersion: String?, commonName: String?) -> [UInt8] {
        var body: [UInt8] = []
        var family: UInt8 = 0x00  // UNSPEC: the backend keeps the connection's own addresses
        if let client, let local, client.bytes.count == local.bytes.count {
            family = client.bytes.count == 4 ? 0x11 : 0x21  // TCP over IPv4 / IPv6
            body += client.bytes + local.bytes
            body += [UInt8(client.port >> 8), UInt8(client.port & 0xff), UInt8(local.port >> 8), UInt8(local.port & 0xff)]
        }
        var ssl: [UInt8] = [0x01 | 0x02 | 0x04, 0, 0, 0, 0]  // SSL, cert on this connection and session; verify = 0 (ok)
        if let tlsVersion { ssl += tlv(0x21, Array(tlsVersion.utf8)) }
        if let commonName { ssl += tlv(0x22, Array(commonName.utf8.prefix(maxCommonNameBytes))) }
        body += tlv(0x20, ssl)
        return signature + [0x21, family, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
    }

    private static func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
        [type, UInt8(value.count >> 8), UInt8(value.count & 0xff)] + value
    }

    /// The header for a client at `client`, connected to us at `local`; the TLS version
    /// as GnuTLS names it ("TLS1.3"), written the way OpenSSL does ("TLSv1.3").
    static func header(client: SocketAddress, local: SocketAddress, tlsVersion: String?, commonName: String?) -> [UInt8] {
        header(client: client.ipBytesAndPort, local: local.ipBytesAndPort,
               tlsVersion: tlsVersion.map { $0.hasPrefix("TLS1") ? "TLSv1" + $0.dropFirst(4) : $0 }, commonName: commonName)
    }
}
