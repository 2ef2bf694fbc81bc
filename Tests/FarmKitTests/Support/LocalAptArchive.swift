import FarmEngine
import FarmKit
import Foundation

/// A small apt archive made by the test with real tools: packages by `dpkg-deb`, the index by
/// `dpkg-scanpackages` and `xz`, the Release clearsigned by `gpg` with a throwaway key, and an
/// `etc/apt` that points at it through a `file://` URI.
struct LocalAptArchive {
    let scratch: Scratch
    var root: String { scratch.file("archive") }
    var aptRoot: String { scratch.file("host") }
    /// Where a Debian host keeps a third-party archive key; Signed-By names it from the host's root.
    var keyring: String { scratch.file("host/etc/apt/keyrings/farm-test.gpg") }
    var gnupgHome: String { scratch.file("gnupg") }

    init(_ scratch: Scratch) throws {
        self.scratch = scratch
        try FileManager.default.createDirectory(atPath: gnupgHome, withIntermediateDirectories: true)
        chmod(gnupgHome, 0o700)
        try gpg(["--quick-gen-key", "farm test archive <archive@farm.test>", "ed25519", "sign", "never"])
        try FileManager.default.createDirectory(atPath: scratch.file("host/etc/apt/keyrings"), withIntermediateDirectories: true)
        try gpg(["--output", keyring, "--export", "archive@farm.test"])
        try scratch.write("host/etc/os-release", "VERSION_CODENAME=testsuite\n")
        try scratch.write("host/etc/apt/sources.list.d/test.sources", """
        Types: deb
        URIs: file://\(root)
        Suites: testsuite testsuite-updates
        Components: main
        Signed-By: /etc/apt/keyrings/farm-test.gpg

        Types: deb
        URIs: file://\(root)-security
        Suites: testsuite-security
        Components: main
        Signed-By: /etc/apt/keyrings/farm-test.gpg

        """)
    }

    @discardableResult
    func gpg(_ arguments: [String]) throws -> ProcessResult {
        let result = try runProcess("/usr/bin/gpg", ["--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--homedir", gnupgHome] + arguments)
        guard result.status == 0 else { throw TestFailure("gpg \(arguments.joined(separator: " ")): \(result.stderr)") }
        return result
    }

    /// Builds a .deb with dpkg-deb under the suite's pool and returns its path.
    @discardableResult
    func package(_ name: String, version: String, architecture: String = "amd64", depends: String? = nil,
                 source: String = "linux", suite: String = "testsuite", files: [String: String] = [:]) throws -> String {
        let staging = scratch.file("staging/\(name)-\(version)")
        var control = "Package: \(name)\nVersion: \(version)\nArchitecture: \(architecture)\nMaintainer: farm tests <t@farm.test>\nSource: \(source)\nDescription: test package\n"
        if let depends { control += "Depends: \(depends)\n" }
        try scratch.write("staging/\(name)-\(version)/DEBIAN/control", control)
        for (path, text) in files { try scratch.write("staging/\(name)-\(version)/\(path)", text) }
        let base = suite.hasSuffix("-security") ? root + "-security" : root
        let pool = "\(base)/pool/main/l/\(source)"
        try FileManager.default.createDirectory(atPath: pool, withIntermediateDirectories: true)
        let output = "\(pool)/\(name)_\(version)_\(architecture).deb"
        let result = try runProcess("/usr/bin/dpkg-deb", ["--root-owner-group", "-Zxz", "--build", staging, output])
        guard result.status == 0 else { throw TestFailure("dpkg-deb: \(result.stderr)") }
        return output
    }

    /// Writes dists/<suite>/main/binary-amd64/Packages.xz for what the suite's pool holds, a
    /// Release listing its sha256, and the InRelease clearsigned with the test key.
    func publish(suite: String, version: String = "12", only: ((String) -> Bool)? = nil) throws {
        let base = suite.hasSuffix("-security") ? root + "-security" : root
        let scan = try runProcess("/usr/bin/dpkg-scanpackages", ["--multiversion", "pool"], directory: base)
        guard scan.status == 0 else { throw TestFailure("dpkg-scanpackages: \(scan.stderr)") }
        var index = scan.stdout
        if let only {
            index = index.components(separatedBy: "\n\n").filter { stanza in
                stanza.split(separator: "\n").first.map { only(String($0.dropFirst("Package: ".count))) } ?? false
            }.joined(separator: "\n\n") + "\n"
        }
        let directory = "\(base)/dists/\(suite)/main/binary-amd64"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Data(index.utf8).write(to: URL(fileURLWithPath: directory + "/Packages"))
        unlink(directory + "/Packages.xz")
        _ = try runProcess("/usr/bin/xz", ["-k", directory + "/Packages"])
        let (digest, size) = try SHA256.hash(fileAt: directory + "/Packages.xz")
        let release = """
        Origin: farm-test
        Suite: \(suite)
        Codename: \(suite)
        Version: \(version)
        Date: Sun, 22 Nov 2026 10:00:00 UTC
        Architectures: amd64
        Components: main
        SHA256:
         \(digest.hex) \(size) main/binary-amd64/Packages.xz

        """
        try Data(release.utf8).write(to: URL(fileURLWithPath: "\(base)/dists/\(suite)/Release"))
        unlink("\(base)/dists/\(suite)/InRelease")
        try gpg(["--local-user", "archive@farm.test", "--clearsign", "--output", "\(base)/dists/\(suite)/InRelease", "\(base)/dists/\(suite)/Release"])
    }

    /// One kernel in the layout Debian uses for 6.1: arch headers, common headers, kbuild, image.
    func kernel(abi: String, flavour: String = "amd64", version: String, suite: String = "testsuite") throws {
        let short = abi.split(separator: ".").prefix(2).joined(separator: ".")
        try package("linux-headers-\(abi)-\(flavour)", version: version,
                    depends: "linux-headers-\(abi)-common (= \(version)), linux-kbuild-\(short) (>= \(version)), linux-compiler-gcc-12-x86",
                    suite: suite, files: ["usr/src/linux-headers-\(abi)-\(flavour)/Makefile": "include /usr/src/linux-headers-\(abi)-common/Makefile\n"])
        try package("linux-headers-\(abi)-common", version: version, architecture: "all", suite: suite,
                    files: ["usr/src/linux-headers-\(abi)-common/Makefile": "# common\n"])
        try package("linux-kbuild-\(short)", version: version, suite: suite, files: ["usr/lib/linux-kbuild-\(short)/README": "kbuild\n"])
        try package("linux-image-\(abi)-\(flavour)", version: version, source: "linux-signed-amd64", suite: suite,
                    files: ["boot/vmlinuz-\(abi)-\(flavour)": "not a kernel\n"])
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
