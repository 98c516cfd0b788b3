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

    /// The whole input at once (what the reader says after being fed all of it).
    package static func parse(_ input: [UInt8], closed: Bool, maxBody: Int) -> Outcome {
        var reader = HTTPReplyReader(maxBody: maxBody)
        return reader.feed(input, closed: closed)
    }

    static func find<C: RandomAccessCollection>(_ needle: [UInt8], in haystack: C, from start: C.Index) -> C.Index?
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

/// The same reading, fed as the bytes arrive: each byte is looked at about once (no
/// re-parsing of everything received at every read), and every part is bounded: the
/// head and the chunked trailers by `HTTPReplyParser.maxHeaderBytes` each, the body by
/// `maxBody`, a chunk-size line by 64 bytes, and all the bytes received by
/// `rawLimit`, so that a server sending for ever meets a limit, not only the timeout.
package struct HTTPReplyReader {
    package let maxBody: Int
    /// Head + body + framing: chunked framing can double small chunks, not more.
    package var rawLimit: Int { 2 * maxBody + 2 * HTTPReplyParser.maxHeaderBytes + 4096 }

    private enum Framing { case length(Int), chunked, close }
    private var input: [UInt8] = []
    /// How far the search for the end of the head has gone.
    private var scanned = 0
    private var status = 0
    private var headers: [(String, String)] = []
    private var bodyStart = 0
    private var framing: Framing?
    /// Chunked: where the next chunk-size line (or trailer line) starts, what was
    /// decoded, and the trailer bytes seen.
    private var cursor = 0
    private var body: [UInt8] = []
    private var inTrailers = false
    private var trailerBytes = 0
    private var verdict: HTTPReplyParser.Outcome?

    package init(maxBody: Int) { self.maxBody = maxBody }

    /// Adds the bytes just received (the server closed when `closed`); the verdict so
    /// far. Once complete or invalid, it never changes.
    package mutating func feed(_ bytes: some Collection<UInt8>, closed: Bool) -> HTTPReplyParser.Outcome {
        if let verdict { return verdict }
        input.append(contentsOf: bytes)
        let outcome = step(closed: closed)
        if outcome != .incomplete { verdict = outcome; input = [] }
        return outcome
    }

    private mutating func step(closed: Bool) -> HTTPReplyParser.Outcome {
        if framing == nil {
            if let early = readHead(closed: closed) { return early }
        }
        switch framing! {
        case .length(let length):
            guard input.count - bodyStart >= length else {
                return closed ? .invalid("the server closed mid-body") : .incomplete
            }
            return .complete(HTTPReply(status: status, headers: headers, body: Array(input[bodyStart..<bodyStart + length])))
        case .close:
            guard input.count - bodyStart <= maxBody else { return .invalid("body over the limit of \(maxBody) bytes") }
            return closed ? .complete(HTTPReply(status: status, headers: headers, body: Array(input[bodyStart...]))) : .incomplete
        case .chunked:
            switch dechunk() {
            case .incomplete:
                if input.count > rawLimit { return .invalid("response over \(rawLimit) bytes") }
                return closed ? .invalid("the server closed mid-body") : .incomplete
            case let other: return other
            }
        }
    }

    /// Reads the head once it is all there: sets the framing, or gives the verdict.
    private mutating func readHead(closed: Bool) -> HTTPReplyParser.Outcome? {
        let maxHeaderBytes = HTTPReplyParser.maxHeaderBytes
        guard let headEnd = HTTPReplyParser.find([13, 10, 13, 10], in: input, from: max(0, scanned - 3)) else {
            scanned = input.count
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
        self.status = status
        self.headers = headers
        bodyStart = headEnd + 4
        if status == 204 || status == 304 || (100..<200).contains(status) {
            return .complete(HTTPReply(status: status, headers: headers, body: []))
        }
        let lengths = headers.filter { $0.0 == "content-length" }.map(\.1)
        if headers.contains(where: { $0.0 == "transfer-encoding" && $0.1.lowercased().contains("chunked") }) {
            framing = .chunked
            cursor = bodyStart
        } else if let first = lengths.first {
            guard lengths.allSatisfy({ $0 == first }), first.count <= 12, first.allSatisfy(\.isASCIIDigit), let length = Int(first) else {
                return .invalid("bad Content-Length")
            }
            guard length <= maxBody else { return .invalid("body of \(length) bytes over the limit of \(maxBody)") }
            framing = .length(length)
        } else {
            framing = .close
        }
        return nil
    }

    /// Decodes the chunks that have arrived, from `cursor` on.
    private mutating func dechunk() -> HTTPReplyParser.Outcome {
        let maxHeaderBytes = HTTPReplyParser.maxHeaderBytes
        while true {
            if inTrailers {
                // Trailers (ignored) end with an empty line; all of them within the
                // header limit.
                guard let end = HTTPReplyParser.find([13, 10], in: input, from: cursor) else {
                    if trailerBytes + input.count - cursor > maxHeaderBytes {
                        return .invalid("chunked trailers over \(maxHeaderBytes) bytes")
                    }
                    return .incomplete
                }
                if end == cursor { return .complete(HTTPReply(status: status, headers: headers, body: body)) }
                trailerBytes += end - cursor + 2
                if trailerBytes > maxHeaderBytes { return .invalid("chunked trailers over \(maxHeaderBytes) bytes") }
                cursor = end + 2
                continue
            }
            guard let lineEnd = HTTPReplyParser.find([13, 10], in: input, from: cursor) else {
                return input.count - cursor > 64 ? .invalid("bad chunk size line") : .incomplete
            }
            guard lineEnd - cursor <= 64 else { return .invalid("bad chunk size line") }
            var sizeText = String(decoding: input[cursor..<lineEnd], as: UTF8.self)
            if let semicolon = sizeText.firstIndex(of: ";") { sizeText = String(sizeText[..<semicolon]) }
            sizeText = sizeText.trimmingSpaces()
            guard !sizeText.isEmpty, sizeText.count <= 8, let size = Int(sizeText, radix: 16), size >= 0 else {
                return .invalid("bad chunk size")
            }
            if size == 0 {
                inTrailers = true
                cursor = lineEnd + 2
                continue
            }
            guard body.count + size <= maxBody else { return .invalid("body over the limit of \(maxBody) bytes") }
            let dataStart = lineEnd + 2
            guard input.count - dataStart >= size + 2 else { return .incomplete }
            body += input[dataStart..<dataStart + size]
            guard input[dataStart + size] == 13, input[dataStart + size + 1] == 10 else { return .invalid("chunk not followed by CRLF") }
            cursor = dataStart + size + 2
        }
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
