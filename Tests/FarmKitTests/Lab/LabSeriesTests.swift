import FarmEngine
import FarmKit
import Foundation
import Testing

extension DebianArchiveTests.CompileTests {
    /// `farm lab up` reaches SSH on the newest amd64 kernel of every series the default manifest
    /// crawls: 5.10 and 6.1 build virtio (and virtio-pci, virtio-ring) as modules, which the
    /// initramfs must load in dependency order; 6.12 compresses its modules. The hint `farm lab up`
    /// prints is run as printed.
    @Test func labUpReachesSSHOnEveryKernelSeries() async throws {
        let project = try await CompileProject.shared.get()
        let kernels = try ManifestLoader.load(path: project.manifest).kernels.filter {
            $0.release.hasSuffix("-amd64") && !$0.release.hasSuffix("-cloud-amd64") && !$0.release.hasSuffix("-rt-amd64") && $0.image != nil
        }
        let series: [(label: String, matches: (Kernel) -> Bool)] = [
            ("5.10 bullseye", { $0.release.hasPrefix("5.10.") && $0.suite?.hasPrefix("bullseye") == true }),
            ("6.1 bookworm", { $0.release.hasPrefix("6.1.") && $0.suite?.hasPrefix("bookworm") == true }),
            ("6.12 bookworm", { $0.release.hasPrefix("6.12.") && $0.release.contains("+deb12") }),
            ("6.12 trixie", { $0.release.hasPrefix("6.12.") && $0.suite?.hasPrefix("trixie") == true }),
        ]
        func farm(_ arguments: [String]) throws -> ProcessResult {
            try runProcess(Products.farm, arguments + ["--manifest", project.manifest, "--cache", project.cache], environment: ["CI": "true"])
        }
        for (index, (label, matches)) in series.enumerated() {
            let kernel = try #require(kernels.filter(matches).max { DebianVersion.less($0.version ?? "", $1.version ?? "") },
                                      "the crawl has no \(label) amd64 kernel")
            let name = "series-\(getpid())-\(index)"
            let up = try farm(["lab", "up", kernel.release, "--name", name, "--memory", "256", "--accel", "tcg"])
            defer { _ = try? farm(["lab", "down", name]) }
            #expect(up.status == 0, "\(label) \(kernel.release): \(up.stdout)\(up.stderr)")
            guard up.status == 0 else { continue }
            // The hint as printed: `farm lab ssh --name NAME`.
            let hint = try #require(up.stdout.split(separator: "\n").first { $0.contains("farm lab ssh") })
            let words = hint.split(separator: " ").map(String.init)
            let start = try #require(words.firstIndex(of: "farm"))
            let ssh = Array(words[(start + 1)...].prefix { $0 != "farm" })
            #expect(ssh == ["lab", "ssh", "--name", name], "\(hint)")
            let uname = try runProcess(Products.farm, ssh + ["--manifest", project.manifest, "--cache", project.cache, "--", "uname", "-r"])
            #expect(uname.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == kernel.release, "\(label): \(uname.stdout)\(uname.stderr)")
            let down = try farm(["lab", "down", name])
            #expect(down.status == 0 && down.stdout.contains("ended"), "\(down.stdout)\(down.stderr)")
        }
    }

    /// A kernel that does not come up (here: an initramfs without /init, so the kernel panics)
    /// leaves its console log where the error says; the lab itself is gone.
    @Test func labThatDoesNotComeUpKeepsItsConsoleLog() async throws {
        let project = try await CompileProject.shared.get()
        let scratch = try Scratch()
        let session = try Session(manifestPath: project.manifest, cacheDirectory: project.cache, rules: FarmRules())
        let (kernel, _) = try await session.labImage(release: project.release, options: BuildOptions(), reporter: EventLog())
        let empty = try scratch.write("empty.cpio", "")
        let labs = Labs(cacheDirectory: project.cache)
        let name = try LabName("panic-\(getpid())")
        #expect {
            try labs.up(release: project.release, kernel: kernel, initramfs: empty,
                        options: .init(name: name, memoryMiB: 128, accelerator: "tcg", bootTimeout: 60)) { _ in }
        } throws: { error in
            "\(error)".contains("QEMU exited") && "\(error)".contains(labs.keptConsole(name))
        }
        let console = try String(contentsOfFile: labs.keptConsole(name), encoding: .utf8)
        #expect(console.contains("Kernel panic"), "\(console)")
        #expect(!FileManager.default.fileExists(atPath: labs.directory(name)))
        try? FileManager.default.removeItem(atPath: labs.keptConsole(name))
    }
}
