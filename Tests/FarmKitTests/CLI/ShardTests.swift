import FarmEngine
import FarmKit
import Foundation
import Testing

/// `--shard I/N`: N jobs of a CI matrix or a Slurm array split the manifest's kernels between
/// them without talking to each other, and none of them publishes a partial repository.
@Suite("Shards")
struct ShardTests {
    static func kernels(_ count: Int, from first: Int = 0) -> [Kernel] {
        (first..<(first + count)).map { ToolchainTests.kernel("6.1.0-\($0)-amd64", compiler: "gcc-12") }
    }

    @Test func shardsSplitTheKernelsDisjointlyEvenlyAndStably() throws {
        let kernels = Self.kernels(400)
        let shards = try (0..<4).map { try KernelShard(index: $0, count: 4) }
        let parts = shards.map { shard in Set(kernels.filter(shard.contains).map(\.release)) }
        #expect(parts.reduce(0) { $0 + $1.count } == kernels.count, "every kernel in exactly one shard")
        #expect(parts.reduce(Set<String>()) { $0.union($1) }.count == kernels.count)
        #expect(parts.allSatisfy { (70...130).contains($0.count) }, "\(parts.map(\.count))")
        // New kernels in the manifest do not move the old ones: a retried shard finds its cache.
        let grown = kernels + Self.kernels(100, from: 400)
        for (shard, part) in zip(shards, parts) {
            #expect(Set(grown.filter(shard.contains).map(\.release)).isSuperset(of: part))
        }
        // The same releases from another upstream are other kernels, hashed apart.
        let moved = kernels.filter { kernel in
            var ubuntu = kernel
            ubuntu.upstream = "ubuntu"
            return KernelShard.part(of: ubuntu, among: 4) != KernelShard.part(of: kernel, among: 4)
        }
        #expect(moved.count > kernels.count / 2)
    }

    /// The shards' plans are the whole plan's kernel tasks, each in one shard, and none publishes.
    @Test func shardPlansCoverTheManifestAndPublishNothing() throws {
        let scratch = try Scratch()
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes", toPath: scratch.file("recipes"))
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/manifest.yml", toPath: scratch.file("manifest.yml"))
        func compiles(_ arguments: [String]) throws -> (tasks: [String], publishes: Bool) {
            let result = try runProcess(Products.farm, ["plan", "--format", "json", "--cache", scratch.file("cache")] + arguments,
                                        directory: scratch.path)
            #expect(result.status == 0, "\(result.stderr)")
            let tasks = try (JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])?["tasks"] as? [[String: Any]] ?? []
            return (tasks.filter { $0["kind"] as? String == "compile" }.compactMap { $0["name"] as? String },
                    tasks.contains { $0["kind"] as? String == "publish" })
        }
        let whole = try compiles([])
        #expect(whole.publishes && whole.tasks.count > 10)
        let shards = try (0..<3).map { try compiles(["--shard", "\($0)/3"]) }
        #expect(shards.allSatisfy { !$0.publishes && !$0.tasks.isEmpty })
        #expect(shards.flatMap(\.tasks).sorted() == whole.tasks.sorted())
    }

    @Test(arguments: [("3/3", "the shard must be 0 to 2"), ("0/0", "the number of shards must be at least 1"),
                      ("x", "expected I/N"), ("1/2/3", "expected I/N"), ("--shard=-1/2", "the shard must be 0 to 1")])
    func aBadShardIsRefusedWithWhatToWrite(_ shard: String, _ message: String) throws {
        let scratch = try Scratch()
        try scratch.write("manifest.yml", upstreamHeader + "kernels:\n" + validKernel)
        for command in ["plan", "build"] {
            let flag = shard.hasPrefix("--") ? [shard] : ["--shard", shard]
            let result = try runProcess(Products.farm, [command] + flag + ["--manifest", scratch.file("manifest.yml"),
                                                        "--cache", scratch.file("cache")])
            #expect(result.status == 2, "\(command) \(shard): \(result.stdout)\(result.stderr)")
            #expect(result.stderr.contains("--shard") && result.stderr.contains(message), "\(result.stderr)")
        }
    }
}
