import Glibc

// The program's entry point. SwiftPM links an executable with `main` renamed to
// `<module>_main`, so libFuzzer's own main is never linked in: this one picks the target
// named by MTLS_FUZZ_TARGET (scripts/fuzz sets it) and hands over to libFuzzer's driver.
// One binary holds every target, so the instrumented library is built and linked once.

/// libFuzzer's driver: `int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*)(const uint8_t *, size_t))`.
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// The target chosen by MTLS_FUZZ_TARGET, set once before fuzzing starts.
nonisolated(unsafe) private var selected: (@Sendable ([UInt8]) -> Void)?

@_cdecl("mtls_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    let name = getenv("MTLS_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    if name == "list" {
        for target in fuzzTargets.keys.sorted() { print(target) }
        return 0
    }
    guard let target = fuzzTargets[name] else {
        print("MTLS_FUZZ_TARGET must be one of: \(fuzzTargets.keys.sorted().joined(separator: " ")), got '\(name)'")
        return 2
    }
    selected = target
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments, fuzzTestOneInput)
}

/// Also exported under libFuzzer's name: its archive's own main refers to it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected!(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Fails the run with a message: libFuzzer saves the input as a crash.
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID,
           line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
