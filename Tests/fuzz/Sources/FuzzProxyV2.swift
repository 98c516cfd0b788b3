import MTLSProxy

/// The PROXY v2 header. The proxy only builds it (no incoming PROXY parser exists yet), so
/// the input supplies the fields, and a small parser here reads the header back: same
/// addresses, ports, TLS version and (at most 64 bytes of) CN, lengths that add up, and
/// under slapd's 520-byte limit.
func fuzzProxyV2(_ data: [UInt8]) {
    var input = data[...]
    func take(_ count: Int) -> [UInt8] {
        let bytes = Array(input.prefix(count))
        input = input.dropFirst(count)
        return bytes + [UInt8](repeating: 0, count: count - bytes.count)
    }
    let flags = take(1)[0]
    func address(_ v6: Bool) -> (bytes: [UInt8], port: UInt16) {
        let bytes = take(v6 ? 16 : 4)
        let port = take(2)
        return (bytes, UInt16(port[0]) << 8 | UInt16(port[1]))
    }
    let client = flags & 1 != 0 ? address(flags & 4 != 0) : nil
    let local = flags & 2 != 0 ? address(flags & 4 != 0 ? flags & 8 == 0 : flags & 8 != 0) : nil
    let tlsVersion = flags & 16 != 0 ? String(decoding: take(Int(take(1)[0]) % 32), as: UTF8.self) : nil
    let commonName = flags & 32 != 0 ? String(decoding: input, as: UTF8.self) : nil

    let header = ProxyProtocolV2.header(client: client, local: local, tlsVersion: tlsVersion, commonName: commonName)

    check(header.count <= 520, "header of \(header.count) bytes is over slapd's limit")
    check(Array(header.prefix(12)) == ProxyProtocolV2.signature && header[12] == 0x21, "signature or version")
    let length = Int(header[14]) << 8 | Int(header[15])
    check(header.count == 16 + length, "length field \(length) for \(header.count) bytes")
    var rest = header[16...]
    if let client, let local, client.bytes.count == local.bytes.count {
        let v4 = client.bytes.count == 4
        check(header[13] == (v4 ? 0x11 : 0x21), "family \(header[13])")
        let size = v4 ? 4 : 16
        check(Array(rest.prefix(size)) == client.bytes && Array(rest.dropFirst(size).prefix(size)) == local.bytes, "addresses")
        rest = rest.dropFirst(2 * size)
        check(Array(rest.prefix(4)) == [UInt8(client.port >> 8), UInt8(client.port & 0xff), UInt8(local.port >> 8), UInt8(local.port & 0xff)], "ports")
        rest = rest.dropFirst(4)
    } else {
        check(header[13] == 0x00, "UNSPEC family without two addresses of one kind")
    }
    let tlvs = readTLVs(Array(rest))
    check(tlvs?.count == 1 && tlvs?.first?.type == 0x20, "one PP2_TYPE_SSL TLV")
    let ssl = tlvs![0].value
    check(ssl.count >= 5 && ssl[0] == 0x07 && ssl[1..<5].allSatisfy { $0 == 0 }, "SSL client flags and verify")
    let subTLVs = readTLVs(Array(ssl.dropFirst(5)))
    check(subTLVs != nil, "SSL sub-TLVs do not add up")
    check(subTLVs!.first { $0.type == 0x21 }?.value == tlsVersion.map { Array($0.utf8) }, "TLS version")
    let expectedCN = commonName.map { Array($0.utf8.prefix(ProxyProtocolV2.maxCommonNameBytes)) }
    check(subTLVs!.first { $0.type == 0x22 }?.value == expectedCN, "CN")
}

/// Type-length-value entries that fill `bytes` exactly; nil when they do not.
private func readTLVs(_ bytes: [UInt8]) -> [(type: UInt8, value: [UInt8])]? {
    var entries: [(type: UInt8, value: [UInt8])] = []
    var offset = 0
    while offset < bytes.count {
        guard offset + 3 <= bytes.count else { return nil }
        let length = Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
        guard offset + 3 + length <= bytes.count else { return nil }
        entries.append((bytes[offset], Array(bytes[offset + 3..<offset + 3 + length])))
        offset += 3 + length
    }
    return entries
}
