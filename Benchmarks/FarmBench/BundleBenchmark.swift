import FarmEngine
import FarmKit
import Foundation

/// `farm-bench bundle [--manifest manifest.yml] [--release R] [--runs 3] [--work DIR]`: builds one
/// kernel's bundle from its real packages the way farm's bundle task does (libarchive, in memory,
/// gzip on every core) and the way kernel-packer did (`dpkg -x` each package, then `tar | gzip -9`
/// of the tree), on the same package files, on disk and in a tmpfs (or in DIR only), and prints
/// the ratio of each.
func bundleBenchmark(_ arguments: [String]) async throws {
    var manifestPath = "manifest.yml"
    var release: String?
    var runs = 3
    // Both: the peer's 30,000 small files cost differently on a disk and in memory.
    var workRoots = ["/var/tmp"] + (FileManager.default.fileExists(atPath: "/dev/shm") ? ["/dev/shm"] : [])
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        switch argument {
        case "--manifest": manifestPath = rest.popFirst() ?? manifestPath
        case "--release": release = rest.popFirst()
        case "--runs": runs = rest.popFirst().flatMap(Int.init) ?? runs
        case "--work": workRoots = rest.popFirst().map { [$0] } ?? workRoots
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
    let warmup = NSTemporaryDirectory() + "/farm-bench-bundle-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: warmup) }
    let (fetched, _) = try await session.buildOne(.bundle(kernel: kernel.name), output: "bundle", into: warmup, as: "warmup.tgz",
                                                  options: BuildOptions(), reporter: SilentReporter())
    guard fetched.succeeded else { print("fetching the packages failed"); exit(1) }
    let cache = try session.openCache()
    let packages = try kernel.packages.map { try cache.objects.verifiedPath(of: $0.sha256) }
    cache.close()
    let total = packages.reduce(Int64(0)) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int64) ?? 0) }
    print("farm-bench bundle: \(kernel.release), \(packages.count) packages, \(total / 1024) KiB, median of \(runs) runs")
    for workRoot in workRoots {
        let work = workRoot + "/farm-bench-bundle-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: work) }
        try bundleRuns(packages: packages, release: kernel.release, runs: runs, work: work)
    }
}

private func bundleRuns(packages: [String], release: String, runs: Int, work: String) throws {
    print("in \((work as NSString).deletingLastPathComponent):")
    var farmTimes: [Double] = [], packerTimes: [Double] = []
    // CPU seconds too: on a shared machine the wall clock says as much about the neighbours.
    var farmCPU: [Double] = [], packerCPU: [Double] = []
    var farmSize: Int64 = 0, packerSize: Int64 = 0
    for round in 0..<runs {
        let farmDirectory = "\(work)/farm-\(round)"
        try FileManager.default.createDirectory(atPath: farmDirectory, withIntermediateDirectories: true)
        let farmStart = ContinuousClock.now
        let farmCPUStart = cpuSeconds(RUSAGE_SELF)
        let tree = ExtractedTree()
        try PackageExtractor.read(packages: packages, into: tree)
        if round == 0 { print(String(format: "  read the packages: %.2f s", seconds(ContinuousClock.now - farmStart))) }
        let buildStart = ContinuousClock.now
        try BundleBuilder.build(packages: tree, release: release, distro: "debian",
                                checksum: String(repeating: "0", count: 64), output: farmDirectory + "/bundle.tgz")
        if round == 0 { print(String(format: "  bundle: %.2f s", seconds(ContinuousClock.now - buildStart))) }
        farmTimes.append(seconds(ContinuousClock.now - farmStart))
        farmCPU.append(cpuSeconds(RUSAGE_SELF) - farmCPUStart)
        farmSize = (try FileManager.default.attributesOfItem(atPath: farmDirectory + "/bundle.tgz")[.size] as? Int64) ?? 0
        if round == 0 {
            // Untimed: the in-memory tree must give the staged extraction's tar, on real packages too.
            for package in packages { try PackageExtractor.extract(package: package, into: farmDirectory + "/staging") }
            try BundleBuilder.build(stagingRoot: farmDirectory + "/staging", release: release, distro: "debian",
                                    checksum: String(repeating: "0", count: 64), output: farmDirectory + "/staged.tar", compression: .none)
            try BundleBuilder.build(packages: tree, release: release, distro: "debian",
                                    checksum: String(repeating: "0", count: 64), output: farmDirectory + "/memory.tar", compression: .none)
            let same = FileManager.default.contentsEqual(atPath: farmDirectory + "/staged.tar", andPath: farmDirectory + "/memory.tar")
            print("  in-memory tar = staged extraction's tar: \(same ? "yes" : "NO")")
            guard same else { exit(1) }
        }

        let packerDirectory = "\(work)/packer-\(round)"
        try FileManager.default.createDirectory(atPath: packerDirectory + "/tree", withIntermediateDirectories: true)
        let packerStart = ContinuousClock.now
        let packerCPUStart = cpuSeconds(RUSAGE_CHILDREN)
        for package in packages {
            let status = try run("/usr/bin/dpkg", ["-x", package, packerDirectory + "/tree"]).status
            guard status == 0 else { print("dpkg -x failed"); exit(1) }
        }
        let tar = try run("/bin/sh", ["-c", "tar -C \"$1\" -cf - . | gzip -9 > \"$2\"", "sh", packerDirectory + "/tree", packerDirectory + "/bundle.tgz"])
        guard tar.status == 0 else { print("tar | gzip failed"); exit(1) }
        packerTimes.append(seconds(ContinuousClock.now - packerStart))
        packerCPU.append(cpuSeconds(RUSAGE_CHILDREN) - packerCPUStart)
        packerSize = (try FileManager.default.attributesOfItem(atPath: packerDirectory + "/bundle.tgz")[.size] as? Int64) ?? 0
        try? FileManager.default.removeItem(atPath: farmDirectory)
        try? FileManager.default.removeItem(atPath: packerDirectory)
    }
    print(String(format: "  farm (in memory, reproducible, libdeflate -6):    %6.2f s  %6.2f s CPU  %6.1f MiB", median(farmTimes), median(farmCPU), Double(farmSize) / 1_048_576))
    print(String(format: "  kernel-packer (dpkg -x, tar | gzip -9):          %6.2f s  %6.2f s CPU  %6.1f MiB", median(packerTimes), median(packerCPU), Double(packerSize) / 1_048_576))
    print(String(format: "  ratio farm/kernel-packer: %.2fx (%.1fx faster); CPU %.2fx", median(farmTimes) / median(packerTimes),
                 median(packerTimes) / median(farmTimes), median(farmCPU) / median(packerCPU)))
}

/// User and system time of this process (`RUSAGE_SELF`) or of its waited-for children.
private func cpuSeconds(_ who: __rusage_who) -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(who.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

final class SilentReporter: BuildReporter { func report(_ event: BuildEvent) {} }

extension Optional {
    func unwrap(_ message: String) throws -> Wrapped {
        guard let self else { throw FarmError.badInput(message) }
        return self
    }
}
