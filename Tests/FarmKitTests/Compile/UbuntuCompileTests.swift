import FarmEngine
import FarmKit
import Foundation
import Testing

// In the real-archive suite (serialized): it starts from the kernel CompileProject built.
extension DebianArchiveTests {
    @Suite("LiME built for an Ubuntu-layout kernel", .serialized)
    struct UbuntuCompileTests {
        /// The machines here reach Debian's archive only, so a real Debian 6.1 kernel's headers are
        /// repackaged in Ubuntu's layout (indep `linux-headers-<abi>`, flavour `linux-headers-<abi>-amd64`
        /// with compiled scripts and a Makefile linking into the indep tree, no -common, no kbuild),
        /// served as an Ubuntu archive, crawled, and built, signed and published by the farm binary:
        /// the compiler is read from the headers (gcc-12) and picks the bookworm toolchain.
        @Test func anUbuntuLayoutKernelIsCrawledBuiltSignedAndPublished() async throws {
            let project = try await CompileProject.shared.get()
            // A 6.1 kernel (the project's newest may be a 6.12 backport), its packages fetched into
            // the project's cache by building its bundle there.
            let debian = try DebianArchiveTests().newestBookwormAmd64(try ManifestLoader.load(path: project.manifest), series: "6.1.0-")
            let release = debian.release
            let abi = String(release.dropLast("-amd64".count))
            let scratch = try Scratch()
            let fetch = try runProcess(Products.farm, ["bundle", release, "--manifest", project.manifest, "--cache", project.cache, "-o", scratch.file("debian-bundle")])
            #expect(fetch.status == 0, "\(fetch.stdout)\(fetch.stderr)")
            let objects = ContentStore(reading: project.cache + "/cas")

            // Debian's three packages, as the build fetched them.
            let tree = scratch.file("debian")
            for package in debian.packages {
                _ = try PackageExtractor.extract(package: try objects.verifiedPath(of: package.sha256), into: tree)
            }
            let kbuild = try #require(try FileManager.default.contentsOfDirectory(atPath: tree + "/usr/lib").first { $0.hasPrefix("linux-kbuild-") })
            func run(_ tool: String, _ arguments: [String]) throws {
                let result = try runProcess(tool, arguments)
                guard result.status == 0 else { throw TestFailure("\(tool) \(arguments.joined(separator: " ")): \(result.stderr)") }
            }
            func replaceWithKbuild(_ directory: String) throws {
                for name in ["scripts", "tools"] {
                    try? FileManager.default.removeItem(atPath: directory + "/" + name)
                    try run("/bin/cp", ["-a", "\(tree)/usr/lib/\(kbuild)/\(name)", directory + "/" + name])
                }
            }

            // indep: the common tree under Ubuntu's name, its scripts real files.
            let indep = scratch.file("indep/usr/src/linux-headers-\(abi)")
            try FileManager.default.createDirectory(atPath: scratch.file("indep/usr/src"), withIntermediateDirectories: true)
            try run("/bin/cp", ["-a", "\(tree)/usr/src/linux-headers-\(abi)-common", indep])
            try replaceWithKbuild(indep)
            // flavour: the arch tree with compiled scripts, the Makefile a relative link into the
            // indep tree (Debian's names the common tree by absolute path), the build link.
            let flavour = scratch.file("flavour/usr/src/linux-headers-\(release)")
            try FileManager.default.createDirectory(atPath: scratch.file("flavour/usr/src"), withIntermediateDirectories: true)
            try run("/bin/cp", ["-a", "\(tree)/usr/src/linux-headers-\(release)", flavour])
            try replaceWithKbuild(flavour)
            try FileManager.default.removeItem(atPath: flavour + "/Makefile")
            try FileManager.default.createSymbolicLink(atPath: flavour + "/Makefile", withDestinationPath: "../linux-headers-\(abi)/Makefile")
            // Ubuntu's link farm: what the flavour tree lacks of the indep tree is a relative link
            // into it, so the flavour directory is a whole source tree (srctree = objtree).
            func linkFarm(_ relative: String) throws {
                let fileManager = FileManager.default
                for name in try fileManager.contentsOfDirectory(atPath: indep + relative).sorted() {
                    let path = relative + "/" + name
                    let inFlavour = flavour + path
                    var status = stat()
                    if lstat(inFlavour, &status) != 0 {
                        let depth = path.split(separator: "/").count
                        try fileManager.createSymbolicLink(atPath: inFlavour, withDestinationPath:
                            String(repeating: "../", count: depth) + "linux-headers-\(abi)" + path)
                    } else if (status.st_mode & S_IFMT) == S_IFDIR {
                        try linkFarm(path)
                    }
                }
            }
            try linkFarm("")
            try FileManager.default.createDirectory(atPath: scratch.file("flavour/lib/modules/\(release)"), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: scratch.file("flavour/lib/modules/\(release)/build"),
                                                       withDestinationPath: "/usr/src/linux-headers-\(release)")
            let leftovers = try runProcess("/bin/grep", ["-rl", "-e", "linux-headers-\(abi)-common", "-e", "/usr/lib/\(kbuild)", scratch.file("flavour"), scratch.file("indep")])
            #expect(leftovers.stdout.isEmpty, "the Ubuntu-layout trees still name Debian's: \(leftovers.stdout)")

            let archive = try LocalAptArchive(scratch)
            let pool = archive.root + "/pool/main/l/linux"
            try FileManager.default.createDirectory(atPath: pool, withIntermediateDirectories: true)
            let version = try #require(debian.version)
            for (staging, name, architecture, depends) in [("indep", "linux-headers-\(abi)", "all", nil),
                                                           ("flavour", "linux-headers-\(release)", "amd64", "linux-headers-\(abi)")] {
                try scratch.write("\(staging)/DEBIAN/control", "Package: \(name)\nVersion: \(version)\nArchitecture: \(architecture)\nSource: linux\n"
                                  + "Maintainer: farm tests <t@farm.test>\n" + (depends.map { "Depends: \($0)\n" } ?? "") + "Description: Ubuntu-layout headers\n")
                try run("/usr/bin/dpkg-deb", ["--root-owner-group", "-Zxz", "--build", scratch.file(staging), "\(pool)/\(name)_\(version)_\(architecture).deb"])
            }
            let lime = try #require(try ManifestLoader.load(path: project.manifest).packages.first { $0.name == "lime-forensics-dkms" })
            try FileManager.default.createDirectory(atPath: archive.root + "/pool/main/l/lime-forensics", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: try objects.verifiedPath(of: lime.package.sha256),
                                             toPath: archive.root + "/pool/main/l/lime-forensics/" + (lime.package.url as NSString).lastPathComponent)
            try archive.publish(suite: "jammy", version: "22.04", codename: "jammy")

            // The toolchain's root comes from Debian's archive; the kernel from the Ubuntu one.
            try FileManager.default.createDirectory(atPath: scratch.file("project/recipes/toolchains"), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: project.directory + "/recipes/lime.yml", toPath: scratch.file("project/recipes/lime.yml"))
            try scratch.write("project/recipes/toolchains/debian-bookworm.yml",
                              try String(contentsOfFile: project.directory + "/recipes/toolchains/debian-bookworm.yml", encoding: .utf8) + "upstream: debian\n")
            let ubuntu = "  ubuntu:\n    kind: apt\n    family: ubuntu\n    mirror: file://\(archive.root)\n    keyring: \(archive.keyring)\n    suites: [jammy]\n"
            let rest = "modules: [lime]\nsigning:\n  module-key: keys/module\n  repo-key: keys/repo\npublish:\n  dir: repo\nkernels: []\n"
            let manifest = try scratch.write("project/manifest.yml", "farm: 1\nupstreams:\n" + ubuntu + rest)
            func farm(_ arguments: [String]) throws -> ProcessResult {
                try runProcess(Products.farm, arguments + ["--manifest", manifest], environment: ["CI": "true"])
            }

            let crawl = try farm(["crawl", "-v", "--cache", project.cache])
            let index: String = (try? runProcess("/usr/bin/xz", ["-dc", archive.root + "/dists/jammy/main/binary-amd64/Packages.xz"]).stdout) ?? "no Packages"
            let files: [String] = (try? FileManager.default.subpathsOfDirectory(atPath: archive.root)) ?? []
            #expect(crawl.status == 0, "\(crawl.stdout)\(crawl.stderr)\n\(index)\n\(files.joined(separator: "\n"))")
            let kernel = try #require(try ManifestLoader.load(path: manifest).kernels.first, "\(crawl.stdout)\(crawl.stderr)")
            #expect(kernel.name == KernelName(release: release, upstream: "ubuntu"))
            #expect(kernel.family == .ubuntu)
            #expect(kernel.distribution == "ubuntu-22.04")
            #expect(kernel.compiler == "gcc-12")
            #expect(kernel.packages.count == 2)

            // Only the crawl knows the Ubuntu upstream; the toolchain names Debian's, crawled by no one here.
            let text = try String(contentsOfFile: manifest, encoding: .utf8)
            try scratch.write("project/manifest.yml", text.replacingOccurrences(
                of: "upstreams:\n", with: "upstreams:\n  debian:\n    kind: apt\n    mirror: apt\n    suites: [bookworm]\n"))
            let keys = try farm(["keys", "init"])
            #expect(keys.status == 0, "\(keys.stdout)\(keys.stderr)")
            let build = try farm(["build", "--cache", project.cache])
            #expect(build.status == 0, "\(build.stdout)\(build.stderr)")
            let module = scratch.file("project/repo/modules/lime-\(release).ko")
            let data = try #require(FileManager.default.contents(atPath: module), "\(build.stdout)\(build.stderr)")
            let marker = Data("vermagic=".utf8)
            let start = try #require(data.range(of: marker)).upperBound
            let end = data[start...].firstIndex(of: 0) ?? data.endIndex
            #expect(String(decoding: data[start..<end], as: UTF8.self).trimmingCharacters(in: .whitespaces)
                    == "\(release) SMP preempt mod_unload modversions")
            let verified = try farm(["verify", scratch.file("project/repo")])
            #expect(verified.status == 0 && verified.stdout.contains("module signatures OK"), "\(verified.stdout)\(verified.stderr)")

            // The bundle says it is Ubuntu's layout, and its Makefile is the relative link.
            let bundle = try farm(["bundle", release, "--cache", project.cache, "-o", scratch.file("out")])
            #expect(bundle.status == 0, "\(bundle.stdout)\(bundle.stderr)")
            let distro = try runProcess("/bin/tar", ["-xzOf", scratch.file("out/bundle-\(release).tgz"), "./BUNDLE_DISTRO"])
            #expect(distro.stdout == "ubuntu")
            let listing = try runProcess("/bin/tar", ["-tvzf", scratch.file("out/bundle-\(release).tgz"), "./usr/src/linux-headers-\(release)/Makefile"])
            #expect(listing.stdout.contains("Makefile -> ../linux-headers-\(abi)/Makefile"), "\(listing.stdout)")
        }
    }
}
