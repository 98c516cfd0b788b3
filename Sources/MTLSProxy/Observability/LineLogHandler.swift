import Logging

/// Writes one line per event to stderr, as `text` (key=value) or `json`.
///
/// Known keys come first in a fixed order, so that connection lines read the same way
/// every time; the rest follow alphabetically.
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level
    let format: LogFormat

    static let keyOrder = [
        "listener", "client", "subject", "issuer", "serial", "tls", "cipher", "resumed", "bytes_in", "bytes_out",
        "duration_ms", "end", "reason", "detail",
    ]

    static let numericKeys: Set<String> = ["bytes_in", "bytes_out", "duration_ms"]

    public init(format: LogFormat, level: Logger.Level) {
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let keys = merged.keys.sorted { a, b in
            let ia = Self.keyOrder.firstIndex(of: a) ?? Int.max, ib = Self.keyOrder.firstIndex(of: b) ?? Int.max
            return ia != ib ? ia < ib : a < b
        }
        let level = Self.levelName(event.level)
        var line: String
        switch format {
        case .text:
            line = "\(Timestamp.nowWithMillis()) \(level) \(event.message)"
            for key in keys { line += " \(key)=\(Self.textValue("\(merged[key]!)"))" }
        case .json:
            line = "{\"time\":\(JSON.quote(Timestamp.nowWithMillis())),\"level\":\(JSON.quote(level)),\"msg\":\(JSON.quote("\(event.message)"))"
            for key in keys {
                let value = "\(merged[key]!)"
                // Counts and durations as JSON numbers, everything else as strings.
                let numeric = Self.numericKeys.contains(key) && !value.isEmpty && value.allSatisfy(\.isASCIIDigit)
                line += ",\(JSON.quote(key)):\(numeric ? value : JSON.quote(value))"
            }
            line += "}"
        }
        StandardError.write(line + "\n")
    }

    static func levelName(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "debug"
        case .info, .notice: return "info"
        case .warning: return "warn"
        case .error, .critical: return "error"
        }
    }

    /// Quotes values with spaces, quotes or equals signs (subjects always have commas
    /// and often spaces), so that the line splits cleanly on spaces.
    static func textValue(_ value: String) -> String {
        if !value.isEmpty && !value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\n" }) { return value }
        return JSON.quote(value)
    }
}

extension LogLevelSetting {
    public var swiftLogLevel: Logger.Level {
        switch self {
        case .error: return .error
        case .warn: return .warning
        case .info: return .info
        case .debug: return .debug
        }
    }
}

enum JSON {
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
