import FarmEngine
import FarmKit
import Foundation
import Testing

extension DebianArchiveTests.CompileTests {
    /// End to end, for real: the newest bookworm kernel's LiME built, signed and published from a
    /// fresh crawl; that kernel booted by `farm lab up` under QEMU; `farm capture` from the
    /// published repository with signature checking on. The image is a LiME file covering the
    /// lab's RAM and holds the kernel's banner; so does one with `--compress on`. Then: a bad module signature and a repository
    /// without the host's kernel fail clearly and leave nothing on the host, and Ctrl-C during
    /// streaming unloads LiME.
    @Test func labKernelIsCapturedFromThePublishedRepositoryAndLeftClean() async throws {
        let project = try await CompileProject.shared.get()
        let scratch = try Scratch()
        let kernels = try ManifestLoader.load(path: project.manifest).kernels
        let newest = try #require(kernels.first { $0.release == project.release })
        let original = try String(contentsOfFile: project.manifest, encoding: .utf8)
        // With the kernel's symbol table published, and banners.json for `vol --remote-isf-url`.
        let oneKernel = ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: [newest]), in: original)
        let withTables = ManifestWriter.replacing(section: "profiles", with: "profiles: true\n",
                                                  in: ManifestWriter.replacing(section: "publish", with: "publish: {dir: repo, url: 'file://\(scratch.file("project/repo"))'}\n",
                                                                               in: oneKernel))
        let manifest = try scratch.write("project/manifest.yml", withTables)
        try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("project/recipes"))
        func farm(_ arguments: [String]) throws -> ProcessResult {
            try runProcess(Products.farm, arguments + ["--manifest", manifest, "--cache", project.cache], environment: ["CI": "true"])
        }
        #expect(try runProcess(Products.farm, ["keys", "init", "--manifest", manifest]).status == 0)
        let build = try farm(["build"])
        #expect(build.status == 0 && build.stdout.contains("repository"), "\(build.stdout)\(build.stderr)")
        let repo = scratch.file("project/repo")
        let verified = try runProcess(Products.farm, ["verify", repo, "--manifest", manifest])
        #expect(verified.status == 0 && verified.stdout.contains("1 module(s) and 1 symbol table(s)"), "\(verified.stdout)\(verified.stderr)")
        // The same kernel published without tables, under another key: captures from it make their table from the host.
        let plainManifest = try scratch.write("plain/manifest.yml", ManifestWriter.replacing(section: "profiles", with: "profiles: false\n", in: oneKernel))
        try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("plain/recipes"))
        #expect(try runProcess(Products.farm, ["keys", "init", "--manifest", plainManifest]).status == 0)
        let plainBuild = try runProcess(Products.farm, ["build", "--manifest", plainManifest, "--cache", project.cache])
        #expect(plainBuild.status == 0, "\(plainBuild.stdout)\(plainBuild.stderr)")
        /// volatility3 from PyPI on an image and the tables in `symbols`; its own cache in the scratch directory.
        func vol(_ arguments: [String]) throws -> ProcessResult {
            let vol = (ProcessInfo.processInfo.environment["FARM_PEERS"] ?? "/opt/farm-peers") + "/volatility3/bin/vol"
            try FileManager.default.createDirectory(atPath: scratch.file("vol-cache"), withIntermediateDirectories: true)
            return try runProcess(vol, ["-q", "-r", "csv", "--cache-path", scratch.file("vol-cache")] + arguments)
        }
        /// pslist finds PID 1 and the lab's dropbear; lsmod runs.
        func analyses(_ image: String, symbols: [String]) throws {
            let pslist = try vol(symbols + ["-f", image, "linux.pslist"])
            #expect(pslist.status == 0, "\(pslist.stdout)\(pslist.stderr)")
            let rows = pslist.stdout.split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
            #expect(rows.contains { $0.count > 3 && $0[2] == "1" }, "no PID 1 in vol's pslist:\n\(pslist.stdout)\(pslist.stderr)")
            #expect(pslist.stdout.contains("dropbear"), "no dropbear in vol's pslist:\n\(pslist.stdout)")
            let lsmod = try vol(symbols + ["-f", image, "linux.lsmod"])
            #expect(lsmod.status == 0, "\(lsmod.stdout)\(lsmod.stderr)")
        }

        let name = "e2e-\(getpid())"
        let up = try farm(["lab", "up", newest.release, "--name", name, "--memory", "256", "--json"])
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")
        // --json: the fetch and initramfs tasks as events, then one object describing the lab.
        let described = try #require(up.events.last { $0["event"] as? String == "lab-up" }, "\(up.stdout)")
        #expect(described["name"] as? String == name && described["release"] as? String == newest.release)
        #expect((described["ssh"] as? String)?.hasPrefix("127.0.0.1:") == true)
        defer { _ = try? farm(["lab", "down", name]) }
        func labShell(_ command: String) throws -> String {
            let result = try runProcess(Products.farm, ["lab", "ssh", "--name", name, "--cache", project.cache, "--manifest", manifest, "--", command])
            return result.stdout
        }
        #expect(try labShell("uname -r").trimmingCharacters(in: .whitespacesAndNewlines) == newest.release)
        // scp (over SFTP) and sudo work in the lab, as tools written for ordinary hosts expect.
        let lab = try #require(Labs(cacheDirectory: project.cache).load(try LabName(name)))
        let note = try scratch.write("note.txt", "hello from farm\n")
        let scp = try runProcess("/usr/bin/scp", lab.sshOptions.map { $0 == "-p" ? "-P" : $0 } + [note, lab.destination + ":/tmp/note.txt"])
        #expect(scp.status == 0, "\(scp.stdout)\(scp.stderr)")
        #expect(try labShell("sudo -n cat /tmp/note.txt && rm /tmp/note.txt") == "hello from farm\n")
        func hostIsClean() throws {
            let state = try labShell("grep '^lime ' /proc/modules; ls /tmp")
            #expect(state.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "left on the host: \(state)")
        }

        // The capture, with the repository's signatures checked against the manifest's key.
        let output = scratch.file("captures")
        let capture = try runProcess(Products.farm, ["capture", "--lab", name, "--repo", repo, "--output", output, "--case", "IR-2026-015 lab",
                                                     "--manifest", manifest, "--cache", project.cache])
        #expect(capture.status == 0, "\(capture.stdout)\(capture.stderr)")
        let images = try FileManager.default.contentsOfDirectory(atPath: output).filter { $0.hasSuffix(".lime") }
        let image = output + "/" + (try #require(images.first))
        #expect(try FileManager.default.attributesOfItem(atPath: image)[.posixPermissions] as? NSNumber == 0o600)
        let ranges = try LimeImage.ranges(of: image)
        let ram = ranges.reduce(UInt64(0)) { $0 + $1.size }
        #expect(ram <= 256 << 20 && ram > 240 << 20, "the image covers \(ram) bytes of a 256 MiB lab")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image), options: .alwaysMapped)
        #expect(bytes.range(of: Data("Linux version \(newest.release)".utf8)) != nil, "no kernel banner in the image")
        let sidecar = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: image + ".json"))) as? [String: Any])
        #expect((sidecar["sha256"] as? String) == SHA256.hash(bytes).hex)
        #expect((sidecar["size"] as? NSNumber)?.intValue == bytes.count)
        // auto: the probe's verdict decides, and the sidecar says which cipher carried the stream.
        let reason = sidecar["compressionReason"] as? String ?? ""
        #expect(reason.hasPrefix("auto: the SSH channel carried "), "\(sidecar)")
        #expect((sidecar["compression"] as? String) == (reason.contains(" below ") ? "zlib" : "none"), "\(sidecar)")
        #expect((sidecar["cipher"] as? String)?.isEmpty == false, "\(sidecar)")
        // The record a responder keeps: who, which case, which farm, which host (its name, its
        // banner, the host key the connection checked) and when, in UTC.
        #expect(sidecar["operator"] as? String == CaptureLabel.localOperator() && sidecar["case"] as? String == "IR-2026-015 lab"
                && sidecar["farmVersion"] as? String == FarmVersion.current, "\(sidecar)")
        #expect(sidecar["hostname"] as? String == (try labShell("uname -n")).trimmingCharacters(in: .newlines), "\(sidecar)")
        #expect((sidecar["procVersion"] as? String).map { $0 + "\n" } == (try labShell("cat /proc/version")), "\(sidecar)")
        let knownKey = try runProcess("/usr/bin/ssh-keygen", ["-l", "-f", lab.knownHosts]).stdout.split(separator: " ").map(String.init)
        #expect(knownKey.count > 1 && (sidecar["hostKey"] as? String)?.hasSuffix(" " + knownKey[1]) == true, "\(sidecar) \(knownKey)")
        let times = ["contacted", "started", "ended"].compactMap { (sidecar[$0] as? String).flatMap { ISO8601DateFormatter().date(from: $0) } }
        #expect(times.count == 3 && times == times.sorted() && (sidecar["ended"] as? String)?.hasSuffix("Z") == true, "\(sidecar)")
        // The lab mounts no securityfs: its lockdown is unknown, its sig_enforce read.
        let loading = sidecar["moduleLoading"] as? [String: Any] ?? [:]
        #expect(loading["sigEnforce"] as? Bool == ((try labShell("cat /sys/module/module/parameters/sig_enforce")) == "Y\n"), "\(loading)")
        // The published table, its checksum and signature checked, beside the image; volatility3
        // analyses the image with it, and also finds it through the repository's banners.json.
        let table = "symbols/linux/" + ProfileAction.fileName(for: newest)
        let recorded = sidecar["symbols"] as? [String: Any] ?? [:]
        #expect(recorded["source"] as? String == "repository" && recorded["location"] as? String == table, "\(sidecar)")
        #expect(FileManager.default.contents(atPath: output + "/" + table) == FileManager.default.contents(atPath: repo + "/" + table))
        #expect(capture.stdout.contains("vol -s \(output)/symbols -f \(image) linux.pslist"), "\(capture.stdout)")
        try analyses(image, symbols: ["-s", output + "/symbols"])
        try analyses(image, symbols: ["--remote-isf-url", "file://\(repo)/symbols/banners.json"])
        try hostIsClean()

        // Compressed (LiME's compress=1): the same checks pass on the inflated image, and fewer
        // bytes crossed the link than it holds.
        let compressedOutput = scratch.file("compressed")
        let compressed = try runProcess(Products.farm, ["capture", "--lab", name, "--repo", scratch.file("plain/repo"), "--output", compressedOutput,
                                                        "--compress", "on", "--manifest", plainManifest, "--cache", project.cache])
        #expect(compressed.status == 0, "\(compressed.stdout)\(compressed.stderr)")
        let inflated = compressedOutput + "/" + (try #require(try FileManager.default.contentsOfDirectory(atPath: compressedOutput).first { $0.hasSuffix(".lime") }))
        #expect(try FileManager.default.attributesOfItem(atPath: inflated)[.posixPermissions] as? NSNumber == 0o600)
        #expect(try LimeImage.ranges(of: inflated) == ranges)
        let inflatedBytes = try Data(contentsOf: URL(fileURLWithPath: inflated), options: .alwaysMapped)
        #expect(inflatedBytes.range(of: Data("Linux version \(newest.release)".utf8)) != nil, "no kernel banner in the inflated image")
        let compressedSidecar = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: inflated + ".json"))) as? [String: Any])
        #expect((compressedSidecar["sha256"] as? String) == SHA256.hash(inflatedBytes).hex)
        #expect((compressedSidecar["size"] as? NSNumber)?.intValue == inflatedBytes.count)
        #expect((compressedSidecar["compression"] as? String) == "zlib" && (compressedSidecar["compressionReason"] as? String) == "--compress on")
        let streamed = (compressedSidecar["streamed"] as? NSNumber)?.intValue ?? .max
        #expect(streamed < inflatedBytes.count / 2, "\(streamed) bytes streamed for \(inflatedBytes.count)")
        // That repository has no tables: the table is made from the lab's own BTF and kallsyms, and works as well.
        #expect(compressed.stdout.contains("vol -s \(compressedOutput)/symbols -f \(inflated) linux.pslist"), "\(compressed.stdout)")
        let hostTable = compressedSidecar["symbols"] as? [String: Any] ?? [:]
        #expect(hostTable["source"] as? String == "host", "\(compressedSidecar)")
        try analyses(inflated, symbols: ["-s", compressedOutput + "/symbols"])
        print("lab capture: plain \(sidecar["bytesPerSecond"] ?? "?") B/s (\(sidecar["compression"] ?? "?")), compressed \(compressedSidecar["bytesPerSecond"] ?? "?") B/s,"
              + " \(streamed) bytes streamed for \(inflatedBytes.count), cipher \(sidecar["cipher"] ?? "?")")
        try hostIsClean()

        // A module whose signature is bad: refused before anything reaches the host.
        let bad = scratch.file("bad-repo")
        #expect(try runProcess("/bin/cp", ["-a", repo, bad]).status == 0)
        let module = "modules/lime-\(newest.release).ko"
        var signature = try #require(FileManager.default.contents(atPath: bad + "/" + module + ".sig"))
        signature[signature.count - 5] ^= 0x40
        try signature.write(to: URL(fileURLWithPath: bad + "/" + module + ".sig"))
        let refused = try runProcess(Products.farm, ["capture", "--lab", name, "--repo", bad, "--output", output, "--manifest", manifest,
                                                     "--cache", project.cache])
        #expect(refused.status == 1 && refused.stdout.contains(module + ".sig"), "\(refused.stdout)\(refused.stderr)")
        try hostIsClean()

        // A repository without the host's kernel.
        let other = try #require(kernels.first { $0.release != newest.release && $0.release.hasSuffix("-cloud-amd64") && $0.suite == newest.suite }
                                 ?? kernels.first { $0.release != newest.release && $0.suite == newest.suite })
        let otherManifest = try scratch.write("other/manifest.yml",
                                              ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: [other]),
                                                                       in: ManifestWriter.replacing(section: "profiles", with: "profiles: false\n", in: original)))
        try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("other/recipes"))
        #expect(try runProcess(Products.farm, ["keys", "init", "--manifest", otherManifest]).status == 0)
        let otherBuild = try runProcess(Products.farm, ["build", "--manifest", otherManifest, "--cache", project.cache])
        #expect(otherBuild.status == 0, "\(otherBuild.stdout)\(otherBuild.stderr)")
        let missing = try runProcess(Products.farm, ["capture", "--lab", name, "--repo", scratch.file("other/repo"), "--output", output,
                                                     "--manifest", otherManifest, "--cache", project.cache])
        #expect(missing.status == 1 && missing.stdout.contains("has no module for \(newest.release)"), "\(missing.stdout)\(missing.stderr)")
        try hostIsClean()

        // Ctrl-C while memory streams: LiME is unloaded, the upload removed.
        let interrupted = Process()
        interrupted.executableURL = URL(fileURLWithPath: Products.farm)
        interrupted.arguments = ["capture", "--lab", name, "--repo", repo, "--output", scratch.file("interrupted"),
                                 "--manifest", manifest, "--cache", project.cache]
        interrupted.standardOutput = FileHandle.nullDevice
        interrupted.standardError = FileHandle.nullDevice
        try interrupted.run()
        let deadline = Date().addingTimeInterval(60)
        func partialSize() -> Int {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: scratch.file("interrupted"))) ?? []
            return files.compactMap { try? FileManager.default.attributesOfItem(atPath: scratch.file("interrupted/" + $0))[.size] as? Int }.max() ?? 0
        }
        while Date() < deadline, interrupted.isRunning, partialSize() < 16 << 20 { usleep(100_000) }
        #expect(partialSize() >= 16 << 20, "streaming never started")
        kill(interrupted.processIdentifier, SIGINT)
        interrupted.waitUntilExit()
        #expect(interrupted.terminationStatus == 130)
        let lsmod = try labShell("lsmod")
        #expect(!lsmod.contains("lime"), "LiME is still loaded:\n\(lsmod)")
        try hostIsClean()

        // A farm killed while its lab boots leaves QEMU running; the next 'farm lab down' ends it.
        let orphan = "orphan-\(getpid())"
        let orphanDirectory = Labs(cacheDirectory: project.cache).directory(try LabName(orphan))
        let starting = Process()
        starting.executableURL = URL(fileURLWithPath: Products.farm)
        starting.arguments = ["lab", "up", newest.release, "--name", orphan, "--memory", "128", "--accel", "tcg",
                              "--manifest", manifest, "--cache", project.cache]
        starting.standardOutput = FileHandle.nullDevice
        starting.standardError = FileHandle.nullDevice
        try starting.run()
        func qemuOfOrphan() -> Int32? {
            let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
            return pids.first { pid in
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), !stat.contains(") Z ") else { return false }
                // QEMU itself: farm's key generation and SSH probes also name the lab's directory.
                guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                      String(decoding: cmdline.prefix { $0 != 0 }, as: UTF8.self).hasSuffix("qemu-system-x86_64") else { return false }
                return cmdline.range(of: Data((orphanDirectory + "/").utf8)) != nil
            }
        }
        let bootDeadline = Date().addingTimeInterval(60)
        while Date() < bootDeadline, qemuOfOrphan() == nil { usleep(100_000) }
        #expect(qemuOfOrphan() != nil, "farm lab up never started QEMU")
        kill(starting.processIdentifier, SIGKILL)
        starting.waitUntilExit()
        #expect(try farm(["lab", "list"]).stdout.contains(orphan))
        let ended = try farm(["lab", "down", orphan])
        #expect(ended.status == 0 && ended.stdout.contains("ended"), "\(ended.stdout)\(ended.stderr)")
        #expect(qemuOfOrphan() == nil, "the orphaned lab's QEMU outlived 'farm lab down'")
        #expect(!FileManager.default.fileExists(atPath: orphanDirectory))
    }
}
