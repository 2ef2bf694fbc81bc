import FarmEngine
import FarmKit
import Foundation

/// `farm-bench bundle [--manifest manifest.yml] [--release R] [--runs 3]`: builds one kernel's
/// bundle from its real packages the way farm's bundle task does (libarchive, in process) and
/// the way kernel-packer did (`dpkg -x` each package, then `tar | gzip -9` of the tree), on the
/// same package files, and prints the ratio.
func bundleBenchmark(_ arguments: [String]) async throws {
    var manifestPath = "manifest.yml"
    var release: String?
    var runs = 3
    // tmpfs by default: on this VM's disk, file creation swings by 3x from run to run for both
    // pipelines, which would drown the difference being measured.
    var workRoot = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        switch argument {
        case "--manifest": manifestPath = rest.popFirst() ?? manifestPath
        case "--release": release = rest.popFirst()
        case "--runs": runs = rest.popFirst().flatMap(Int.init) ?? runs
        case "--work": workRoot = rest.popFirst() ?? workRoot
        default:
            FileHandle.standardError.write(Data("usage: farm-bench bundle [--manifest PATH] [--release R] [--runs N] [--work DIR]\n".utf8))
            exit(2)
        }
    }
    let session = try Session(manifestPath: manifestPath, cacheDirectory: nil, rules: FarmRules())
    let kernel = try release.flatMap { name in session.manifest.kernels.first { $0.release == name } }
        ?? session.manifest.kernels.filter { $0.suite?.hasPrefix("bookworm") == true && $0.release.hasSuffix("-amd64") }
            .max { DebianVersion.less($0.version ?? "", $1.version ?? "") }
        .unwrap("no such kernel in \(manifestPath)")
    // Fetch the packages through farm (cached after the first time).
    let work = workRoot + "/farm-bench-bundle-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: work) }
    let (fetched, _) = try await session.buildOne(.bundle(kernel: kernel.name), output: "bundle", into: work, as: "warmup.tgz",
                                                  options: BuildOptions(), reporter: SilentReporter())
    guard fetched.succeeded else { print("fetching the packages failed"); exit(1) }
    let cache = try session.openCache()
    let packages = try kernel.packages.map { try cache.objects.verifiedPath(of: $0.sha256) }
    cache.close()
    let total = packages.reduce(Int64(0)) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int64) ?? 0) }
    print("farm-bench bundle: \(kernel.release), \(packages.count) packages, \(total / 1024) KiB, median of \(runs) runs in \(workRoot)")

    var farmTimes: [Double] = [], packerTimes: [Double] = []
    var farmSize: Int64 = 0, packerSize: Int64 = 0
    for round in 0..<runs {
        let farmDirectory = "\(work)/farm-\(round)"
        let farmStart = ContinuousClock.now
        for package in packages {
            let start = ContinuousClock.now
            try PackageExtractor.extract(package: package, into: farmDirectory + "/staging")
            if round == 0 { print(String(format: "  extract %@: %.2f s", (package as NSString).lastPathComponent.prefix(12) as CVarArg, seconds(ContinuousClock.now - start))) }
        }
        let buildStart = ContinuousClock.now
        defer { if round == 0 { print(String(format: "  bundle: %.2f s", seconds(ContinuousClock.now - buildStart))) } }
        try BundleBuilder.build(stagingRoot: farmDirectory + "/staging", release: kernel.release, distro: "debian",
                                checksum: String(repeating: "0", count: 64), output: farmDirectory + "/bundle.tgz")
        farmTimes.append(seconds(ContinuousClock.now - farmStart))
        farmSize = (try FileManager.default.attributesOfItem(atPath: farmDirectory + "/bundle.tgz")[.size] as? Int64) ?? 0

        let packerDirectory = "\(work)/packer-\(round)"
        try FileManager.default.createDirectory(atPath: packerDirectory + "/tree", withIntermediateDirectories: true)
        let packerStart = ContinuousClock.now
        for package in packages {
            let status = try run("/usr/bin/dpkg", ["-x", package, packerDirectory + "/tree"]).status
            guard status == 0 else { print("dpkg -x failed"); exit(1) }
        }
        let tar = try run("/bin/sh", ["-c", "tar -C \"$1\" -cf - . | gzip -9 > \"$2\"", "sh", packerDirectory + "/tree", packerDirectory + "/bundle.tgz"])
        guard tar.status == 0 else { print("tar | gzip failed"); exit(1) }
        packerTimes.append(seconds(ContinuousClock.now - packerStart))
        packerSize = (try FileManager.default.attributesOfItem(atPath: packerDirectory + "/bundle.tgz")[.size] as? Int64) ?? 0
        try? FileManager.default.removeItem(atPath: farmDirectory)
        try? FileManager.default.removeItem(atPath: packerDirectory)
    }
    print(String(format: "farm (libarchive, reproducible, gzip -6): %6.2f s  %6.1f MiB", median(farmTimes), Double(farmSize) / 1_048_576))
    print(String(format: "kernel-packer (dpkg -x, tar | gzip -9):   %6.2f s  %6.1f MiB", median(packerTimes), Double(packerSize) / 1_048_576))
    print(String(format: "ratio farm/kernel-packer: %.2fx (%.1fx faster)", median(farmTimes) / median(packerTimes), median(packerTimes) / median(farmTimes)))
}

final class SilentReporter: BuildReporter { func report(_ event: BuildEvent) {} }

extension Optional {
    func unwrap(_ message: String) throws -> Wrapped {
        guard let self else { throw FarmError.badInput(message) }
        return self
    }
}
