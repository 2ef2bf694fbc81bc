import FarmEngine
import FarmKit
import Foundation
import Testing

/// Package extraction and bundles, with packages made by dpkg-deb, rpmbuild, ar and Python's tarfile.
@Suite("Packages and bundles")
struct BundleTests {
    static let release = "6.1.0-47-amd64"

    // MARK: Reading packages

    @Test(arguments: ["xz", "zstd", "gzip", "none"])
    func readsDataMemberOfEachCompression(_ compression: String) throws {
        let scratch = try Scratch()
        let deb = try Fixtures.deb(in: scratch, name: "linux-headers-test", compression: compression, files: [
            "usr/src/linux-headers-test/include/linux/version.h": "#define LINUX_VERSION_CODE 393472\n",
        ], links: ["usr/src/linux-headers-test/version.h": "include/linux/version.h"])
        let member = compression == "none" ? "data.tar" : "data.tar.\(["xz": "xz", "zstd": "zst", "gzip": "gz"][compression]!)"
        #expect(try Fixtures.run("ar", ["t", deb]).split(separator: "\n").contains(Substring(member)))

        let summary = try PackageExtractor.extract(package: deb, into: scratch.file("staging"))
        #expect(summary.format == .deb)
        #expect(summary.name == "linux-headers-test")
        #expect(try scratch.read("staging/usr/src/linux-headers-test/include/linux/version.h") == "#define LINUX_VERSION_CODE 393472\n")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: scratch.file("staging/usr/src/linux-headers-test/version.h"))
            == "include/linux/version.h")
    }

    /// dpkg-deb on several cores writes xz in independent blocks, which farm decodes at once:
    /// the tree is the one-block decoder's, and a cut-off payload is refused, naming the member.
    @Test func readsMultiBlockXzPayloadInMemoryAndRefusesATruncatedOne() throws {
        let scratch = try Scratch()
        var files: [String: String] = [:]
        for index in 0..<40 { files["usr/src/linux-headers-6.1.0-1-test/include/h\(index).h"] = String(repeating: "#define H\(index) \(index)\n", count: 400) }
        let deb = try Fixtures.deb(in: scratch, name: "linux-headers-test", compression: "none", files: files)
        let work = scratch.file("repack")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        _ = try Fixtures.run("ar", ["x", deb], directory: work)
        _ = try Fixtures.run("xz", ["-T1", "--block-size=16KiB", "data.tar"], directory: work)
        let blocks = try Fixtures.run("sh", ["-c", "xz --robot -lv data.tar.xz | grep -c '^block'"], directory: work)
        #expect((Int(blocks.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 10)
        let multi = scratch.file("multi.deb")
        let control = try Fixtures.run("ar", ["t", deb]).split(separator: "\n").map(String.init).first { $0.hasPrefix("control.tar") }!
        _ = try Fixtures.run("ar", ["rcD", multi, "debian-binary", control, "data.tar.xz"], directory: work)

        try PackageExtractor.extract(package: multi, into: scratch.file("staged"))
        let tree = ExtractedTree()
        try PackageExtractor.read(packages: [multi], into: tree)
        try BundleBuilder.build(stagingRoot: scratch.file("staged"), release: "6.1.0-1-test", distro: "debian", checksum: "c",
                                output: scratch.file("staged.tar"), compression: .none)
        try BundleBuilder.build(packages: tree, release: "6.1.0-1-test", distro: "debian", checksum: "c",
                                output: scratch.file("memory.tar"), compression: .none)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("memory.tar")))
                == (try Data(contentsOf: URL(fileURLWithPath: scratch.file("staged.tar")))))

        _ = try Fixtures.run("sh", ["-c", "head -c $(( $(stat -c %s data.tar.xz) / 2 )) data.tar.xz > cut && mv cut data.tar.xz"], directory: work)
        let truncated = scratch.file("truncated.deb")
        _ = try Fixtures.run("ar", ["rcD", truncated, "debian-binary", control, "data.tar.xz"], directory: work)
        let error = #expect(throws: (any Error).self) { try PackageExtractor.read(packages: [truncated], into: ExtractedTree()) }
        #expect(error.map { "\($0)" }?.contains("truncated.deb: data.tar.xz") == true, "\(error as Any)")
    }

    @Test(.enabled(if: Fixtures.hasTool("rpmbuild"), "rpmbuild is not installed (Debian package rpm; scripts/install-deps installs it)"))
    func readsRpmPackage() throws {
        let scratch = try Scratch()
        let rpm = try Fixtures.rpm(in: scratch)
        let summary = try PackageExtractor.extract(package: rpm, into: scratch.file("staging"))
        #expect(summary.format == .rpm)
        let headers = "staging/usr/src/kernels/5.14.0-1.el9.x86_64"
        #expect(try scratch.read(headers + "/include/version.h") == "#define RHEL_MAJOR 9\n")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: scratch.file(headers + "/version.h")) == "include/version.h")
        #expect(FileManager.default.isExecutableFile(atPath: scratch.file(headers + "/scripts/fixdep")))
    }

    @Test(arguments: ["xz", "gzip", "zstd"])
    func decompressesWholeStream(_ tool: String) throws {
        let scratch = try Scratch()
        let text = String(repeating: "Package: linux-headers-6.1.0-47-amd64\nVersion: 6.1.76-1\n\n", count: 500)
        try scratch.write("Packages", text)
        try Fixtures.run("sh", ["-c", "\(tool) -c Packages > Packages.compressed"], directory: scratch.path)
        let compressed = try Data(contentsOf: URL(fileURLWithPath: scratch.file("Packages.compressed")))
        #expect(compressed.count < text.utf8.count)
        #expect(try Archive.decompress(compressed) == Data(text.utf8))
        #expect(throws: ArchiveError.self) { try Archive.decompress(compressed.prefix(compressed.count / 2)) }
    }

    @Test func refusesFileThatIsNotAPackage() throws {
        let scratch = try Scratch()
        let file = try scratch.write("not-a-package.deb", "<html>404</html>\n")
        let error = try #require(throws: ExtractionError.self) {
            try PackageExtractor.extract(package: file, into: scratch.file("staging"))
        }
        #expect(error.description.contains(file))
        #expect(error.description.contains("neither a .deb"))
    }

    /// A hostile data.tar, written by Python's tarfile and wrapped in a .deb by ar. `OUTSIDE` in
    /// the script is a directory next to the staging one that nothing may reach.
    struct Hostile: Sendable, CustomTestStringConvertible {
        let name: String
        let script: String
        let entry: String
        let reason: String
        var testDescription: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(name: "parent component", script: "file('./usr/../../x')", entry: "./usr/../../x", reason: "'..' component"),
        Hostile(name: "bare parent", script: "file('../x')", entry: "../x", reason: "'..' component"),
        Hostile(name: "absolute path", script: "file('/etc/x')", entry: "/etc/x", reason: "absolute path"),
        Hostile(name: "symlink escaping the root", script: "directory('./usr'); link('./usr/evil', '../../OUTSIDE')",
                entry: "./usr/evil", reason: "leads outside the package root"),
        Hostile(name: "symlink then a file through it", script: "link('./a', 'OUTSIDE_ABSOLUTE'); file('./a/passwd')",
                entry: "./a/passwd", reason: "'a', which is a symlink"),
        Hostile(name: "hardlink to outside", script: "hardlink('./x', '../../OUTSIDE/secret')", entry: "./x", reason: "'..' component"),
        Hostile(name: "absolute hardlink", script: "hardlink('./x', '/etc/passwd')", entry: "./x", reason: "absolute path"),
        Hostile(name: "device node", script: "device('./dev/mem')", entry: "./dev/mem", reason: "character device"),
        Hostile(name: "fifo", script: "fifo('./usr/pipe')", entry: "./usr/pipe", reason: "fifo"),
        Hostile(name: "entry over 2 GiB", script: "huge('./usr/huge')", entry: "./usr/huge", reason: "over the 2 GiB limit"),
    ]

    @Test(arguments: hostile)
    func refusesEntryEscapingRoot(_ hostile: Hostile) throws {
        let scratch = try Scratch()
        let outside = scratch.file("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let script = hostile.script
            .replacingOccurrences(of: "OUTSIDE_ABSOLUTE", with: outside)
            .replacingOccurrences(of: "OUTSIDE", with: "outside")
        let deb = try Fixtures.handMadeDeb(in: scratch, entries: script)

        let error = try #require(throws: ExtractionError.self) {
            try PackageExtractor.extract(package: deb, into: scratch.file("staging"))
        }
        #expect(error.entry == hostile.entry)
        #expect(error.description.contains(deb))
        #expect(error.description.contains("hostile-fixture"), "the package's name from its control file")
        #expect(error.description.contains(hostile.reason), "\(error)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
    }

    @Test(arguments: hostile)
    func refusesEntryEscapingRootWhenReadInMemoryWithTheStagedMessage(_ hostile: Hostile) throws {
        let scratch = try Scratch()
        let outside = scratch.file("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let script = hostile.script
            .replacingOccurrences(of: "OUTSIDE_ABSOLUTE", with: outside)
            .replacingOccurrences(of: "OUTSIDE", with: "outside")
        let deb = try Fixtures.handMadeDeb(in: scratch, entries: script)

        let staged = try #require(throws: ExtractionError.self) {
            try PackageExtractor.extract(package: deb, into: scratch.file("staging"))
        }
        let inMemory = try #require(throws: ExtractionError.self) {
            try PackageExtractor.read(package: deb, into: ExtractedTree())
        }
        let together = try #require(throws: ExtractionError.self) {
            try PackageExtractor.read(packages: [deb], into: ExtractedTree())
        }
        #expect(inMemory.description == staged.description)
        #expect(together.description == staged.description)
        #expect(inMemory.entry == hostile.entry)
        #expect(inMemory.description.contains(hostile.reason), "\(inMemory)")
    }

    // MARK: Bundles

    @Test func bundleHasKernelPackersLayout() throws {
        let scratch = try Scratch()
        let packages = try Fixtures.kernelPackages(in: scratch, release: Self.release)
        for package in packages { try PackageExtractor.extract(package: package, into: scratch.file("staging")) }
        let report = try BundleBuilder.build(stagingRoot: scratch.file("staging"), release: Self.release, distro: "debian",
                                             checksum: "0123abcd", output: scratch.file("bundle.tgz"))
        let tree = try Fixtures.untar(scratch.file("bundle.tgz"), into: scratch.file("tree"))
        let manager = FileManager.default

        #expect(Set(try manager.contentsOfDirectory(atPath: tree)) == [
            "BUNDLE_CHECKSUM", "BUNDLE_DISTRO", "BUNDLE_UNAME", "BUNDLE_VERSION", "BUNDLE_MAJOR", "BUNDLE_MINOR",
            "BUNDLE_BUILD_DIR", "lib", "usr",
        ])
        let meta = try ["CHECKSUM", "DISTRO", "UNAME", "VERSION", "MAJOR", "MINOR", "BUILD_DIR"].map {
            String(decoding: try Data(contentsOf: URL(fileURLWithPath: tree + "/BUNDLE_" + $0)), as: UTF8.self)
        }
        #expect(meta == ["0123abcd", "debian", Self.release, "6", "1", "0", "./usr/src/linux-headers-\(Self.release)"])

        let headers = "usr/src/linux-headers-\(Self.release)"
        let build = "\(tree)/lib/modules/\(Self.release)/build"
        #expect(try manager.destinationOfSymbolicLink(atPath: build) == "../../../\(headers)")
        #expect(try String(contentsOfFile: build + "/Makefile", encoding: .utf8)
            == "include $(BUILD_ROOT)/usr/src/linux-headers-6.1.0-47-common/Makefile\n")
        // An absolute link made relative still reaches the kbuild package's files.
        #expect(try manager.destinationOfSymbolicLink(atPath: "\(tree)/\(headers)/tools") == "../../lib/linux-kbuild-6.1/tools")
        #expect(manager.isExecutableFile(atPath: "\(tree)/\(headers)/tools/objtool/objtool"))
        #expect(manager.isExecutableFile(atPath: "\(tree)/\(headers)/scripts/basic/fixdep"))
        // The common tree's link to device trees Debian does not ship is gone.
        let broken = "\(tree)/usr/src/linux-headers-6.1.0-47-common/scripts/dtc/include-prefixes/arm"
        #expect((try? manager.destinationOfSymbolicLink(atPath: broken)) == nil)
        #expect(report.removedLinks == ["usr/src/linux-headers-6.1.0-47-common/scripts/dtc/include-prefixes/arm -> ../../../arch/arm/boot/dts"])
        #expect(report.dropped == ["etc"])

        // What `tar -tv` shows: root 0:0, normalised modes, the epoch.
        let listing = try Fixtures.run("tar", ["-tvz", "--numeric-owner", "--utc", "-f", scratch.file("bundle.tgz")])
        var modes: [String: String] = [:]
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            #expect(fields[1] == "0/0", "\(line)")
            #expect(fields[3] == "1970-01-01", "\(line)")
            modes[String(fields[5])] = String(fields[0])
        }
        #expect(modes["./usr/lib/linux-kbuild-6.1/scripts/basic/fixdep"] == "-rwxr-xr-x")
        #expect(modes["./\(headers)/.config"] == "-rw-r--r--")
        #expect(modes["./\(headers)/"] == "drwxr-xr-x")
        #expect(modes["./lib/modules/\(Self.release)/build"] == "lrwxrwxrwx")
        // Sorted by path, so the order does not depend on the file system.
        let names = listing.split(separator: "\n").map { String($0.split(separator: " ", omittingEmptySubsequences: true)[5]) }
        #expect(names == names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
    }

    @Test func sparseFilesKeepTheirSizeAndBytesInExtractionAndBundle() throws {
        let scratch = try Scratch()
        let path = "usr/src/linux-headers-\(Self.release)/sparse.bin"
        let (deb, original) = try Fixtures.sparseDeb(in: scratch, path: path)
        // The fixture must hold a real sparse entry (GNU type 'S'), or this test proves nothing.
        let types = try Fixtures.run("python3", ["-c", """
            import subprocess, tarfile, io
            data = subprocess.run(['ar', 'p', '\(deb)', 'data.tar'], capture_output=True, check=True).stdout
            print(''.join(m.type.decode() for m in tarfile.open(fileobj=io.BytesIO(data)) if m.name.endswith('sparse.bin')))
            """])
        #expect(types.trimmingCharacters(in: .whitespacesAndNewlines) == "S")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: original))
        #expect(bytes.count == 1 << 20)

        for package in try Fixtures.kernelPackages(in: scratch, release: Self.release) + [deb] {
            try PackageExtractor.extract(package: package, into: scratch.file("staging"))
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("staging/" + path))) == bytes)
        try BundleBuilder.build(stagingRoot: scratch.file("staging"), release: Self.release, distro: "debian",
                                checksum: "0123abcd", output: scratch.file("bundle.tgz"))
        let tree = try Fixtures.untar(scratch.file("bundle.tgz"), into: scratch.file("tree"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: tree + "/" + path)) == bytes)
    }

    @Test func bundleIsByteReproducible() throws {
        let scratch = try Scratch()
        let packages = try Fixtures.kernelPackages(in: scratch, release: Self.release)
        var bundles: [Data] = []
        for staging in ["first/staging", "second/a-longer-staging-name"] {
            for package in packages { try PackageExtractor.extract(package: package, into: scratch.file(staging)) }
            let output = scratch.file(staging + ".tgz")
            try BundleBuilder.build(stagingRoot: scratch.file(staging), release: Self.release, distro: "debian",
                                    checksum: "feed", output: output)
            bundles.append(try Data(contentsOf: URL(fileURLWithPath: output)))
            // A clock-dependent header or file time would differ between the two.
            Thread.sleep(forTimeInterval: 1.1)
        }
        #expect(bundles[0] == bundles[1])
        let header = [UInt8](bundles[0].prefix(10))
        #expect(header[0...2] == [0x1f, 0x8b, 0x08])
        #expect(header[3] == 0, "no FNAME or other optional gzip fields")
        #expect(header[4...7] == [0, 0, 0, 0], "gzip MTIME is zero")
        // The fixture has a name over ustar's 100 bytes, so a pax header is in the comparison.
        #expect(try Fixtures.run("tar", ["-tzf", scratch.file("first/staging.tgz")]).contains(Fixtures.longName))
    }

    @Test func bundleReadInMemoryHasTheStagedExtractionsTarByteForByte() throws {
        let scratch = try Scratch()
        let headers = "./usr/src/linux-headers-\(Self.release)"
        // Over the kernel's packages: a file replacing an earlier package's file and one replacing
        // a symlink, hardlinks, and a sparse file, as dpkg would overlay them.
        let overlay = try Fixtures.handMadeDeb(in: scratch, entries: [
            "directory('./usr'); directory('./usr/src'); directory('\(headers)')",
            "file('\(headers)/.config'); hardlink('\(headers)/config-copy', '\(headers)/.config')",
            "file('\(headers)/tools'); file('./etc/overlay-note')",
        ].joined(separator: "; "))
        let sparse = try Fixtures.sparseDeb(in: scratch, path: String(headers.dropFirst(2)) + "/sparse.bin").deb
        let packages = try Fixtures.kernelPackages(in: scratch, release: Self.release) + [overlay, sparse]

        for package in packages { try PackageExtractor.extract(package: package, into: scratch.file("staging")) }
        let stagedReport = try BundleBuilder.build(stagingRoot: scratch.file("staging"), release: Self.release, distro: "debian",
                                                   checksum: "feed", output: scratch.file("staged.tar"), compression: .none)
        var bundles: [Data] = []
        for round in 0..<2 {
            let tree = ExtractedTree()
            // One package at a time, then all at once as the bundle task reads them.
            if round == 0 {
                for package in packages { try PackageExtractor.read(package: package, into: tree) }
            } else {
                #expect(try PackageExtractor.read(packages: packages, into: tree).map(\.entries).allSatisfy { $0 > 0 })
            }
            let report = try BundleBuilder.build(packages: tree, release: Self.release, distro: "debian",
                                                 checksum: "feed", output: scratch.file("memory-\(round).tar"), compression: .none)
            #expect(report.dropped == stagedReport.dropped)
            #expect(report.relativized == stagedReport.relativized)
            #expect(report.rewrittenMakefiles == stagedReport.rewrittenMakefiles)
            try BundleBuilder.build(packages: tree, release: Self.release, distro: "debian",
                                    checksum: "feed", output: scratch.file("memory-\(round).tgz"))
            bundles.append(try Data(contentsOf: URL(fileURLWithPath: scratch.file("memory-\(round).tgz"))))
        }
        let staged = try Data(contentsOf: URL(fileURLWithPath: scratch.file("staged.tar")))
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("memory-0.tar"))) == staged)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("memory-1.tar"))) == staged)
        #expect(staged.count > 1 << 20, "the sparse file's megabyte is in the tar")
        #expect(bundles[0] == bundles[1])

        _ = try Fixtures.run("gzip", ["-t", scratch.file("memory-0.tgz")])
        let listed = try Fixtures.run("tar", ["-tzf", scratch.file("memory-0.tgz")])
        #expect(listed == (try Fixtures.run("tar", ["-tf", scratch.file("staged.tar")])))
        #expect(listed.contains("\(headers)/config-copy"))
        let unpacked = try Fixtures.untar(scratch.file("memory-0.tgz"), into: scratch.file("unpacked"))
        #expect(try String(contentsOfFile: unpacked + "/\(headers)/config-copy", encoding: .utf8) == "owned\n")
        #expect(try String(contentsOfFile: unpacked + "/\(headers)/tools", encoding: .utf8) == "owned\n")
    }

    @Test(.enabled(if: Fixtures.hasTool("rpmbuild"), "rpmbuild is not installed (Debian package rpm; scripts/install-deps installs it)"))
    func redhatBundleReadInMemoryHasTheStagedExtractionsTar() throws {
        let scratch = try Scratch()
        let rpm = try Fixtures.rpm(in: scratch)
        let release = "5.14.0-1.el9.x86_64"
        try PackageExtractor.extract(package: rpm, into: scratch.file("staging"))
        try BundleBuilder.build(stagingRoot: scratch.file("staging"), release: release, distro: "redhat",
                                checksum: "feed", output: scratch.file("staged.tar"), compression: .none)
        let tree = ExtractedTree()
        try PackageExtractor.read(package: rpm, into: tree)
        try BundleBuilder.build(packages: tree, release: release, distro: "redhat",
                                checksum: "feed", output: scratch.file("memory.tar"), compression: .none)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("memory.tar")))
                == (try Data(contentsOf: URL(fileURLWithPath: scratch.file("staged.tar")))))
        #expect(try Fixtures.run("tar", ["-tf", scratch.file("memory.tar")]).contains("./usr/src/kernels/\(release)/version.h"))
    }

    @Test(arguments: [0, 1000, Deflate.gzipBlockSize, 3 * Deflate.gzipBlockSize + 12345])
    func parallelGzipIsValidReproducibleAndReadByEveryReader(_ size: Int) throws {
        let scratch = try Scratch()
        // Text with long repeats across block boundaries and noise.
        var generator = SystemRandomNumberGenerator()
        var input = [UInt8]()
        while input.count < size {
            input.append(contentsOf: Array("#define CONFIG_\(input.count % 977) 1\n".utf8))
            input.append(UInt8.random(in: 0...255, using: &generator))
        }
        input = Array(input.prefix(size))
        let first = try input.withUnsafeBytes { try Deflate.parallelGzip($0) }
        let second = try input.withUnsafeBytes { try Deflate.parallelGzip($0) }
        #expect(first == second)
        // Appended piece by piece, as the tar writer hands over its 10 KiB records: the same bytes.
        let writer = Deflate.GzipWriter()
        var offset = 0
        while offset < input.count {
            let piece = min(Int.random(in: 1...30_000, using: &generator), input.count - offset)
            input[offset..<(offset + piece)].withUnsafeBytes { writer.append($0) }
            offset += piece
        }
        #expect(try writer.finish() == first)
        #expect(first[0...9] == [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3], "no name, MTIME 0, Unix")
        let path = scratch.file("data.gz")
        try Data(first).write(to: URL(fileURLWithPath: path))
        try Data(input).write(to: URL(fileURLWithPath: scratch.file("data")))
        _ = try Fixtures.run("gzip", ["-t", path])
        // GNU gzip and Python (what kernel-packer's consumers unpack with) check every member's
        // CRC and length on the way and must give all of the input, not the first member's.
        _ = try Fixtures.run("sh", ["-c", "gzip -dc data.gz | cmp - data"], directory: scratch.path)
        _ = try Fixtures.run("python3", ["-c", "import gzip,sys; sys.exit(gzip.open('data.gz').read() != open('data','rb').read())"],
                             directory: scratch.path)
        // libarchive, which farm unpacks bundles with, reads every member too (its raw reader
        // finds no format in an empty stream, and a bundle is never empty).
        if size > 0 {
            let members = (size + Deflate.gzipBlockSize - 1) / Deflate.gzipBlockSize
            #expect(try Archive.decompress(Data(first), name: path, limit: size + 1) == Data(input), "\(members) member(s)")
        }
    }

    @Test(arguments: [("6.1.0-47-amd64", ["6", "1", "0"]), ("6.12.107+deb13-amd64", ["6", "12", "107"])])
    func bundleVersionFilesAreTheFirstThreeNumbers(_ release: String, _ expected: [String]) throws {
        let scratch = try Scratch()
        try scratch.write("staging/usr/src/linux-headers-\(release)/Makefile", "all:\n")
        try BundleBuilder.build(stagingRoot: scratch.file("staging"), release: release, distro: "debian",
                                checksum: "c", output: scratch.file("bundle.tgz"))
        let tree = try Fixtures.untar(scratch.file("bundle.tgz"), into: scratch.file("tree"))
        let values = try ["VERSION", "MAJOR", "MINOR"].map { try String(contentsOfFile: tree + "/BUNDLE_" + $0, encoding: .utf8) }
        #expect(values == expected)
    }

    @Test func bundleRefusesPackagesWithoutTheReleasesHeaders() throws {
        let scratch = try Scratch()
        try scratch.write("staging/usr/src/linux-headers-6.1.0-46-amd64/Makefile", "all:\n")
        let error = try #require(throws: FarmError.self) {
            try BundleBuilder.build(stagingRoot: scratch.file("staging"), release: Self.release, distro: "debian",
                                    checksum: "c", output: scratch.file("bundle.tgz"))
        }
        #expect(error.description.contains("usr/src/linux-headers-\(Self.release)"))
    }

    // MARK: The task

    @Test func bundleTaskChecksumIsItsKeyAndBytesMatchAcrossCaches() async throws {
        let scratch = try Scratch()
        let packages = try Fixtures.kernelPackages(in: scratch, release: Self.release)
        var results: [(key: Digest, bundle: Data, log: String)] = []
        for cacheName in ["cache-a", "cache-b"] {
            var graph = BuildGraph()
            let inputs = packages.enumerated().map { index, path in
                BuildGraph.Dependency(role: "package.\(index)", node: graph.add(LocalPackage(path: path), label: path))
            }
            graph.add(BundleAction(release: Self.release), label: Self.release, dependencies: inputs)
            let cache = try BuildCache(directory: scratch.file(cacheName))
            defer { cache.close() }
            let summary = try await Builder(cache: cache, options: BuildOptions(jobs: 2), reporter: EventLog()).build(graph)
            #expect(summary.succeeded, "\(summary.failures)")
            let record = try #require(try cache.latestRecord(kind: "bundle", label: Self.release))
            let bundle = try cache.objects.read(try #require(record.output("bundle")).digest)
            let log = String(decoding: try cache.objects.read(try #require(record.log)), as: UTF8.self)
            results.append((record.key, bundle, log))
        }
        #expect(results[0].bundle == results[1].bundle)
        let output = scratch.file("bundle.tgz")
        try results[0].bundle.write(to: URL(fileURLWithPath: output))
        let tree = try Fixtures.untar(output, into: scratch.file("tree"))
        #expect(try String(contentsOfFile: tree + "/BUNDLE_CHECKSUM", encoding: .utf8) == results[0].key.hex)
        for expected in ["linux-headers-6.1.0-47-common 6.1.76-1", "linux-kbuild-6.1", "removed broken link:",
                         "include rewritten to $(BUILD_ROOT): usr/src/linux-headers-\(Self.release)/Makefile"] {
            #expect(results[0].log.contains(expected), "\(results[0].log)")
        }
    }
}

/// Stands in for the fetch task: a local file into the CAS under output `package`.
struct LocalPackage: TaskAction {
    let path: String
    var kind: String { "local-package" }
    var version: Int { 1 }
    var parameters: [(name: String, value: String)] { [("path", path)] }

    func run(_ context: TaskContext) async throws -> [String: Digest] {
        ["package": try context.objects.putCopy(of: path).digest]
    }
}

enum Fixtures {
    struct ToolFailed: Error, CustomStringConvertible {
        let description: String
    }

    static func hasTool(_ name: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
        }
    }

    /// Runs a tool found on PATH and returns what it printed; throws with its stderr when it fails.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String], directory: String? = nil) throws -> String {
        let result = try runProcess("/usr/bin/env", [tool] + arguments, directory: directory)
        guard result.status == 0 else {
            throw ToolFailed(description: "\(tool) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    /// A binary package made by dpkg-deb from `files` (a trailing `*` on the contents marks an
    /// executable) and `links` (path to target).
    static func deb(in scratch: Scratch, name: String, compression: String, files: [String: String],
                    links: [String: String] = [:]) throws -> String {
        let root = scratch.file("package-src/\(name)")
        try scratch.write("package-src/\(name)/DEBIAN/control", """
            Package: \(name)
            Version: 6.1.76-1
            Architecture: amd64
            Maintainer: farm tests <farm@example.org>
            Description: fixture for farm's bundle tests

            """)
        for (path, contents) in files {
            let executable = contents.hasSuffix("*")
            let file = try scratch.write("package-src/\(name)/\(path)", executable ? String(contents.dropLast()) : contents)
            chmod(file, executable ? 0o755 : 0o644)
        }
        for (path, target) in links {
            let link = root + "/" + path
            try FileManager.default.createDirectory(atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        }
        let output = scratch.file("\(name)_6.1.76-1_amd64.deb")
        try run("dpkg-deb", ["--root-owner-group", "-Z\(compression)", "--build", root, output])
        return output
    }

    /// A .deb whose data.tar (GNU tar --sparse, since dpkg-deb writes holes out as zeros) holds
    /// `path`: 4 KiB of data followed by a hole up to 1 MiB. Returns the package and the file it was made from.
    static func sparseDeb(in scratch: Scratch, path: String) throws -> (deb: String, original: String) {
        let directory = scratch.file("sparse-src")
        let original = try scratch.write("sparse-src/root/\(path)", String(repeating: "sparse!\n", count: 512))
        try run("truncate", ["-s", "1M", original])
        try scratch.write("sparse-src/control", "Package: sparse-fixture\nVersion: 1\nArchitecture: all\n")
        try scratch.write("sparse-src/debian-binary", "2.0\n")
        try run("tar", ["--create", "--sparse", "--format=gnu", "--owner=0", "--group=0", "--file", "data.tar", "-C", "root", "."],
                directory: directory)
        try run("tar", ["--create", "--format=gnu", "--file", "control.tar", "./control"], directory: directory)
        let output = scratch.file("sparse-fixture_1_all.deb")
        try run("ar", ["rcD", output, "debian-binary", "control.tar", "data.tar"], directory: directory)
        return (output, original)
    }

    /// Over ustar's 100-byte name field, so the writer needs a pax header for it.
    static let longName = "include/generated/" + String(repeating: "very_long_generated_header_name_", count: 4) + ".h"

    /// Debian's three packages for one kernel, as laid out in bookworm: the arch headers point into
    /// the kbuild package and include the common tree's Makefile by absolute path.
    static func kernelPackages(in scratch: Scratch, release: String) throws -> [String] {
        let abi = "6.1.0-47"
        let headers = "usr/src/linux-headers-\(release)"
        let common = "usr/src/linux-headers-\(abi)-common"
        let kbuild = try deb(in: scratch, name: "linux-kbuild-6.1", compression: "gzip", files: [
            "usr/lib/linux-kbuild-6.1/scripts/basic/fixdep": "fixdep\n*",
            "usr/lib/linux-kbuild-6.1/scripts/Makefile.build": "# kbuild rules\n",
            "usr/lib/linux-kbuild-6.1/tools/objtool/objtool": "objtool\n*",
            "etc/kernel/kbuild-note": "not part of a bundle\n",
        ])
        let arch = try deb(in: scratch, name: "linux-headers-\(release)", compression: "xz", files: [
            "\(headers)/Makefile": "include /\(common)/Makefile\n",
            "\(headers)/.config": "CONFIG_X86_64=y\n",
            "\(headers)/\(longName)": "#define LONG 1\n",
        ], links: [
            "\(headers)/scripts": "../../lib/linux-kbuild-6.1/scripts",
            "\(headers)/tools": "/usr/lib/linux-kbuild-6.1/tools",
            "lib/modules/\(release)/build": "/\(headers)",
        ])
        let commonPackage = try deb(in: scratch, name: "linux-headers-\(abi)-common", compression: "zstd", files: [
            "\(common)/Makefile": "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 76\n",
            "\(common)/include/linux/module.h": "#define MODULE\n",
        ], links: [
            "\(common)/scripts/dtc/include-prefixes/arm": "../../../arch/arm/boot/dts",
        ])
        return [kbuild, arch, commonPackage]
    }

    /// A .deb whose data.tar is written entry by entry by Python's tarfile (so it can hold what
    /// dpkg-deb would never write), assembled with binutils' ar.
    static func handMadeDeb(in scratch: Scratch, entries: String) throws -> String {
        let script = """
            import io, sys, tarfile
            def add(info, data=b''):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            def file(name):
                add(tarfile.TarInfo(name), b'owned\\n')
            def directory(name):
                info = tarfile.TarInfo(name); info.type = tarfile.DIRTYPE; info.mode = 0o755; add(info)
            def link(name, target):
                info = tarfile.TarInfo(name); info.type = tarfile.SYMTYPE; info.linkname = target; add(info)
            def hardlink(name, target):
                info = tarfile.TarInfo(name); info.type = tarfile.LNKTYPE; info.linkname = target; add(info)
            def device(name):
                info = tarfile.TarInfo(name); info.type = tarfile.CHRTYPE; info.devmajor = 1; info.devminor = 1; add(info)
            def fifo(name):
                info = tarfile.TarInfo(name); info.type = tarfile.FIFOTYPE; add(info)
            def huge(name):
                info = tarfile.TarInfo(name); info.size = 3 << 30
                tar.fileobj.write(info.tobuf(tarfile.GNU_FORMAT, tar.encoding, tar.errors))
            with tarfile.open('control.tar.gz', 'w:gz') as tar:
                add(tarfile.TarInfo('./control'), b'Package: hostile-fixture\\nVersion: 1\\nArchitecture: all\\n')
            with tarfile.open('data.tar.xz', 'w:xz', format=tarfile.GNU_FORMAT) as tar:
                directory('./')
                \(entries.replacingOccurrences(of: "; ", with: "\n    "))
            open('debian-binary', 'w').write('2.0\\n')
            """
        let directory = scratch.file("hand-made")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try run("python3", ["-c", script], directory: directory)
        let output = scratch.file("hostile.deb")
        try run("ar", ["rcD", output, "debian-binary", "control.tar.gz", "data.tar.xz"], directory: directory)
        return output
    }

    /// An rpm made by rpmbuild, holding a file, an executable and a relative symlink.
    static func rpm(in scratch: Scratch) throws -> String {
        let top = scratch.file("rpmbuild")
        let spec = try scratch.write("kernel-devel.spec", """
            Name: kernel-devel-fixture
            Version: 5.14.0
            Release: 1
            Summary: farm test fixture
            License: GPL-2.0-only
            BuildArch: noarch
            %description
            Fixture for farm's package extraction tests.
            %install
            dir=%{buildroot}/usr/src/kernels/5.14.0-1.el9.x86_64
            mkdir -p $dir/include $dir/scripts
            printf '#define RHEL_MAJOR 9\\n' > $dir/include/version.h
            printf 'fixdep\\n' > $dir/scripts/fixdep
            chmod 0755 $dir/scripts/fixdep
            ln -s include/version.h $dir/version.h
            %files
            /usr/src/kernels/5.14.0-1.el9.x86_64

            """)
        try run("rpmbuild", ["-bb", "--define", "_topdir \(top)", "--define", "__os_install_post %{nil}", spec])
        return top + "/RPMS/noarch/kernel-devel-fixture-5.14.0-1.noarch.rpm"
    }

    /// Extracts a bundle with GNU tar, as a consumer would.
    static func untar(_ archive: String, into directory: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try run("tar", ["-xzf", archive, "-C", directory])
        return directory
    }
}
