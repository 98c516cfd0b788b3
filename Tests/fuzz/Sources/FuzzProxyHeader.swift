import MTLSProxy

/// The inbound PROXY header (v1 and v2), as the first bytes of a connection arrive: the
/// verdict on a whole input must agree with the verdict on every prefix of it (a prefix
/// of a header is incomplete, never invalid nor a different header), a header's length
/// lies within what was read and within the limits, and bytes after it do not change it.
func fuzzProxyHeader(_ data: [UInt8]) {
    let whole = InboundProxyHeader.parse(data)
    switch whole {
    case .header(let length, let client):
        check(length <= data.count, "header of \(length) bytes from \(data.count)")
        check(length <= max(InboundProxyHeader.v1MaxLength, InboundProxyHeader.v2MaxLength), "header over the limits")
        check(InboundProxyHeader.parse(Array(data.prefix(length))) == whole, "the header alone reads differently")
        check(client.map { $0.address.count == 4 || $0.address.count == 16 } ?? true, "client address size")
        for cut in stride(from: 0, to: length, by: max(1, length / 16)) {
            check(InboundProxyHeader.parse(Array(data.prefix(cut))) == .incomplete, "a prefix of \(cut) bytes is not incomplete")
        }
    case .invalid:
        check(!data.isEmpty, "no bytes cannot be invalid")
    case .incomplete:
        check(data.count < max(InboundProxyHeader.v1MaxLength, InboundProxyHeader.v2MaxLength), "incomplete after the limit")
    }
}
