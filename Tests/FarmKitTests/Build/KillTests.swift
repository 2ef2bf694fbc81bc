import FarmEngine
import FarmKit
import Foundation
import Testing

/// What a killed farm leaves: no process (every child has a parent-death signal), and files
/// that the next run or `farm gc` removes, mounts included, without reaching through them.
@Suite("A killed farm leaves nothing")
struct KillTests {
    @Test func everyChildGetsKilledWithFarmAndStartsWithDefaultSignals() throws {
        // prctl(PR_GET_PDEATHSIG) as the child itself sees it.
        let python = "import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)"
        let death = try Executable.run("/usr/bin/python3", ["-c", python])
        #expect(death.status == 0, "\(death.stderr)")
        #expect(death.stdout == "\(SIGKILL)\n", "the child's parent-death signal is \(death.stdout)")

        // The test runner blocks SIGTERM; a child that inherited that would outlive a `kill`.
        let status = try Executable.run("/bin/cat", ["/proc/self/status"]).stdout
        let masks = status.split(separator: "\n").filter { $0.hasPrefix("SigBlk:") || $0.hasPrefix("SigIgn:") }
        #expect(masks.count == 2)
        for mask in masks {
            // Signals 32 and 33 belong to glibc's threads, which no program may change.
            let bits = UInt64(mask.split(separator: "\t").last ?? "", radix: 16).map { $0 & ~UInt64(0b11 << 31) }
            #expect(bits == 0, "the child starts with \(mask)")
        }
    }

    @Test func childStatusesInputDirectoryTimeoutAndFailuresAreReported() throws {
        let scratch = try Scratch()
        let input = try scratch.write("input", "from a file\n")
        let cat = try Executable.run("/bin/sh", ["-c", "cat; pwd; echo oops >&2; exit 3"], directory: scratch.path, input: input)
        #expect(cat.status == 3)
        #expect(cat.stdout == "from a file\n\(scratch.path)\n")
        #expect(cat.stderr == "oops\n")
        #expect(try Executable.run("/bin/sh", ["-c", "kill -KILL $$"]).status == 128 + SIGKILL)
        #expect(try Executable.run("/usr/bin/env", [], environment: ["ONLY": "this"]).stdout == "ONLY=this\n")
        // Megabytes on both streams at once: neither pipe may fill while the other is read.
        let loud = try Executable.run("/bin/sh", ["-c", "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2"])
        #expect(loud.stdout.utf8.count == 3_000_000 && loud.stderr.utf8.count == 3_000_000)
        // A timeout kills the program (ssh waiting for a banner that never comes).
        let started = ContinuousClock.now
        #expect(try Executable.run("/bin/sleep", ["60"], timeout: 0.3).status == 128 + SIGKILL)
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(throws: FileSystemError.self) { try Executable.run(scratch.file("missing"), []) }
        #expect(throws: FileSystemError.self) { try Executable.run("/bin/true", [], directory: scratch.file("missing")) }
    }

    /// A killed mmdebstrap's work directory holds its root, possibly with mounts (proc, a bind of
    /// the host's /dev/shm); a killed unpack leaves `.unpacking-*`. `farm gc` removes both, and
    /// the files behind a bind survive.
    @Test(.enabled(if: geteuid() == 0, "mounting needs root"))
    func gcRemovesWhatKilledBuildsLeftWithoutReachingThroughMounts() throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        let host = scratch.file("host-shm")
        try scratch.write("host-shm/canary", "keep me\n")
        let dead = try deadPid()
        let work = cache + "/cas/tmp/work-toolchain-\(dead)-42"
        let root = work + "/tmp/mmdebstrap.abcdef"
        try scratch.write("cache/cas/tmp/work-toolchain-\(dead)-42/tmp/mmdebstrap.abcdef/etc/os-release", "ID=debian\n")
        try FileManager.default.createDirectory(atPath: root + "/dev/shm", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/proc", withIntermediateDirectories: true)
        let staging = cache + "/unpacked/.unpacking-\(String(repeating: "ab", count: 32))-\(dead)"
        try scratch.write("cache/unpacked/.unpacking-\(String(repeating: "ab", count: 32))-\(dead)/usr/bin/gcc", "half\n")
        chmod(staging + "/usr/bin", 0o555)
        #expect(try Executable.run("/bin/mount", ["--bind", host, root + "/dev/shm"]).status == 0)
        #expect(try Executable.run("/bin/mount", ["-t", "tmpfs", "tmpfs", root + "/proc"]).status == 0)
        defer { for mount in [root + "/dev/shm", root + "/proc"] { _ = try? Executable.run("/bin/umount", ["-l", mount]) } }

        let gc = try runProcess(Products.farm, ["gc", "--cache", cache])
        #expect(gc.status == 0, "\(gc.stdout)\(gc.stderr)")
        #expect(!FileManager.default.fileExists(atPath: work))
        #expect(!FileManager.default.fileExists(atPath: staging))
        #expect(try scratch.read("host-shm/canary") == "keep me\n", "gc removed files through a bind mount")
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains(cache), "mounts left: \(mounts.split(separator: "\n").filter { $0.contains(cache) })")
    }

    @Test(.enabled(if: geteuid() == 0, "mounting needs root"))
    func abandonedWorkIsRemovedAndARunningFarmsIsKept() throws {
        let scratch = try Scratch()
        let directory = scratch.file("tmp")
        let dead = try deadPid()
        try scratch.write("tmp/work-toolchain-\(dead)-1/tmp/mmdebstrap.x/proc/.keep", "")
        try scratch.write("tmp/object-\(dead)-2", "partial")
        try scratch.write("tmp/work-toolchain-\(getpid())-3/root.tar.zst", "mine")
        try scratch.write("tmp/not-a-farm-file", "other")
        let proc = scratch.file("tmp/work-toolchain-\(dead)-1/tmp/mmdebstrap.x/proc")
        #expect(try Executable.run("/bin/mount", ["-t", "proc", "proc", proc]).status == 0)
        defer { _ = try? Executable.run("/bin/umount", ["-l", proc]) }

        #expect(Leftovers.removeAbandoned(in: directory) == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                == ["not-a-farm-file", "work-toolchain-\(getpid())-3"])
        #expect(FileManager.default.fileExists(atPath: "/proc/self/status"), "the host's /proc lost files")
    }

    /// The pid of a process that has ended.
    func deadPid() throws -> Int32 {
        let result = try Executable.run("/bin/sh", ["-c", "sh -c 'echo $$'"])
        return try #require(Int32(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}

extension DebianArchiveTests.CompileTests {
    /// The issue's scenario: `farm build` of two real kernels from an empty cache, SIGKILLed 20
    /// times at random moments (mmdebstrap, fetches, bundles and compiles all get killed), then
    /// run to the end. No task that had finished runs again, nothing is corrupt, and nothing of
    /// farm's is left: no process, no mount, nothing in its TMPDIR, and after `farm gc` no
    /// work directory or half-unpacked tree in the cache.
    @Test func aBuildKilledTwentyTimesFinishesWithoutRedoingFinishedTasksAndLeavesNothing() async throws {
        let project = try await CompileProject.shared.get()
        let scratch = try Scratch()
        // Should a mount survive after all, Scratch's plain removal must not reach through it.
        defer { Leftovers.remove(scratch.path) }
        let kernels = try ManifestLoader.load(path: project.manifest).kernels
        // Two flavours of one release share the toolchain, so it is made (and killed) once per round.
        let cloudRelease = project.release.replacingOccurrences(of: "-amd64", with: "-cloud-amd64")
        let chosen = kernels.filter { $0.release == project.release || $0.release == cloudRelease }
        try #require(chosen.count == 2, "the crawl has no \(cloudRelease) beside \(project.release)")
        let original = try String(contentsOfFile: project.manifest, encoding: .utf8)
        let manifest = try scratch.write("project/manifest.yml",
                                         ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: chosen), in: original))
        try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("project/recipes"))
        #expect(try runProcess(Products.farm, ["keys", "init", "--manifest", manifest]).status == 0)
        let cache = scratch.file("cache")
        let temporary = scratch.file("tmp")
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        let arguments = ["build", "--json", project.release, cloudRelease, "--manifest", manifest, "--cache", cache]
        let environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": temporary, "CI": "true"]) { _, new in new }

        var finished = Set<String>()
        var killed = Set<String>()
        var rounds: [String] = []
        for round in 0..<20 {
            let output = scratch.file("round-\(round).jsonl")
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let farm = Process()
            farm.executableURL = URL(fileURLWithPath: Products.farm)
            farm.arguments = arguments
            farm.environment = environment
            farm.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            farm.standardError = FileHandle.nullDevice
            try farm.run()
            func events() -> ProcessResult { ProcessResult(status: 0, stdout: (try? String(contentsOfFile: output, encoding: .utf8)) ?? "", stderr: "") }
            // Rounds are shorter than mmdebstrap and bundling: from round 7 on, rounds wait for a
            // compile to start until one was killed (a round whose build failed on a flaky mirror
            // just hands the wait to the next). LiME compiles in seconds: the kill comes while the
            // compile unpacks the toolchain root or runs make.
            var deadline = Date().addingTimeInterval(Double.random(in: 0.5...15))
            if round >= 7, !killed.contains(where: { $0.hasPrefix("compile:") }) {
                let started = Date().addingTimeInterval(900)
                while farm.isRunning, Date() < started, !events().tasks("started").contains(where: { $0.hasPrefix("compile:") }) { usleep(200_000) }
                deadline = Date().addingTimeInterval(Double.random(in: 0.2...2))
            }
            while farm.isRunning, Date() < deadline { usleep(50_000) }
            kill(farm.processIdentifier, SIGKILL)
            farm.waitUntilExit()
            let run = events()
            rounds.append("round \(round): exit \(farm.terminationStatus), built \(run.tasks("built").sorted()), failed \(run.tasks("failed").sorted())")
            finished.formUnion(run.tasks("built"))
            killed.formUnion(run.tasks("started").subtracting(run.tasks("built")).subtracting(run.tasks("failed")))
        }
        #expect(!finished.isEmpty, "no task finished between the kills:\n\(rounds.joined(separator: "\n"))")
        let killedKinds = Set(killed.map { String($0.prefix { $0 != ":" }) })
        #expect(killedKinds.isSuperset(of: ["toolchain", "compile"]), "killed only: \(killed.sorted())\n\(rounds.joined(separator: "\n"))")

        let final = try runProcess(Products.farm, arguments, environment: ["TMPDIR": temporary, "CI": "true"])
        #expect(final.status == 0, "\(final.stdout)\(final.stderr)")
        #expect(final.events.first { $0["event"] as? String == "completed" }?["failed"] as? Int == 0, "\(final.stdout)")
        #expect(final.tasks("built").isDisjoint(with: finished),
                "finished before a kill, yet run again: \(final.tasks("built").intersection(finished).sorted())")

        // Children die with farm at once; give the kernel a moment to reap them.
        let settled = Date().addingTimeInterval(10)
        while !processes(containing: scratch.path).isEmpty, Date() < settled { usleep(100_000) }
        let left = processes(containing: scratch.path).map { pid in
            String(decoding: (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()).map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
        }
        #expect(left.isEmpty, "processes of farm's outlived it: \(left)")
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).split(separator: "\n").filter { $0.contains(scratch.path) }
        #expect(mounts.isEmpty, "mounts left: \(mounts)")
        let inTemporary = try FileManager.default.contentsOfDirectory(atPath: temporary)
        #expect(inTemporary.isEmpty, "left in farm's TMPDIR: \(inTemporary)")

        // Each toolchain task removed the roots earlier killed ones left; gc removes the rest.
        let work = try FileManager.default.contentsOfDirectory(atPath: cache + "/cas/tmp")
        #expect(!work.contains { $0.hasPrefix("work-toolchain-") }, "killed toolchain tasks' work left: \(work)")
        let verify = try runProcess(Products.farm, ["gc", "--verify", "--cache", cache, "--manifest", manifest])
        #expect(verify.status == 0 && verify.stdout.contains(": 0 corrupt"), "\(verify.stdout)\(verify.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache + "/cas/tmp").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache + "/unpacked").filter { $0.hasPrefix(".unpacking-") }.isEmpty)
        let again = try runProcess(Products.farm, arguments)
        #expect(again.status == 0 && again.tasks("built").isEmpty, "\(again.stdout)\(again.stderr)")
    }
}
