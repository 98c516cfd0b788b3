/// A certificate serial number as a small value: up to 24 bytes packed into three
/// words, so that a 100,000-entry CRL is a flat hash set of a few MiB instead of
/// 100,000 separately allocated arrays. RFC 5280 caps serials at 20 bytes; a longer
/// one keeps its bytes on the side.
package struct SerialNumber: Hashable, Sendable, CustomStringConvertible {
    private var w0: UInt64 = 0
    private var w1: UInt64 = 0
    private var w2: UInt64 = 0
    private var length: UInt8 = 0
    private var overflow: [UInt8]?

    /// From the DER bytes of the number; leading zero bytes are ignored, so that a
    /// certificate and a CRL entry compare equal however each was encoded.
    package init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        let trimmed = Array(bytes.drop(while: { $0 == 0 }))
        guard trimmed.count <= 24 else {
            overflow = trimmed
            length = 255
            return
        }
        length = UInt8(trimmed.count)
        for (index, byte) in trimmed.enumerated() {
            let shift = UInt64(8 * (7 - index % 8))
            switch index / 8 {
            case 0: w0 |= UInt64(byte) << shift
            case 1: w1 |= UInt64(byte) << shift
            default: w2 |= UInt64(byte) << shift
            }
        }
    }

    package var bytes: [UInt8] {
        if let overflow { return overflow }
        if length == 0 { return [0] }
        return (0..<Int(length)).map { index in
            let word = index < 8 ? w0 : index < 16 ? w1 : w2
            return UInt8(truncatingIfNeeded: word >> UInt64(8 * (7 - index % 8)))
        }
    }

    package var description: String { Hex.encode(bytes) }
}
