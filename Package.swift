// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "farm",
    products: [
        .executable(name: "farm", targets: ["farm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // One system-library target per C library; each is touched by one Swift wrapper file.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CGit2", pkgConfig: "libgit2", providers: [.apt(["libgit2-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Linux calls Glibc does not wrap for Swift (a child's parent-death signal), as static inline functions.
        .systemLibrary(name: "CFarmLinux"),

        // The engine: graph, task contract, keys, scheduler, explain, store and support. It knows
        // nothing of kernels; the compiler keeps it that way (it does not import FarmKit).
        .target(
            name: "FarmEngine",
            dependencies: ["CSQLite", "COpenSSL", "CFarmLinux"]
        ),
        // The product on the engine: manifest, families, task kinds, repository, lab, capture.
        .target(
            name: "FarmKit",
            dependencies: [
                "FarmEngine", "CArchive", "CCurl", "CGit2", "CZlib",
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(
            name: "farm",
            dependencies: [
                "FarmEngine", "FarmKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Task kinds made up for the engine's tests and benchmark: they exercise the graph, store
        // and scheduler without the real kinds. Not part of the product.
        .target(
            name: "SyntheticKinds",
            dependencies: ["FarmEngine", "FarmKit"],
            path: "Tests/SyntheticKinds"
        ),
        .executableTarget(
            name: "farm-bench",
            dependencies: ["FarmEngine", "FarmKit", "SyntheticKinds"],
            path: "Benchmarks/FarmBench"
        ),
        // A driver that runs builds of test-defined task kinds in a separate process, so tests
        // can kill a build mid-way and run two builds on one cache. Not part of the product.
        .executableTarget(
            name: "farm-test-driver",
            dependencies: ["FarmEngine", "FarmKit", "SyntheticKinds"],
            path: "Tests/FarmTestDriver"
        ),
        .testTarget(
            name: "FarmKitTests",
            dependencies: ["FarmEngine", "FarmKit", "SyntheticKinds", "farm-test-driver", "farm"],
            // Run by the tests with Margarita Shotgun's own Python, from its source path.
            exclude: ["Repository/margarita_client.py"]
        ),
    ]
)
