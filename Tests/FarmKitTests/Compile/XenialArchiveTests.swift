import FarmEngine
import FarmKit
import Foundation
import Testing

/// The users' own example, end to end, against a real Ubuntu archive: `farm crawl` pins xenial's
/// 4.4 kernels, `farm build '4.4.*'` makes the xenial gcc-5 root (mmdebstrap with the Ubuntu
/// keyring) and builds, signs and publishes LiME for the newest of them. The machines farm's CI
/// runs on reach Debian's archive only, so this runs where `FARM_UBUNTU_MIRROR` names an Ubuntu
/// archive URL and Debian's `ubuntu-keyring` is installed; elsewhere it is skipped, saying so.
@Suite("Ubuntu xenial's archive, for real", .serialized,
       .enabled(if: ProcessInfo.processInfo.environment["FARM_UBUNTU_MIRROR"] != nil
                    && FileManager.default.fileExists(atPath: "/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
                "needs FARM_UBUNTU_MIRROR (an Ubuntu archive URL) and ubuntu-keyring's /usr/share/keyrings/ubuntu-archive-keyring.gpg"))
struct XenialArchiveTests {
    @Test func xenialKernelsAreCrawledAndTheNewestBuildsWithTheXenialGcc5Root() async throws {
        let mirror = try #require(ProcessInfo.processInfo.environment["FARM_UBUNTU_MIRROR"])
        let scratch = try Scratch()
        let root = DebianArchiveTests.projectRoot
        try FileManager.default.createDirectory(atPath: scratch.file("project/recipes/toolchains"), withIntermediateDirectories: true)
        for file in ["recipes/lime.yml", "recipes/toolchains/ubuntu-xenial.yml"] {
            try FileManager.default.copyItem(atPath: root + "/" + file, toPath: scratch.file("project/" + file))
        }
        // Debian's upstream for the lime-forensics-dkms pin; Ubuntu's for the kernels and the root.
        let manifest = try scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          debian: {kind: apt, mirror: apt, suites: [trixie]}
          ubuntu:
            kind: apt
            family: ubuntu
            mirror: \(mirror)
            keyring: /usr/share/keyrings/ubuntu-archive-keyring.gpg
            suites: [xenial-updates]
            components: [main]
        modules: [lime]
        signing: {module-key: keys/module, repo-key: keys/repo}
        publish: {dir: repo}
        kernels: []

        """)
        func farm(_ arguments: [String]) throws -> ProcessResult {
            try runProcess(Products.farm, arguments + ["--manifest", manifest], environment: ["CI": "true"])
        }
        let crawl = try farm(["crawl"])
        #expect(crawl.status == 0, "\(crawl.stdout)\(crawl.stderr)")
        let kernels = try ManifestLoader.load(path: manifest).kernels.filter { $0.release.hasPrefix("4.4.0-") && $0.release.hasSuffix("-generic") }
        let newest = try #require(kernels.max { DebianVersion.less($0.version ?? "", $1.version ?? "") }, "no xenial 4.4 generic kernel: \(crawl.stdout)")
        #expect(newest.family == .ubuntu && newest.distribution == "ubuntu-16.04" && newest.compiler == "gcc-5", "\(newest)")
        #expect(try farm(["keys", "init"]).status == 0)
        // xenial-updates lists each flavour's newest 4.4 kernel only: a handful of compiles.
        let build = try farm(["build", "-k", "4.4.*"])
        let module = scratch.file("project/repo/modules/lime-\(newest.release).ko")
        #expect(FileManager.default.fileExists(atPath: module), "\(build.stdout)\(build.stderr)")
        let vermagic = try ModuleInfo.read(path: module).value("vermagic") ?? ""
        #expect(vermagic.hasPrefix("\(newest.release) SMP mod_unload modversions"), "vermagic: \(vermagic)")
        let verified = try farm(["verify", scratch.file("project/repo")])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
    }
}
