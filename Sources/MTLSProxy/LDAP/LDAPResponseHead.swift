/// The first bytes of an LDAPMessage in the backend's stream: enough to know whose
/// message it is (its messageID), what it is (the protocolOp's tag) and how long it is,
/// without the rest having arrived.
/// The relay uses it to find the response to the proxy's own bind among the backend's
/// messages, which it passes on whole or in part without reading further.
enum LDAPResponseHead: Equatable {
    case incomplete
    case notLDAP
    case message(messageID: Int, operationTag: UInt8, length: Int)

    /// BindResponse ::= [APPLICATION 1] SEQUENCE: the tag byte 0x61.
    static let bindResponseTag: UInt8 = 0x61

    static func read<Bytes: RandomAccessCollection<UInt8>>(_ bytes: Bytes) -> LDAPResponseHead where Bytes.Index == Int {
        guard case .message(let header, let content) = LDAPMessageFramer.header(of: bytes) else {
            return LDAPMessageFramer.header(of: bytes) == .incomplete ? .incomplete : .notLDAP
        }
        // messageID INTEGER: tag 0x02, a one-byte length of at most 4, the value.
        let start = bytes.startIndex + header
        guard bytes.count >= header + 2 else { return .incomplete }
        let length = Int(bytes[start + 1])
        guard bytes[start] == 0x02, (1...4).contains(length), content >= 3 + length else { return .notLDAP }
        guard bytes.count >= header + 3 + length else { return .incomplete }
        let id = bytes[(start + 2)..<(start + 2 + length)].reduce(0) { $0 << 8 | Int($1) }
        return .message(messageID: id, operationTag: bytes[start + 2 + length], length: header + content)
    }
}
