/// An `http://` URL as the revocation services use it: host, port, path. No https (an
/// OCSP answer and a CRL carry their own signatures; RFC 5019 and RFC 5280 say http).
public struct HTTPURL: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    /// Starts with "/"; includes any query.
    public var path: String

    public init?(_ text: String) {
        guard text.lowercased().hasPrefix("http://") else { return nil }
        let rest = text.dropFirst(7)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if let hash = path.firstIndex(of: "#") { path = String(path[..<hash]) }
        if path.isEmpty || path.hasPrefix("?") { path = "/" + path }
        guard !authority.contains("@"), !authority.isEmpty else { return nil }
        var port: UInt16 = 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let value = UInt16(after.dropFirst()), value > 0 else { return nil }
                port = value
            }
            authority = authority[authority.index(after: authority.startIndex)..<close]
            // Inside brackets: an IPv6 literal only.
            guard authority.contains(":"), authority.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        } else {
            if let colon = authority.lastIndex(of: ":") {
                guard let value = UInt16(authority[authority.index(after: colon)...]), value > 0 else { return nil }
                port = value
                authority = authority[..<colon]
            }
            // A name or an IPv4 address: no colon or bracket left (those need [ ]).
            guard authority.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }) else { return nil }
        }
        guard !authority.isEmpty, authority.allSatisfy(\.isASCII) else { return nil }
        host = String(authority)
        self.port = port
        self.path = path
        guard path.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else { return nil }
    }

    /// The Host header's value.
    public var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? name : "\(name):\(port)"
    }

    public var endpoint: Endpoint { host.contains(":") ? .inet6(host: host, port: port) : .inet(host: host, port: port) }

    public var description: String { "http://\(hostHeader)\(path)" }
}

/// A complete HTTP/1.1 response.
package struct HTTPReply: Equatable, Sendable {
    package var status: Int
    /// Header names in lower case, values trimmed, in order.
    package var headers: [(String, String)]
    package var body: [UInt8]

    package func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }

    package static func == (a: HTTPReply, b: HTTPReply) -> Bool {
        a.status == b.status && a.body == b.body && a.headers.map(\.0) == b.headers.map(\.0) && a.headers.map(\.1) == b.headers.map(\.1)
    }
}

/// Reads an HTTP/1.1 response from the bytes received so far: a function of the bytes
/// alone (and whether the server closed), so that unit tests and the fuzz target drive
/// it. Bodies are framed by Content-Length, chunked encoding, or the close.
package enum HTTPReplyParser {
    package enum Outcome: Equatable {
        case incomplete
        case complete(HTTPReply)
        case invalid(String)
    }

    package static let maxHeaderBytes = 16 * 1024

    package static func parse(_ input: [UInt8], closed: Bool, maxBody: Int) -> Outcome {
        guard let headEnd = find([13, 10, 13, 10], in: input, from: 0) else {
            if input.count > maxHeaderBytes { return .invalid("response header over \(maxHeaderBytes) bytes") }
            return closed ? .invalid(input.isEmpty ? "the server closed without answering" : "the server closed mid-header") : .incomplete
        }
        guard headEnd <= maxHeaderBytes else { return .invalid("response header over \(maxHeaderBytes) bytes") }
        let head = String(decoding: input[0..<headEnd], as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0] == "HTTP/1.1" || parts[0] == "HTTP/1.0", parts[1].count == 3,
              let status = Int(parts[1]), (100...999).contains(status) else {
            return .invalid("not an HTTP/1.x status line")
        }
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else { return .invalid("malformed header line") }
            let name = line[..<colon]
            guard name.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else { return .invalid("malformed header name") }
            headers.append((name.lowercased(), line[line.index(after: colon)...].trimmingSpaces()))
        }
        let bodyStart = headEnd + 4
        let rest = input[bodyStart...]
        let lengths = headers.filter { $0.0 == "content-length" }.map(\.1)
        let chunked = headers.contains { $0.0 == "transfer-encoding" && $0.1.lowercased().contains("chunked") }
        if status == 204 || status == 304 || (100..<200).contains(status) {
            return .complete(HTTPReply(status: status, headers: headers, body: []))
        }
        if chunked {
            switch dechunk(rest, maxBody: maxBody) {
            case .incomplete: return closed ? .invalid("the server closed mid-body") : .incomplete
            case .invalid(let why): return .invalid(why)
            case .complete(let body): return .complete(HTTPReply(status: status, headers: headers, body: body))
            }
        }
        if let first = lengths.first {
            guard lengths.allSatisfy({ $0 == first }), first.count <= 12, first.allSatisfy(\.isASCIIDigit), let length = Int(first) else {
                return .invalid("bad Content-Length")
            }
            guard length <= maxBody else { return .invalid("body of \(length) bytes over the limit of \(maxBody)") }
            guard rest.count >= length else { return closed ? .invalid("the server closed mid-body") : .incomplete }
            return .complete(HTTPReply(status: status, headers: headers, body: Array(rest.prefix(length))))
        }
        // Framed by the close.
        guard rest.count <= maxBody else { return .invalid("body over the limit of \(maxBody) bytes") }
        return closed ? .complete(HTTPReply(status: status, headers: headers, body: Array(rest))) : .incomplete
    }

    private enum Dechunked { case incomplete, invalid(String), complete([UInt8]) }

    private static func dechunk(_ input: ArraySlice<UInt8>, maxBody: Int) -> Dechunked {
        var body: [UInt8] = []
        var index = input.startIndex
        while true {
            guard let lineEnd = find([13, 10], in: input, from: index) else {
                return input.count - (index - input.startIndex) > 64 ? .invalid("bad chunk size line") : .incomplete
            }
            var sizeText = String(decoding: input[index..<lineEnd], as: UTF8.self)
            if let semicolon = sizeText.firstIndex(of: ";") { sizeText = String(sizeText[..<semicolon]) }
            sizeText = sizeText.trimmingSpaces()
            guard !sizeText.isEmpty, sizeText.count <= 8, let size = Int(sizeText, radix: 16), size >= 0 else {
                return .invalid("bad chunk size")
            }
            index = lineEnd + 2
            if size == 0 {
                // Trailers (ignored) end with an empty line.
                var at = index
                while true {
                    guard let end = find([13, 10], in: input, from: at) else { return .incomplete }
                    if end == at { return .complete(body) }
                    at = end + 2
                }
            }
            guard body.count + size <= maxBody else { return .invalid("body over the limit of \(maxBody) bytes") }
            guard input.endIndex - index >= size + 2 else { return .incomplete }
            body += input[index..<index + size]
            index += size
            guard input[index] == 13, input[index + 1] == 10 else { return .invalid("chunk not followed by CRLF") }
            index += 2
        }
    }

    private static func find<C: RandomAccessCollection>(_ needle: [UInt8], in haystack: C, from start: C.Index) -> C.Index?
    where C.Element == UInt8, C.Index == Int {
        guard haystack.endIndex - start >= needle.count else { return nil }
        var i = start
        while i + needle.count <= haystack.endIndex {
            if haystack[i] == needle[0] {
                var match = true
                for j in 1..<needle.count where haystack[i + j] != needle[j] { match = false; break }
                if match { return i }
            }
            i += 1
        }
        return nil
    }
}

/// The bytes of a request: POST with a body, or a conditional GET.
package enum HTTPClientRequest {
    package static func post(_ url: HTTPURL, contentType: String, body: [UInt8]) -> [UInt8] {
        let head = "POST \(url.path) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUser-Agent: mtls-proxy\r\n"
            + "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    package static func get(_ url: HTTPURL, extraHeaders: [(String, String)] = []) -> [UInt8] {
        var head = "GET \(url.path) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUser-Agent: mtls-proxy\r\nConnection: close\r\n"
        for (name, value) in extraHeaders { head += "\(name): \(value)\r\n" }
        return Array((head + "\r\n").utf8)
    }
}
