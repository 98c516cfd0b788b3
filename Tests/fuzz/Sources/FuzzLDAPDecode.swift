import MTLSProxy

/// The directory's answers: the byte stream is cut into messages as DirectoryConnection
/// does and each message is decoded (bind and search responses, search entries); the
/// whole input is also decoded as one message.
func fuzzLDAPDecode(_ data: [UInt8]) {
    _ = try? LDAPMessages.decode(data)
    var rest = data[...]
    while true {
        switch DirectoryConnection.frame(Array(rest)) {
        case .incomplete, .invalid:
            return
        case .message(let length):
            check(length >= 2 && length <= rest.count, "frame length \(length) of \(rest.count) bytes")
            if let response = try? LDAPMessages.decode(Array(rest.prefix(length))), response.operation == 4 {
                check(response.values.allSatisfy { $0.count < length }, "values larger than their message")
            }
            rest = rest.dropFirst(length)
        }
    }
}
