import MTLSProxy

/// The health endpoint's request head, as the bytes arrive: a head is complete at the
/// first blank line, and what follows it never changes the verdict.
func fuzzHTTPHead(_ data: [UInt8]) {
    let result = HTTPRequestHead.parse(data)
    let blankLine: [UInt8] = [13, 10, 13, 10]
    let hasBlankLine = data.count >= 4 && (0...data.count - 4).contains { Array(data[$0..<$0 + 4]) == blankLine }
    check((result == .incomplete) == !hasBlankLine, "incomplete iff no blank line yet")
    if case .request(let head) = result {
        check(!head.method.isEmpty && head.path.hasPrefix("/") && !head.path.contains("?"), "bad head \(head)")
    }
    if result != .incomplete {
        check(HTTPRequestHead.parse(data + Array("GET / HTTP/1.1\r\n\r\n".utf8)) == result, "later bytes changed the verdict")
    }
}
