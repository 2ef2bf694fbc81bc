import FarmEngine
import FarmKit
import Foundation
import Testing

/// The exit codes and flags the README documents, from the real `farm` binary.
@Suite("Command line")
struct CommandLineTests {
    /// Usage errors are bad input (2), as the README says, not ArgumentParser's 64; a flag a
    /// command would ignore is refused.
    @Test(arguments: [["bogus"], ["build", "--sandbox", "bogus"], ["build", "-j", "abc"], ["build", "-j", "0"], ["build", "--io-jobs", "0"],
                      ["build", "--remote-cache", "cache.example:8080"], ["build", "--remote-cache", "ftp://cache.example/"], ["publish", "--remote-cache", "cache.example:8080"],
                      ["gc", "--remote-cache", "http://cache.example/"],
                      ["explain", "fetch:x", "--json"], ["log", "fetch:x", "-v"], ["gc", "--sandbox", "bwrap"],
                      ["crawl", "-j", "2"], ["lab", "list", "--json"], ["lab", "down", "--sandbox", "host"], ["status", "-v"]])
    func argumentErrorsExitTwo(_ arguments: [String]) throws {
        let scratch = try Scratch()
        let result = try runProcess(Products.farm, arguments + ["--cache", scratch.file("cache")])
        #expect(result.status == 2, "\(arguments): \(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains("Error:"), "\(result.stderr)")
    }

    @Test(arguments: [["--help"], ["build", "--help"], ["help", "build"], ["--version"]])
    func helpAndVersionExitZero(_ arguments: [String]) throws {
        let result = try runProcess(Products.farm, arguments)
        #expect(result.status == 0, "\(arguments): \(result.stderr)")
        #expect(!result.stdout.isEmpty)
    }

    /// The remote cache's flags are farm build's (their behaviour: RemoteCacheTests, through the test driver).
    @Test(arguments: ["build", "publish"])
    func buildAndPublishDocumentTheRemoteCacheFlags(_ command: String) throws {
        let result = try runProcess(Products.farm, [command, "--help"])
        #expect(result.stdout.contains("--remote-cache <url>") && result.stdout.contains("--remote-cache-read-only"), "\(result.stdout)")
    }

    /// A project whose kernel needs a toolchain, a compile and a sign task, and whose keys were never made.
    func unpreparedProject(_ scratch: Scratch) throws -> String {
        try scratch.write("recipes/lime.yml", recipeText)
        try FileManager.default.createDirectory(atPath: scratch.file("recipes/toolchains"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes/toolchains/debian-bookworm.yml",
                                         toPath: scratch.file("recipes/toolchains/debian-bookworm.yml"))
        let kernel = validKernel.replacingOccurrences(of: "    upstream: debian\n",
                                                      with: "    upstream: debian\n    distribution: debian-12\n    compiler: gcc-12\n")
        return try scratch.write("manifest.yml", upstreamHeader + "modules: [lime]\nkernels:\n" + kernel
                                 + "signing: {module-key: keys/module, repo-key: keys/repo}\npublish: {dir: repo}\n")
    }

    /// Found before minutes of other work, also by a dry run: the keys `signing:` names are missing.
    @Test func missingKeysStopTheBuildBeforeAnyTaskRuns() throws {
        let scratch = try Scratch()
        let manifest = try unpreparedProject(scratch)
        for dryRun in [false, true] {
            let result = try runProcess(Products.farm, ["build", "--json", "--manifest", manifest, "--cache", scratch.file("cache")] + (dryRun ? ["-n"] : []))
            #expect(result.status == 3, "\(result.stdout)\(result.stderr)")
            #expect(result.stderr.contains("run 'farm keys init'"), "\(result.stderr)")
            // Once, though the sign and the publish task both miss the key.
            #expect(result.stderr.components(separatedBy: "run 'farm keys init'").count == 2, "\(result.stderr)")
            #expect(result.tasks("started").isEmpty, "tasks ran before the check: \(result.tasks("started"))")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.file("repo")))
    }

    /// Without mmdebstrap and bwrap on PATH, the build names both packages at once and runs nothing.
    @Test func missingToolsAreNamedBeforeAnyTaskRuns() throws {
        let scratch = try Scratch()
        let manifest = try unpreparedProject(scratch)
        // Without signing: only the tools are missing.
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        try scratch.write("manifest.yml", text.components(separatedBy: "signing:")[0])
        try FileManager.default.createDirectory(atPath: scratch.file("empty-bin"), withIntermediateDirectories: true)
        let result = try runProcess(Products.farm, ["build", "--json", "--manifest", manifest, "--cache", scratch.file("cache")],
                                    environment: ["PATH": scratch.file("empty-bin")])
        #expect(result.status == 3, "\(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains("apt-get install mmdebstrap"), "\(result.stderr)")
        #expect(result.stderr.contains("apt-get install bubblewrap"), "\(result.stderr)")
        #expect(result.tasks("started").isEmpty, "tasks ran before the check: \(result.tasks("started"))")
    }

    /// `-n` writes nothing anywhere: no cache is made for it, and an existing one is left as it was.
    @Test func aDryRunWritesNothingAnywhere() throws {
        let scratch = try Scratch()
        let manifest = try unpreparedProject(scratch)
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        try scratch.write("manifest.yml", text.components(separatedBy: "signing:")[0])
        let fresh = scratch.file("fresh-cache")
        let first = try runProcess(Products.farm, ["build", "-n", "--manifest", manifest, "--cache", fresh])
        #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
        #expect(first.stdout.contains("toolchain"), "\(first.stdout)")
        #expect(!FileManager.default.fileExists(atPath: fresh), "a dry run made the cache: \(treeDigest(fresh).keys.sorted())")

        let cache = scratch.file("cache")
        let built = try runProcess(Products.driver, ["--manifest", try scratch.write("synthetic/manifest.yml", SyntheticManifestText.small),
                                                     "--cache", cache])
        #expect(built.status == 0, "\(built.stderr)")
        let before = treeDigest(cache)
        let again = try runProcess(Products.farm, ["build", "-n", "--manifest", manifest, "--cache", cache])
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        #expect(treeDigest(cache) == before)
    }

    /// Started by a parent that blocks SIGINT (this test runner's threads do, and a blocked mask
    /// survives exec), farm still hears Ctrl-C: a capture stuck on a host that never answers ends
    /// with 130 once its ssh gives up, instead of going on as if nothing happened.
    @Test func ctrlCReachesFarmWhateverMaskItsParentHad() throws {
        // A server that accepts connections and never says a word (an SSH server hung before its banner).
        let server = try PythonServer(serving: """
        held = []
        while True:
            held.append(s.accept()[0])
        """)
        let farm = Process()
        farm.executableURL = URL(fileURLWithPath: Products.farm)
        farm.arguments = ["capture", "root@127.0.0.1:\(server.port)", "--repo", NSTemporaryDirectory(), "--gpg-no-verify",
                          "--manifest", "/nonexistent/manifest.yml", "--ssh-option", "ConnectTimeout=3"]
        farm.standardOutput = FileHandle.nullDevice
        farm.standardError = FileHandle.nullDevice
        try farm.run()
        usleep(700_000)
        kill(farm.processIdentifier, SIGINT)
        farm.waitUntilExit()
        #expect(farm.terminationReason == .exit && farm.terminationStatus == 130)
    }

    @Test func anUnknownReleaseIsNamedWithTheManifest() throws {
        let scratch = try Scratch()
        let manifest = try unpreparedProject(scratch)
        for command in ["module", "bundle", "profile"] {
            let result = try runProcess(Products.farm, [command, "6.1.0-9-amd64", "--manifest", manifest, "--cache", scratch.file("cache")])
            #expect(result.status == 2, "\(result.stdout)\(result.stderr)")
            #expect(result.stderr.contains("no kernel 6.1.0-9-amd64 in \(manifest); it has 6.1.0-1-amd64"), "\(result.stderr)")
        }
    }

    /// A symbol table is made from the kernel's image package: without one pinned, farm says where and what to do.
    @Test func aProfileOfAKernelWithoutAnImageNamesTheManifestLine() throws {
        let scratch = try Scratch()
        let manifest = try unpreparedProject(scratch)
        let result = try runProcess(Products.farm, ["profile", "6.1.0-1-amd64", "--manifest", manifest, "--cache", scratch.file("cache")])
        #expect(result.status == 2, "\(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains("\(manifest):") && result.stderr.contains("kernel 6.1.0-1-amd64 has no 'image:' package pinned")
                && result.stderr.contains("run 'farm crawl'"), "\(result.stderr)")
    }

    /// A cache this user cannot write: `farm status` and `farm log` still read it; a build says
    /// why it cannot start and what to do (exit 3), and changes nothing.
    @Test(.enabled(if: geteuid() == 0, "needs root to run farm as another user"))
    func aReadOnlyCacheCanBeReadAndABuildSaysWhy() throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        let empty = try runProcess(Products.farm, ["status", "--cache", cache])
        #expect(empty.status == 0 && empty.stdout.contains("no build has used it yet"), "\(empty.stdout)\(empty.stderr)")
        let built = try runProcess(Products.driver, ["--manifest", try scratch.write("synthetic/manifest.yml", SyntheticManifestText.small),
                                                     "--cache", cache])
        #expect(built.status == 0, "\(built.stderr)")
        chmod(scratch.path, 0o755)
        let before = treeDigest(cache)
        func asNobody(_ arguments: [String]) throws -> ProcessResult {
            try runProcess("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Products.farm] + arguments)
        }
        let status = try asNobody(["status", "--cache", cache])
        #expect(status.status == 0, "\(status.stdout)\(status.stderr)")
        #expect(status.stdout.contains("tasks:"), "\(status.stdout)")
        let manifest = try unpreparedProject(scratch)
        let build = try asNobody(["build", "--manifest", manifest, "--cache", cache])
        #expect(build.status == 3, "\(build.stdout)\(build.stderr)")
        #expect(build.stderr.contains("is not writable by this user") && build.stderr.contains("--cache DIR"), "\(build.stderr)")
        #expect(treeDigest(cache) == before)
    }
}
