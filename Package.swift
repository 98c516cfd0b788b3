// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "mtls-proxy",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mtls-proxy", targets: ["mtls-proxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        // Only what Swift cannot call directly: GNU-only libc calls, a C global, headers
        // that the Glibc module does not export (epoll, signalfd, timerfd).
        .target(
            name: "CGnuTLSShim",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("gnutls")]
        ),
        .target(
            name: "MTLSProxy",
            dependencies: [
                "CGnuTLSShim",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            // Release builds leave out Swift's run-time exclusivity checks: a callgrind
            // profile of the relay put them at about 18 % of the proxy's user-space
            // instructions (every mutation of a buffer held by a class is checked).
            // Debug builds, which the tests run, keep them. See docs/performance.md.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "mtls-proxy",
            dependencies: [
                "MTLSProxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "MTLSProxyTests",
            dependencies: ["MTLSProxy", .product(name: "SwiftASN1", package: "swift-asn1")]
        ),
    ]
)

// libFuzzer targets (scripts/fuzz), only when asked for: they have no main of their own
// (libFuzzer's comes with -sanitize=fuzzer), so a plain `swift build` must not see them.
if Context.environment["MTLS_PROXY_FUZZ"] == "1" {
    package.targets.append(.executableTarget(
        name: "mtls-fuzz", dependencies: ["MTLSProxy", "CGnuTLSShim", .product(name: "SwiftASN1", package: "swift-asn1")],
        path: "Tests/fuzz/Sources"))
    package.products.append(.executable(name: "mtls-fuzz", targets: ["mtls-fuzz"]))
}
