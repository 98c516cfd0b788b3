import MTLSProxy

/// The relay's LDAP message framer, fed the stream in uneven chunks, against the
/// directory client's framing of the same bytes, whole messages at a time (one header
/// rule, two ways of following a stream): it stands at a boundary exactly where a
/// message ends, bytesToBoundary says where the next one ends, and a stream that is not
/// LDAP leaves it broken.
func fuzzLDAPFramer(_ data: [UInt8]) {
    // Where messages end, by DirectoryConnection.frame, and how the stream ends.
    var boundaries: Set<Int> = [0]
    var ordered = [0]
    var endsBroken = false  // the stream ends in bytes that are not LDAP
    var offset = 0
    framing: while true {
        switch DirectoryConnection.frame(Array(data[offset...])) {
        case .message(let length):
            offset += length
            boundaries.insert(offset)
            ordered.append(offset)
        case .incomplete:
            break framing
        case .invalid(let why):
            endsBroken = true
            if why.contains("oversize") {
                // Above the directory client's 16 MiB the framer still follows, up to its own limit.
                let count = Int(data[offset + 1] & 0x7f)
                let length = data[offset + 2..<offset + 2 + count].reduce(0) { $0 << 8 | Int($1) }
                endsBroken = length > LDAPMessageFramer.maxMessageLength
            }
            break framing
        }
    }

    var framer = LDAPMessageFramer()
    var position = 0
    var step = data.count
    while position < data.count {
        step = (step &* 1103515245 &+ 12345) & 0x7fff_ffff
        let chunk = Array(data[position..<min(data.count, position + 1 + step % 9)])
        let next = ordered.first { $0 > position }
        let expected: Int? = boundaries.contains(position) ? 0 : next.flatMap { $0 - position <= chunk.count ? $0 - position : nil }
        let told = chunk.withUnsafeBytes { framer.bytesToBoundary(in: $0) }
        check(told == expected, "at \(position), \(chunk.count) bytes: bytesToBoundary \(String(describing: told)), expected \(String(describing: expected))")
        chunk.withUnsafeBytes { framer.advance($0) }
        position += chunk.count
        check(framer.isAtBoundary == boundaries.contains(position), "at \(position): isAtBoundary \(framer.isAtBoundary)")
    }
    check(framer.isBroken == endsBroken, endsBroken ? "a stream that is not LDAP left the framer working" : "LDAP broke the framer")
}
