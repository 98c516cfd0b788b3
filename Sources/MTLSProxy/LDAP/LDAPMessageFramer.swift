/// Follows the message boundaries of an LDAP byte stream by BER length alone: each
/// LDAPMessage is a SEQUENCE (tag 0x30) with a definite length. Contents are skipped,
/// never parsed or copied, so the cost is per message, not per byte.
///
/// The relay feeds it the bytes it has sent to the client; the proxy can then tell
/// whether the client stands between two messages, and if not, how many more bytes
/// finish the one in flight. That is where a Notice of Disconnection may go.
package struct LDAPMessageFramer: Equatable {
    private enum State: Equatable {
        /// Between messages: the next byte is a tag.
        case tag
        case firstLengthByte
        case longLength(remaining: Int, value: Int)
        case content(remaining: Int)
        /// Not LDAP (another tag, indefinite or absurd length): boundaries are unknown.
        case broken
    }

    /// LDAP messages above this are refused as framing errors (slapd's default
    /// sockbuf_max_incoming is far lower for clients; results can be large, not this).
    package static let maxMessageLength = 1 << 30

    private var state = State.tag

    package init() {}

    package var isAtBoundary: Bool { state == .tag }
    package var isBroken: Bool { state == .broken }

    /// Advances over bytes of the stream. Generic over the byte collection, so that the
    /// relay can hand it its raw buffer memory and others an array; specialised by the
    /// compiler within the module.
    package mutating func advance<Bytes: RandomAccessCollection<UInt8>>(_ bytes: Bytes) where Bytes.Index == Int {
        _ = consume(bytes, stopAtBoundary: false)
    }

    /// How many of `bytes` (the next bytes of the stream) finish the message in flight:
    /// 0 at a boundary, nil when `bytes` end before the message does or the stream is
    /// not LDAP. Does not change the framer.
    package func bytesToBoundary<Bytes: RandomAccessCollection<UInt8>>(in bytes: Bytes) -> Int? where Bytes.Index == Int {
        if isAtBoundary { return 0 }
        var probe = self
        let used = probe.consume(bytes, stopAtBoundary: true)
        return probe.isAtBoundary ? used : nil
    }

    /// The header of the message that starts `bytes` (which start at a boundary), by the
    /// same rule as the stream: for a reader that holds whole messages (the directory
    /// client). Whether the message is complete is `bytes.count >= header + content`.
    package enum Header: Equatable {
        /// The tag and length are not all there yet.
        case incomplete
        case message(headerLength: Int, contentLength: Int)
        /// Another tag than SEQUENCE, an indefinite or over-long length form, or a length
        /// above `maxMessageLength`.
        case notLDAP
    }

    package static func header<Bytes: RandomAccessCollection<UInt8>>(of bytes: Bytes) -> Header where Bytes.Index == Int {
        var framer = LDAPMessageFramer()
        // Byte by byte until the length is known: at most 6 steps.
        for used in stride(from: 1, through: min(bytes.count, 6), by: 1) {
            _ = framer.consume(bytes[bytes.startIndex + used - 1..<bytes.startIndex + used], stopAtBoundary: true)
            switch framer.state {
            case .broken: return .notLDAP
            case .tag: return .message(headerLength: used, contentLength: 0)
            case .content(let remaining): return .message(headerLength: used, contentLength: remaining)
            case .firstLengthByte, .longLength: continue
            }
        }
        return .incomplete
    }

    /// Consumes bytes; with `stopAtBoundary`, stops at the first message end reached.
    private mutating func consume<Bytes: RandomAccessCollection<UInt8>>(_ bytes: Bytes, stopAtBoundary: Bool) -> Int
    where Bytes.Index == Int {
        var index = 0
        let start = bytes.startIndex
        while index < bytes.count {
            switch state {
            case .broken:
                return bytes.count
            case .tag:
                state = bytes[start + index] == 0x30 ? .firstLengthByte : .broken
                index += 1
            case .firstLengthByte:
                let byte = Int(bytes[start + index])
                index += 1
                if byte < 0x80 {
                    state = byte == 0 ? .tag : .content(remaining: byte)
                } else if byte == 0x80 || byte > 0x84 {
                    state = .broken  // indefinite length (forbidden in LDAP) or over 4 length bytes
                } else {
                    state = .longLength(remaining: byte & 0x7f, value: 0)
                }
            case .longLength(let remaining, let value):
                let length = value << 8 | Int(bytes[start + index])
                index += 1
                if remaining > 1 {
                    state = .longLength(remaining: remaining - 1, value: length)
                } else if length > Self.maxMessageLength {
                    state = .broken
                } else {
                    state = length == 0 ? .tag : .content(remaining: length)
                }
            case .content(let remaining):
                let skip = min(remaining, bytes.count - index)
                index += skip
                state = remaining == skip ? .tag : .content(remaining: remaining - skip)
            }
            if stopAtBoundary && state == .tag { return index }
        }
        return index
    }
}
