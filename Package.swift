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
        .systemLibrary(name: "CDeflate", pkgConfig: "libdeflate", providers: [.apt(["libdeflate-dev"])]),
        .systemLibrary(name: "CLZMA", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        .systemLibrary(name: "CBPF", pkgConfig: "libbpf", providers: [.apt(["libbpf-dev"])]),
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
                "FarmEngine", "CArchive", "CBPF", "CCurl", "CDeflate", "CGit2", "CLZMA", "CZlib",
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
        // Task kinds made up for the engine's tests and benchmark, with their planner and plan
        // file: they exercise the graph, store and scheduler without the real kinds, on the
        // engine alone. Not part of the product.
        .target(
            name: "SyntheticKinds",
            dependencies: ["FarmEngine"],
            path: "Tests/SyntheticKinds"
        ),
        .executableTarget(
            name: "farm-bench",
            dependencies: ["FarmEngine", "FarmKit", "SyntheticKinds"],
            path: "Benchmarks/FarmBench"
        ),
        // The engine alone on a synthetic plan file, the process farm-bench measures against ninja.
        .executableTarget(
            name: "farm-bench-engine",
            dependencies: ["FarmEngine", "SyntheticKinds"],
            path: "Benchmarks/FarmBenchEngine"
        ),
        // A driver that runs builds of the synthetic kinds through the product (manifest, Session,
        // publisher) in a separate process, so tests can kill a build mid-way and run two builds on
        // one cache; its SyntheticRules plan them from a manifest, for the tests too. Not part of the product.
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
