import MTLSProxy

/// The directory's answers. Two halves:
/// - the bytes as a stream, cut into messages as DirectoryConnection does, each decoded
///   (bind and search responses, search entries), and the whole input as one message:
///   nothing may crash;
/// - the bytes as the fields of a SearchResultEntry and a SearchResultDone, encoded here in
///   BER (length forms picked by the input, as servers differ: slapd writes the shortest,
///   Active Directory four length bytes) and decoded: the fields must come back.
func fuzzLDAPDecode(_ data: [UInt8]) {
    _ = try? LDAPMessages.decode(data)
    var rest = data[...]
    framing: while true {
        switch DirectoryConnection.frame(Array(rest)) {
        case .incomplete, .invalid:
            break framing
        case .message(let length):
            check(length >= 2 && length <= rest.count, "frame length \(length) of \(rest.count) bytes")
            _ = try? LDAPMessages.decode(Array(rest.prefix(length)))
            rest = rest.dropFirst(length)
        }
    }
    roundTrip(data)
}

private func roundTrip(_ data: [UInt8]) {
    guard data.count >= 6 else { return }
    var encoder = BEREncoder(lengthForms: data[0])
    let id = Int(data[1]) << 16 | Int(data[2]) << 8 | Int(data[3])
    let resultCode = Int(data[4]) << 8 | Int(data[5])
    // The rest: the DN, then attribute values, separated by 0xFF.
    let pieces = data.dropFirst(6).split(separator: 0xFF, omittingEmptySubsequences: false).map { Array($0) }
    let dn = String(decoding: pieces[0], as: UTF8.self)
    let values = Array(pieces.dropFirst())

    let entry = encoder.tlv(0x30, encoder.integer(0x02, id) + encoder.tlv(0x64,
        encoder.tlv(0x04, Array(dn.utf8)) + encoder.tlv(0x30,
            encoder.tlv(0x30, encoder.tlv(0x04, Array("userCertificate;binary".utf8)) + encoder.tlv(0x31, values.flatMap { encoder.tlv(0x04, $0) })))))
    check(DirectoryConnection.frame(entry + [0x30]) == .message(length: entry.count), "the entry does not frame as one message")
    guard let decodedEntry = try? LDAPMessages.decode(entry) else { return check(false, "a SearchResultEntry does not decode") }
    check(decodedEntry.messageID == id && decodedEntry.operation == 4, "entry header \(decodedEntry)")
    check(decodedEntry.values == values, "entry values \(decodedEntry.values), expected \(values)")

    let done = encoder.tlv(0x30, encoder.integer(0x02, id) + encoder.tlv(0x65,
        encoder.integer(0x0A, resultCode) + encoder.tlv(0x04, []) + encoder.tlv(0x04, Array("diagnostic".utf8))))
    guard let decodedDone = try? LDAPMessages.decode(done) else { return check(false, "a SearchResultDone does not decode") }
    check(decodedDone.messageID == id && decodedDone.operation == 5 && decodedDone.resultCode == resultCode,
          "SearchResultDone \(decodedDone), expected id \(id) resultCode \(resultCode)")
}

/// A small BER encoder whose length forms cycle through the bits of one byte: a set bit
/// writes the next length in the four-byte long form, a clear one in the shortest form.
private struct BEREncoder {
    var lengthForms: UInt8
    var next = 0

    mutating func length(_ count: Int) -> [UInt8] {
        let long = lengthForms >> (next % 8) & 1 != 0
        next += 1
        if !long && count < 0x80 { return [UInt8(count)] }
        if !long {
            let bytes = withUnsafeBytes(of: UInt32(count).bigEndian) { Array($0) }.drop { $0 == 0 }
            return [0x80 | UInt8(bytes.count)] + bytes
        }
        return [0x84] + withUnsafeBytes(of: UInt32(count).bigEndian) { Array($0) }
    }

    mutating func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] { [tag] + length(content.count) + content }

    /// A non-negative INTEGER or ENUMERATED, shortest two's complement.
    mutating func integer(_ tag: UInt8, _ value: Int) -> [UInt8] {
        var bytes = withUnsafeBytes(of: UInt64(value).bigEndian) { Array($0) }.drop { $0 == 0 }
        if bytes.isEmpty || bytes.first! >= 0x80 { bytes.insert(0, at: bytes.startIndex) }
        return tlv(tag, Array(bytes))
    }
}
