import FarmEngine
import FarmKit
import Foundation
import Testing

/// Margarita Shotgun 0.4.1's client, installed by scripts/install-margaritashotgun.
enum MargaritaShotgun {
    static var python: String {
        (ProcessInfo.processInfo.environment["FARM_PEERS"] ?? "/opt/farm-peers") + "/margaritashotgun/bin/python"
    }

    static var client: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Repository/margarita_client.py").path
    }

    /// Fetches and verifies `release`'s module from the repository at `url` with signature checking on.
    static func fetch(_ url: String, release: String, trusting key: String, scratch: Scratch, into out: String) throws -> ProcessResult {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw TestFailure("Margarita Shotgun is not installed at \(python); run scripts/install-margaritashotgun")
        }
        let home = scratch.file("ms-home-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        return try runProcess(python, ["-W", "ignore", client, url, release, "--home", home, "--trusted-key", key, "--out", out])
    }
}

/// `python3 -m http.server` on 127.0.0.1 (Margarita Shotgun reads over HTTP only), stopped on deinit.
final class StaticServer {
    let process = Process()
    let port: Int

    init(directory: String) throws {
        port = Int.random(in: 20_000...60_000)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-m", "http.server", "\(port)", "--bind", "127.0.0.1", "--directory", directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, process.isRunning {
            if (try? runProcess("/usr/bin/python3", ["-c", "import socket; socket.create_connection(('127.0.0.1', \(port)), 1)"]))?.status == 0 {
                return
            }
            usleep(100_000)
        }
        throw TestFailure("http.server did not start on port \(port)")
    }

    var url: String { "http://127.0.0.1:\(port)" }

    deinit {
        // SIGKILL: the child may inherit a signal mask that blocks SIGTERM from the test runner's thread.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

extension DebianArchiveTests.CompileTests {
    /// The real LiME modules of the newest bookworm kernel and its cloud flavour, signed and
    /// published by `farm build`; a kernel that fails is left out under `-k`; the repository
    /// is read by Margarita Shotgun 0.4.1 with signature checking on (also with one module), is
    /// republished incrementally, and `farm verify` refuses every kind of tampering by name.
    @Test func publishedRepositoryIsReadByMargaritaShotgunAndTamperingIsRefusedByName() async throws {
        let project = try await CompileProject.shared.get()
        let scratch = try Scratch()
        let kernels = try ManifestLoader.load(path: project.manifest).kernels
        let newest = try #require(kernels.first { $0.release == project.release })
        let cloudRelease = project.release.replacingOccurrences(of: "-amd64", with: "-cloud-amd64")
        let cloud = try #require(kernels.first { $0.release == cloudRelease }, "no \(cloudRelease) in the crawl")
        let broken = try brokenHeadersKernel("6.1.0-99-amd64", in: scratch)
        let original = try String(contentsOfFile: project.manifest, encoding: .utf8)
        let manifest = scratch.file("project/manifest.yml")
        func write(_ kernels: [Kernel], extra: String = "") throws {
            try scratch.write("project/manifest.yml",
                              ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: kernels), in: original) + extra)
        }
        func farm(_ arguments: [String]) throws -> ProcessResult {
            try runProcess(Products.farm, arguments + ["--manifest", manifest], environment: ["CI": "true"])
        }
        try write([newest, cloud], extra: broken)
        try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("project/recipes"))
        let keys = try farm(["keys", "init"])
        #expect(keys.status == 0, "\(keys.stdout)\(keys.stderr)")
        let repo = scratch.file("project/repo")

        // 1. Under -k the broken kernel fails and the other two are published all the same.
        let build = try farm(["build", "-k", "--cache", project.cache])
        let output = build.stdout + build.stderr
        #expect(build.status == 1, "\(output)")
        #expect(output.contains("FAILED: ") && output.contains("compile lime/6.1.0-99-amd64"), "\(output)")
        #expect(output.contains("repository \(repo): 2 module(s)"), "\(output)")
        let verified = try farm(["verify", repo])
        #expect(verified.status == 0 && verified.stdout.contains("2 module(s)") && verified.stdout.contains("module signatures OK"),
                "\(verified.stdout)\(verified.stderr)")
        let module = "modules/lime-\(newest.release).ko"
        // The hash is the kernel's CONFIG_MODULE_SIG_HASH, and the kernel's own check passes.
        let moduleCheck = try runProcess(Products.farm, ["verify", repo + "/" + module, "--cert", scratch.file("project/keys/module.crt")])
        #expect(moduleCheck.status == 0 && moduleCheck.stdout.contains("sha256"), "\(moduleCheck.stdout)\(moduleCheck.stderr)")

        // 2. Margarita Shotgun's client fetches and verifies the module for `uname -r`, over HTTP.
        let key = scratch.file("project/keys/repo.asc")
        do {
            let server = try StaticServer(directory: repo)
            for release in [newest.release, cloud.release] {
                let fetched = try MargaritaShotgun.fetch(server.url, release: release, trusting: key, scratch: scratch, into: scratch.file("ms"))
                #expect(fetched.status == 0, "\(fetched.stdout)\(fetched.stderr)")
                #expect(FileManager.default.contents(atPath: scratch.file("ms/lime-\(release).ko"))
                        == FileManager.default.contents(atPath: repo + "/modules/lime-\(release).ko"))
            }
            let unknown = try MargaritaShotgun.fetch(server.url, release: "6.1.0-99-amd64", trusting: key, scratch: scratch, into: scratch.file("ms"))
            #expect(unknown.status == 1)
            // farm reads it over HTTP as well.
            let overHTTP = try farm(["verify", server.url])
            #expect(overHTTP.status == 0, "\(overHTTP.stdout)\(overHTTP.stderr)")
        }

        // 3. One kernel left: republished incrementally, and still readable by Margarita Shotgun.
        func identity(_ path: String) throws -> [String] {
            let attributes = try FileManager.default.attributesOfItem(atPath: repo + "/" + path)
            return ["\(attributes[.systemFileNumber] ?? "")", "\(attributes[.modificationDate] ?? "")"]
        }
        let before = (try identity(module), try identity(module + ".sig"))
        try write([newest])
        let publish = try farm(["publish", "--cache", project.cache])
        #expect(publish.status == 0, "\(publish.stdout)\(publish.stderr)")
        #expect(publish.stdout.contains("1 module(s)"), "\(publish.stdout)")
        #expect(!publish.stdout.contains("sign lime/"), "a module was signed again:\n\(publish.stdout)")
        #expect(try identity(module) == before.0 && identity(module + ".sig") == before.1, "an unchanged module was rewritten")
        let again = try farm(["publish", "--cache", project.cache])
        #expect(again.stdout.contains("up to date"), "\(again.stdout)")
        let lone = try farm(["verify", repo])
        #expect(lone.status == 0 && lone.stdout.contains("1 module(s)"), "\(lone.stdout)\(lone.stderr)")
        do {
            let server = try StaticServer(directory: repo)
            let fetched = try MargaritaShotgun.fetch(server.url, release: newest.release, trusting: key, scratch: scratch, into: scratch.file("ms-one"))
            #expect(fetched.status == 0, "a one-module repository: \(fetched.stdout)\(fetched.stderr)")
        }

        // 4. Tampering, each in a copy: refused by farm verify, naming the file.
        func tampered(_ name: String, _ change: (String) throws -> Void) throws -> (ProcessResult, String) {
            let copy = scratch.file("tampered-\(name)")
            #expect(try runProcess("/bin/cp", ["-a", repo, copy]).status == 0)
            try change(copy)
            return (try farm(["verify", copy]), copy)
        }
        let (flipped, flippedRepo) = try tampered("module") { copy in
            var bytes = try #require(FileManager.default.contents(atPath: copy + "/" + module))
            bytes[bytes.count / 2] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: copy + "/" + module))
        }
        #expect(flipped.status == 1 && flipped.stderr.contains(module + ": sha256"), "\(flipped.stderr)")
        do {
            let server = try StaticServer(directory: flippedRepo)
            let fetched = try MargaritaShotgun.fetch(server.url, release: newest.release, trusting: key, scratch: scratch, into: scratch.file("ms-bad"))
            #expect(fetched.status == 1, "Margarita Shotgun took a tampered module")
        }
        let (repomd, _) = try tampered("repomd") { copy in
            let path = copy + "/repodata/repomd.xml"
            let text = try String(contentsOfFile: path, encoding: .utf8)
            try Data(text.replacingOccurrences(of: "<revision>", with: "<revision>1").utf8).write(to: URL(fileURLWithPath: path))
        }
        #expect(repomd.status == 1 && repomd.stderr.contains("repodata/repomd.xml: bad signature"), "\(repomd.stderr)")
        let other = try RepositoryKey.create(at: .init(base: scratch.file("other/repo")), uid: "someone else <else@farm.test>")
        let (foreign, _) = try tampered("foreign") { copy in
            let target = copy + "/" + module
            unlink(target + ".sig")
            try GnuPG.detachSign(file: target, output: target + ".sig", keyHome: scratch.file("other/repo"), fingerprint: other.fingerprint)
        }
        #expect(foreign.status == 1 && foreign.stderr.contains(module + ".sig: the signature was not made by the pinned key"), "\(foreign.stderr)")
        let (unsigned, _) = try tampered("unsigned") { copy in unlink(copy + "/" + module + ".sig") }
        #expect(unsigned.status == 1 && unsigned.stderr.contains(module + ".sig: missing"), "\(unsigned.stderr)")
        // Another repository key pinned: refused at REPO_SIGNING_KEY.asc.
        let pinnedElsewhere = try farm(["verify", repo, "--fingerprint", other.fingerprint])
        #expect(pinnedElsewhere.status == 1 && pinnedElsewhere.stderr.contains("REPO_SIGNING_KEY.asc"), "\(pinnedElsewhere.stderr)")
    

        // 5. A recipe that ships compressed modules: signed first, then compressed as modules_install does.
        let recipe = try String(contentsOfFile: scratch.file("project/recipes/lime.yml"), encoding: .utf8)
        for (compression, tool, suffix) in [("xz", "/usr/bin/xz", ".xz"), ("zstd", "/usr/bin/zstd", ".zst"), ("gzip", "/bin/gzip", ".gz")] {
            try scratch.write("project/recipes/lime.yml", recipe + "compress: \(compression)\n")
            let out = scratch.file("compressed-\(compression)")
            let made = try farm(["module", newest.release, "--cache", project.cache, "-o", out])
            #expect(made.status == 0, "\(made.stdout)\(made.stderr)")
            let signed = out + "/lime-\(newest.release).ko"
            let unpacked = try runProcess("/bin/sh", ["-c", "\(tool) -dc '\(signed + suffix)' > '\(out)/unpacked.ko'"])
            #expect(unpacked.status == 0, "\(tool) -dc: \(unpacked.stderr)")
            #expect(FileManager.default.contents(atPath: out + "/unpacked.ko") == FileManager.default.contents(atPath: signed),
                    "\(compression): the compressed file is not the signed module")
            #expect(try ModuleVerifier.verify(modulePath: out + "/unpacked.ko", certificate: scratch.file("project/keys/module.crt")).hash == "sha256")
            if compression == "xz" {
                let listed = try runProcess(tool, ["--robot", "-lvv", signed + suffix]).stdout
                #expect(listed.contains("CRC32") && listed.contains("--lzma2=dict=1MiB"), "\(listed)")
            }
        }
    }
}
