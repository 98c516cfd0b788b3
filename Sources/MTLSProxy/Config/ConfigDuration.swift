/// Parses the durations of the config file: a number followed by a unit
/// (`500ms`, `10s`, `5m`, `1h`), or a bare `0` meaning "none".
public enum ConfigDuration {
    /// Returns the duration in nanoseconds, or nil when `text` is not a duration.
    public static func parseNanoseconds(_ text: String) -> UInt64? {
        if text == "0" { return 0 }
        let units: [(suffix: String, nanos: UInt64)] = [
            ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000),
        ]
        for unit in units where text.hasSuffix(unit.suffix) {
            let number = text.dropLast(unit.suffix.count)
            // "5ms" also ends in "s"; only accept when what remains is a plain number.
            guard !number.isEmpty, number.allSatisfy(\.isASCIIDigit), let value = UInt64(number) else { continue }
            let (product, overflow) = value.multipliedReportingOverflow(by: unit.nanos)
            return overflow ? nil : product
        }
        return nil
    }

    /// Renders nanoseconds back in the largest exact unit, for summaries.
    public static func describe(_ nanos: UInt64) -> String {
        if nanos == 0 { return "0" }
        for (suffix, unit) in [("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000)] as [(String, UInt64)]
        where nanos % unit == 0 {
            return "\(nanos / unit)\(suffix)"
        }
        return "\(nanos / 1_000_000)ms"
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
