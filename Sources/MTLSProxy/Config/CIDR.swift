/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is the block of
/// that one address): what `trusted_proxies` lists.
public struct CIDR: Equatable, Sendable, CustomStringConvertible {
    let network: [UInt8]
    let prefixLength: Int

    public static func parse(_ text: String) -> CIDR? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let bytes = SocketAddress.ipBytes(String(parts[0])) else { return nil }
        let bits = bytes.count * 8
        var length = bits
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...bits).contains(given), parts[1].allSatisfy(\.isNumber) else { return nil }
            length = given
        }
        return CIDR(network: masked(bytes, length), prefixLength: length)
    }

    /// Whether the address (4 or 16 bytes) lies in the block. An IPv4-mapped IPv6
    /// address (::ffff:a.b.c.d) counts as its IPv4 address.
    func contains(_ address: [UInt8]) -> Bool {
        var address = address
        if address.count == 16 && network.count == 4 && address.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
            address = Array(address.suffix(4))
        }
        return address.count == network.count && Self.masked(address, prefixLength) == network
    }

    private static func masked(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let keep = max(0, min(8, length - index * 8))
            return keep == 8 ? byte : byte & ~(0xff >> keep)
        }
    }

    public var description: String {
        let text = network.count == 4
            ? network.map(String.init).joined(separator: ".")
            : stride(from: 0, to: 16, by: 2).map { String(Int(network[$0]) << 8 | Int(network[$0 + 1]), radix: 16) }.joined(separator: ":")
        return "\(text)/\(prefixLength)"
    }
}
