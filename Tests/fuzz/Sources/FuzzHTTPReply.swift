import MTLSProxy

/// The OCSP responder's (or a CRL server's) HTTP response, as the bytes arrive: a
/// verdict reached on a prefix never changes when more bytes come, bodies stay within the
/// limit, and a text that is not an http:// URL never becomes one.
func fuzzHTTPReply(_ data: [UInt8]) {
    let maxBody = 4096
    let whole = HTTPReplyParser.parse(data, closed: false, maxBody: maxBody)
    let closed = HTTPReplyParser.parse(data, closed: true, maxBody: maxBody)
    check(closed != .incomplete, "a closed stream must have a verdict")
    for outcome in [whole, closed] {
        if case .complete(let reply) = outcome {
            check(reply.body.count <= maxBody, "body over the limit")
            check((100...999).contains(reply.status), "status \(reply.status)")
        }
    }
    // Every prefix that is already complete or invalid says what the whole says.
    let cuts = Set([data.count / 3, data.count / 2, data.count - min(data.count, 1)])
    for cut in cuts where cut < data.count {
        let early = HTTPReplyParser.parse(Array(data[0..<cut]), closed: false, maxBody: maxBody)
        if case .complete = early { check(early == whole, "a complete prefix changed its mind") }
        if case .invalid = early, case .complete = whole { check(false, "an invalid prefix became complete") }
    }
    let text = String(decoding: data.prefix(200), as: UTF8.self)
    if let url = HTTPURL(text) {
        check(text.lowercased().hasPrefix("http://") && url.path.hasPrefix("/") && !url.host.isEmpty, "bad URL \(url)")
        check(HTTPURL(url.description) == url, "URL does not read back: \(url)")
    }
}
