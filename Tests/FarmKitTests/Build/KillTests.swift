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

    @Test func childStatusesInputDirectoryAndFailuresAreReported() throws {
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
