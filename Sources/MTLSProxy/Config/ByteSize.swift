/// Parses the sizes of the config file: a number of bytes, or a number with a binary
/// unit (`512KiB`, `4MiB`, `1GiB`); `K`, `M`, `G` alone mean the same.
public enum ByteSize {
    public static func parse(_ text: String) -> Int? {
        let units: [(suffix: String, factor: Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("", 1),
        ]
        for unit in units where text.hasSuffix(unit.suffix) {
            let number = text.dropLast(unit.suffix.count)
            guard !number.isEmpty, number.allSatisfy(\.isASCIIDigit), let value = Int(number) else { continue }
            let (product, overflow) = value.multipliedReportingOverflow(by: unit.factor)
            return overflow ? nil : product
        }
        return nil
    }
}
