import FarmEngine
import FarmKit
import Foundation
import Testing

/// examples/slurm on a real one-node Slurm (munged, slurmctld, slurmd from Debian's packages, on
/// 127.0.0.1, started by scripts/start-slurm) with a real nginx cache: two shards of a two-kernel
/// manifest as a job array, each on an empty cache of its own, then the dependent publish job on
/// a third empty cache, which takes everything from the cache server and builds nothing.
extension DebianArchiveTests.CompileTests {
    static var slurmRunnable: Bool {
        geteuid() == 0 && NginxServer.installed
            && ["/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch"].allSatisfy(FileManager.default.isExecutableFile)
    }

    @Test(.enabled(if: slurmRunnable, "needs root, nginx-light, slurmctld, slurmd, slurm-client and munge (scripts/install-deps installs them)"))
    func slurmExampleBuildsTwoShardsThenPublishesFromTheCacheBuildingNothing() async throws {
        let project = try await CompileProject.shared.get()
        let scratch = try Scratch()
        let root = DebianArchiveTests.projectRoot
        // Two bookworm kernels of one ABI (one toolchain, shared packages) in different shards.
        let candidates = try ManifestLoader.load(path: project.manifest).kernels
            .filter { ($0.suite == "bookworm" || $0.suite == "bookworm-security") && $0.release.hasPrefix("6.1.") && !$0.release.hasSuffix("-rt-amd64") }
            .sorted { DebianVersion.less($1.version ?? "", $0.version ?? "") }
        let first = try #require(candidates.first)
        let second = try #require(candidates.first { KernelShard.part(of: $0, among: 2) != KernelShard.part(of: first, among: 2) })
        let original = try String(contentsOfFile: project.manifest, encoding: .utf8)
        try scratch.write("project/manifest.yml", ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: [first, second]), in: original))
        try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("project/recipes"))
        let keys = try runProcess(Products.farm, ["keys", "init", "--manifest", scratch.file("project/manifest.yml")])
        #expect(keys.status == 0, "\(keys.stdout)\(keys.stderr)")
        // The cache server as a user would run it: scripts/cache-server, in the background on its own
        // (a server the test process spawned could die with the thread that spawned it).
        let serverDirectory = scratch.file("cache-server")
        let serving = try runProcess(root + "/scripts/cache-server", [serverDirectory, String(NginxServer.freePort())])
        try #require(serving.status == 0, "\(serving.stdout)\(serving.stderr)")
        defer { _ = try? runProcess(root + "/scripts/cache-server", [serverDirectory, "stop"]) }
        let serverURL = serving.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        let slurmDirectory = "/var/tmp/farm-slurm"
        let conf = ["SLURM_CONF": slurmDirectory + "/slurm.conf"]
        let wasRunning = (try? runProcess("/usr/bin/sinfo", ["-h"], environment: conf).status) == 0
        let started = try runProcess(root + "/scripts/start-slurm", [], environment: ["FARM_SLURM_DIR": slurmDirectory])
        try #require(started.status == 0, "\(started.stdout)\(started.stderr)")
        defer { if !wasRunning { _ = try? runProcess(root + "/scripts/start-slurm", ["stop"], environment: ["FARM_SLURM_DIR": slurmDirectory]) } }

        let environment = conf.merging([
            "FARM_PROJECT": scratch.file("project"), "FARM_REMOTE_CACHE": serverURL, "FARM": Products.farm,
            "FARM_SCRATCH": scratch.file("nodes"), "FARM_LOGS": scratch.file("logs"), "FARM_REPORT": scratch.file("report.json"),
        ]) { _, new in new }
        try FileManager.default.createDirectory(atPath: scratch.file("nodes"), withIntermediateDirectories: true)
        let submitted = try runProcess(root + "/examples/slurm/submit", ["2"], environment: environment)
        try #require(submitted.status == 0, "\(submitted.stdout)\(submitted.stderr)")
        let ids = submitted.stdout.split(whereSeparator: \.isWhitespace).map(String.init)
        try #require(ids.count == 2, "\(submitted.stdout)")

        // Until the publish job has ended (jobs stay known to slurmctld for minutes after).
        func state(_ job: String) throws -> [String] {
            let shown = try runProcess("/usr/bin/scontrol", ["-o", "show", "job", job], environment: conf)
            return shown.stdout.split(separator: "\n").map { line in
                let fields = line.split(separator: " ")
                let state = fields.first { $0.hasPrefix("JobState=") }?.dropFirst("JobState=".count) ?? "?"
                let exit = fields.first { $0.hasPrefix("ExitCode=") }?.dropFirst("ExitCode=".count) ?? "?"
                return "\(state) \(exit)"
            }
        }
        let deadline = ContinuousClock.now + .seconds(1500)
        while try state(ids[1]).allSatisfy({ !$0.hasPrefix("COMPLETED") && !$0.hasPrefix("FAILED") && !$0.hasPrefix("CANCELLED") }),
              ContinuousClock.now < deadline {
            try await Task.sleep(for: .seconds(5))
        }
        let logFiles = try FileManager.default.contentsOfDirectory(atPath: scratch.file("logs")).sorted()
        func text(_ prefix: String) -> String {
            logFiles.filter { $0.hasPrefix(prefix) }
                .map { name in "== \(name)\n" + ((try? String(contentsOfFile: scratch.file("logs/" + name), encoding: .utf8)) ?? "") }
                .joined(separator: "\n")
        }
        let (shardLogs, publishLog) = (text("shard-"), text("publish-"))
        let logs = shardLogs + "\n" + publishLog
        #expect(try state(ids[0]) == ["COMPLETED 0:0", "COMPLETED 0:0"], "\(logs)")
        #expect(try state(ids[1]) == ["COMPLETED 0:0"], "\(logs)")

        // Each shard compiled its own kernel; the publish job took every bundle, root, compile and
        // signature from the server ("(from URL)" where a task that ran prints its seconds).
        for kernel in [first, second] {
            #expect(shardLogs.contains("compile lime/\(kernel.release)@debian ("), "\(logs)")
        }
        let publishTasks = publishLog.split(separator: "\n").filter { line in
            ["bundle", "toolchain", "compile", "sign"].contains { line.contains("] \($0) ") }
        }
        #expect(publishTasks.count == 7 && publishTasks.allSatisfy { $0.contains("(from \(serverURL))") }, "\(publishLog)")
        #expect(!publishLog.contains("] fetch "), "the publish job downloaded packages: \(publishLog)")
        #expect(publishLog.contains("repository ") && publishLog.contains("2 module(s)"), "\(publishLog)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch.file("report.json")))) as? [String: Any])
        let kernels = report["kernels"] as? [[String: Any]] ?? []
        #expect(Set(kernels.compactMap { $0["release"] as? String }) == [first.release, second.release])
        #expect(kernels.allSatisfy { $0["state"] as? String == "cached" }, "\(kernels)")
        let verified = try runProcess(Products.farm, ["verify", scratch.file("project/repo"), "--manifest", scratch.file("project/manifest.yml")])
        #expect(verified.status == 0 && verified.stdout.contains("2 module(s)"), "\(verified.stdout)\(verified.stderr)")
    }
}
