/// A configuration problem, reported with the file and line where it was found.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    /// What is wrong, before the caller knows where: parsers of single values return it.
    public struct Message: Error, ExpressibleByStringInterpolation, Sendable {
        public let text: String
        public init(_ text: String) { self.text = text }
        public init(stringLiteral value: String) { self.text = value }
    }

    public let file: String?
    public let line: Int?
    public let message: String

    public init(file: String?, line: Int?, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        switch (file, line) {
        case let (file?, line?): return "\(file):\(line): \(message)"
        case let (file?, nil): return "\(file): \(message)"
        default: return message
        }
    }
}
