/// The PROXY header a load balancer sends before the client's bytes (haproxy.org's
/// proxy-protocol.txt: version 1, one text line; version 2, binary): who the client
/// really is. Read only from `trusted_proxies`, and only what `proxy_protocol_in` allows.
package enum InboundProxyHeader {
    package enum Parsed: Equatable {
        /// More bytes are needed to decide.
        case incomplete
        /// A header of `length` bytes. `client` is nil when it names no TCP client
        /// (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX): the connection's own address stands.
        case header(length: Int, client: Client?)
        case invalid(String)
    }

    package struct Client: Equatable {
        package var address: [UInt8]
        package var port: UInt16
    }

    /// A v1 line is at most 107 bytes; a v2 header of ours to accept at most this (the
    /// addresses and a few TLVs, as HAProxy's send-proxy-v2-ssl sends them).
    package static let v1MaxLength = 107
    package static let v2MaxLength = 1024
    package static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    private static let v1Prefix = Array("PROXY ".utf8)

    /// Looks at the first bytes of a connection (at least what has arrived so far).
    package static func parse(_ bytes: [UInt8], v1: Bool = true, v2: Bool = true) -> Parsed {
        if v2, startsLike(bytes, v2Signature) { return bytes.count < v2Signature.count ? .incomplete : parseV2(bytes) }
        if v1, startsLike(bytes, v1Prefix) { return bytes.count < v1Prefix.count ? .incomplete : parseV1(bytes) }
        if bytes.isEmpty { return .incomplete }
        return .invalid("no PROXY header (\(v1 && v2 ? "v1 or v2" : v1 ? "v1" : "v2") expected) before the TLS bytes")
    }

    private static func startsLike(_ bytes: [UInt8], _ prefix: [UInt8]) -> Bool {
        zip(bytes, prefix).allSatisfy { $0 == $1 }
    }

    private static func parseV1(_ bytes: [UInt8]) -> Parsed {
        guard let end = bytes.prefix(v1MaxLength).firstIndex(of: 0x0A) else {
            return bytes.count >= v1MaxLength ? .invalid("PROXY v1 line longer than \(v1MaxLength) bytes") : .incomplete
        }
        guard end > 0, bytes[end - 1] == 0x0D else { return .invalid("PROXY v1 line does not end in CRLF") }
        guard bytes[..<(end - 1)].allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return .invalid("PROXY v1 line is not printable text") }
        let fields = String(decoding: bytes[..<(end - 1)], as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
        let length = end + 1
        if fields.count >= 2 && fields[1] == "UNKNOWN" { return .header(length: length, client: nil) }
        guard fields.count == 6, fields[1] == "TCP4" || fields[1] == "TCP6" else {
            return .invalid("PROXY v1 line is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
        }
        let size = fields[1] == "TCP4" ? 4 : 16
        guard let source = SocketAddress.ipBytes(String(fields[2])), source.count == size,
              let destination = SocketAddress.ipBytes(String(fields[3])), destination.count == size
        else { return .invalid("PROXY v1 addresses are not \(fields[1]) addresses") }
        guard let port = v1Port(fields[4]), v1Port(fields[5]) != nil else { return .invalid("PROXY v1 ports are not 0-65535") }
        return .header(length: length, client: Client(address: source, port: port))
    }

    private static func v1Port(_ text: Substring) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber),
              text == "0" || !text.hasPrefix("0")
        else { return nil }
        return UInt16(text)
    }

    private static func parseV2(_ bytes: [UInt8]) -> Parsed {
        guard bytes.count >= 16 else { return .incomplete }
        guard bytes[12] >> 4 == 2 else { return .invalid("PROXY v2 header of version \(bytes[12] >> 4)") }
        let command = bytes[12] & 0x0F
        guard command <= 1 else { return .invalid("PROXY v2 command \(command) is neither LOCAL nor PROXY") }
        let bodyLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = 16 + bodyLength
        guard length <= v2MaxLength else { return .invalid("PROXY v2 header of \(length) bytes (at most \(v2MaxLength))") }
        guard bytes.count >= length else { return .incomplete }
        if command == 0 { return .header(length: length, client: nil) }  // LOCAL: the balancer's own check
        let body = Array(bytes[16..<length])
        switch bytes[13] {
        case 0x11:  // TCP over IPv4: src, dst, sport, dport
            guard body.count >= 12 else { return .invalid("PROXY v2 TCP4 addresses need 12 bytes, got \(body.count)") }
            return .header(length: length, client: Client(address: Array(body[0..<4]), port: UInt16(body[8]) << 8 | UInt16(body[9])))
        case 0x21:  // TCP over IPv6
            guard body.count >= 36 else { return .invalid("PROXY v2 TCP6 addresses need 36 bytes, got \(body.count)") }
            return .header(length: length, client: Client(address: Array(body[0..<16]), port: UInt16(body[32]) << 8 | UInt16(body[33])))
        case 0x00, 0x31, 0x32:  // UNSPEC, UNIX: no TCP client to name
            return .header(length: length, client: nil)
        case let family:
            return .invalid("PROXY v2 address family 0x\(String(family, radix: 16)) is not TCP")
        }
    }
}
