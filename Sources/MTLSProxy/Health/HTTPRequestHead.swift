/// The part of an HTTP/1.1 request the health endpoint looks at.
public struct HTTPRequestHead: Equatable, Sendable {
    public var method: String
    public var path: String

    public enum ParseResult: Equatable, Sendable {
        case incomplete
        case invalid
        case request(HTTPRequestHead)
    }

    /// Parses once the blank line that ends the head has arrived. The body, if any, is
    /// ignored: no health request needs one.
    public static func parse(_ bytes: [UInt8]) -> ParseResult {
        let end: [UInt8] = [13, 10, 13, 10]
        guard bytes.count >= 4, let headEnd = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<$0 + 4]) == end })
        else { return .incomplete }
        guard let lineEnd = bytes.firstIndex(of: 13), lineEnd <= headEnd else { return .invalid }
        let parts = bytes[..<lineEnd].split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].starts(with: Array("HTTP/1.".utf8)) else { return .invalid }
        let method = String(decoding: parts[0], as: UTF8.self)
        var path = String(decoding: parts[1], as: UTF8.self)
        guard !method.isEmpty, method.allSatisfy({ $0.isUppercase }), path.hasPrefix("/") else { return .invalid }
        if let query = path.firstIndex(of: "?") { path = String(path[..<query]) }
        return .request(HTTPRequestHead(method: method, path: path))
    }
}

/// A complete HTTP response, always with Connection: close.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: String

    public func serialized() -> [UInt8] {
        let reasons = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
                       431: "Request Header Fields Too Large", 503: "Service Unavailable"]
        var head = "HTTP/1.1 \(status) \(reasons[status] ?? "Status")\r\n"
        head += "Content-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n"
        if status == 405 { head += "Allow: GET, HEAD\r\n" }
        head += "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + Array(body.utf8)
    }
}
