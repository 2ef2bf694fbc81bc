import FarmEngine
import FarmKit
import Foundation

/// `farm-bench plan [--manifest manifest.yml] [--kernels 10000] [--runs 3]`: `farm plan` (text
/// and JSON, whole process, to a pipe) on a manifest of N kernels of the real manifest's shape
/// (its kernels repeated, each copy with its own release and pins), after one run has left the
/// manifest's snapshot in the cache, as a user's second command finds it. No peer: the goal is an
/// absolute one (under 1 s for 10,000 kernels, memory linear in the plan).
func planBenchmark(_ arguments: [String]) throws {
    var manifestPath = "manifest.yml", count = 10_000, runs = 3
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        switch argument {
        case "--manifest": manifestPath = rest.popFirst() ?? manifestPath
        case "--kernels": count = rest.popFirst().flatMap(Int.init) ?? count
        case "--runs": runs = max(1, rest.popFirst().flatMap(Int.init) ?? runs)
        default:
            FileHandle.standardError.write(Data("usage: farm-bench plan [--manifest PATH] [--kernels N] [--runs N]\n".utf8))
            exit(2)
        }
    }
    let farm = sibling("farm")
    let source = try ManifestLoader.load(path: manifestPath)
    guard !source.kernels.isEmpty else { print("farm-bench plan: \(manifestPath) lists no kernel; run farm crawl"); exit(1) }
    var kernels: [Kernel] = []
    kernels.reserveCapacity(count)
    for index in 0..<count {
        var kernel = source.kernels[index % source.kernels.count]
        kernel.release += "+b\(index)"
        kernel.packages = kernel.packages.map { PackageReference(url: $0.url, sha256: SHA256.hash($0.sha256.hex + "\(index)"), size: $0.size) }
        kernels.append(kernel)
    }
    let project = NSTemporaryDirectory() + "farm-bench-plan-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: project) }
    try AtomicFile.makeDirectory(project + "/cache")
    try FileManager.default.copyItem(atPath: source.directory + "/recipes", toPath: project + "/recipes")
    let original = try String(contentsOfFile: manifestPath, encoding: .utf8)
    let manifest = project + "/manifest.yml"
    try Data(ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: kernels), in: original).utf8)
        .write(to: URL(fileURLWithPath: manifest))
    let common = ["plan", "--manifest", manifest, "--cache", project + "/cache"]
    let first = try run(farm, common + ["--format", "json"])
    guard first.status == 0 else { print("farm plan failed: \(first.tail)"); exit(1) }
    var text: [Double] = [], json: [Double] = []
    var tasks = ""
    for _ in 0..<runs {
        let plain = try run(farm, common + ["--format", "text"])
        tasks = plain.tail.split(separator: "\n").last.map(String.init) ?? ""
        text.append(plain.seconds)
        json.append(try run(farm, common + ["--format", "json"]).seconds)
    }
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_CHILDREN.rawValue), &usage)
    print("farm-bench plan: \(count) kernels of \(manifestPath)'s shape, median of \(runs), \(ProcessInfo.processInfo.activeProcessorCount) cores")
    print(String(format: "farm plan --format text: %.3f s (%@)", median(text), tasks))
    print(String(format: "farm plan --format json: %.3f s", median(json)))
    print(String(format: "peak memory of a farm plan: %.0f MiB", Double(usage.ru_maxrss) / 1024))
}
