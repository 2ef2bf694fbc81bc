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
                 source: String = "linux", suite: String = "testsuite", files: [String: String] = [:],
                 links: [String: String] = [:]) throws -> String {
        let staging = scratch.file("staging/\(name)-\(version)")
        var control = "Package: \(name)\nVersion: \(version)\nArchitecture: \(architecture)\nMaintainer: farm tests <t@farm.test>\nSource: \(source)\nDescription: test package\n"
        if let depends { control += "Depends: \(depends)\n" }
        try scratch.write("staging/\(name)-\(version)/DEBIAN/control", control)
        for (path, text) in files { try scratch.write("staging/\(name)-\(version)/\(path)", text) }
        for (path, target) in links {
            let link = scratch.file("staging/\(name)-\(version)/\(path)")
            try FileManager.default.createDirectory(atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        }
        let base = suite.hasSuffix("-security") ? root + "-security" : root
        let pool = "\(base)/pool/main/l/\(source)"
        try FileManager.default.createDirectory(atPath: pool, withIntermediateDirectories: true)
        let output = "\(pool)/\(name)_\(version)_\(architecture).deb"
        let result = try runProcess("/usr/bin/dpkg-deb", ["--root-owner-group", "-Zxz", "--build", staging, output])
        guard result.status == 0 else { throw TestFailure("dpkg-deb: \(result.stderr)") }
        return output
    }

    /// How a suite's Release is signed.
    enum Signature {
        /// `InRelease`, clearsigned by each of the keys (by e-mail) in one signature block.
        case inRelease([String])
        /// `Release` and `Release.gpg`, the detached signatures of the keys concatenated; a key
        /// given with `tampered` signs other text, so its signature is bad; one in `at` signs at
        /// that time (gpg's `--faked-system-time`, e.g. `20200101T120000`).
        case detached([String], tampered: [String] = [], at: [String: String] = [:])
    }

    /// A second signing key in the test's GnuPG home; the host keyring does not hold it. With
    /// `createdAt`, it is made at that time and expires a day later.
    func addKey(_ email: String, createdAt: String? = nil) throws {
        try gpg((createdAt.map { ["--faked-system-time", $0] } ?? [])
                + ["--quick-gen-key", "farm test other <\(email)>", "ed25519", "sign", createdAt == nil ? "never" : "1d"])
    }

    /// Adds the keys (by e-mail) to the host's keyring beside the archive key.
    func trust(_ emails: [String]) throws {
        let exported = scratch.file("trusted-\(emails.joined(separator: "-")).gpg")
        try gpg(["--output", exported, "--export", "archive@farm.test"] + emails)
        try FileManager.default.removeItem(atPath: keyring)
        try FileManager.default.copyItem(atPath: exported, toPath: keyring)
    }

    /// Writes dists/<suite>/main/binary-amd64/Packages.<compression> for what the suite's pool
    /// holds (`""` is the plain file; `only` keeps the stanzas whose text it accepts), a Release
    /// listing their sha256, and the signature.
    func publish(suite: String, version: String? = "12", codename: String? = nil, only: ((String) -> Bool)? = nil,
                 compressions: [String] = ["xz"], signature: Signature = .inRelease(["archive@farm.test"])) throws {
        let base = suite.hasSuffix("-security") ? root + "-security" : root
        let scan = try runProcess("/usr/bin/dpkg-scanpackages", ["--multiversion", "pool"], directory: base)
        guard scan.status == 0 else { throw TestFailure("dpkg-scanpackages: \(scan.stderr)") }
        var index = scan.stdout
        if let only {
            index = index.components(separatedBy: "\n\n").filter { !$0.isEmpty && only($0) }.joined(separator: "\n\n") + "\n"
        }
        let directory = "\(base)/dists/\(suite)/main/binary-amd64"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in ["Packages", "Packages.xz", "Packages.gz", "Release", "InRelease"] { unlink(directory + "/" + name) }
        try Data(index.utf8).write(to: URL(fileURLWithPath: directory + "/Packages"))
        var listed = ""
        for compression in compressions {
            switch compression {
            case "xz": _ = try runProcess("/usr/bin/xz", ["-k", directory + "/Packages"])
            case "gz": _ = try runProcess("/usr/bin/gzip", ["-k", "-n", directory + "/Packages"])
            default: break
            }
            let name = "Packages" + (compression.isEmpty ? "" : "." + compression)
            let (digest, size) = try SHA256.hash(fileAt: directory + "/" + name)
            listed += " \(digest.hex) \(size) main/binary-amd64/\(name)\n"
        }
        // The plain index stays on disk only when the Release lists it.
        if !compressions.contains("") { unlink(directory + "/Packages") }
        let release = """
        Origin: farm-test
        Suite: \(suite)
        Codename: \(codename ?? suite)
        \(version.map { "Version: \($0)\n" } ?? "")Date: Sun, 22 Nov 2026 10:00:00 UTC
        Architectures: amd64
        Components: main
        SHA256:
        \(listed)
        """
        let dists = "\(base)/dists/\(suite)"
        for name in ["Release", "Release.gpg", "InRelease"] { unlink(dists + "/" + name) }
        try Data(release.utf8).write(to: URL(fileURLWithPath: dists + "/Release"))
        switch signature {
        case let .inRelease(keys):
            try gpg(keys.flatMap { ["--local-user", $0] } + ["--clearsign", "--output", dists + "/InRelease", dists + "/Release"])
            unlink(dists + "/Release")
        case let .detached(keys, tampered, times):
            var signatures = Data()
            for key in keys {
                let signed = tampered.contains(key) ? try scratch.write("tampered-Release", release + "Extra: not what was published\n") : dists + "/Release"
                let output = scratch.file("signature-\(key)")
                unlink(output)
                try gpg((times[key].map { ["--faked-system-time", $0] } ?? []) + ["--local-user", key, "--detach-sign", "--output", output, signed])
                signatures += try Data(contentsOf: URL(fileURLWithPath: output))
            }
            try signatures.write(to: URL(fileURLWithPath: dists + "/Release.gpg"))
        }
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

extension LocalAptArchive {
    /// One kernel in Ubuntu's layout: the indep headers `linux-headers-<abi>` (or
    /// `linux-<derivative>-headers-<abi>`), the flavour headers with compiled `scripts/`, the
    /// `.config`, `compile.h` naming the compiler, a `Makefile` that is a relative link into the
    /// indep tree and the `/lib/modules/<release>/build` link; the image and its modules.
    func ubuntuKernel(abi: String, flavour: String = "generic", derivative: String? = nil, version: String, suite: String = "xenial",
                      compiler: String = "gcc version 5.4.0 20160609 (Ubuntu 5.4.0-6ubuntu1~16.04.12) ", config: String = "") throws {
        let indep = derivative.map { "linux-\($0)-headers-\(abi)" } ?? "linux-headers-\(abi)"
        let release = "\(abi)-\(flavour)"
        let source = derivative.map { "linux-\($0)" } ?? "linux"
        try package(indep, version: version, architecture: "all", source: source, suite: suite, files: [
            "usr/src/\(indep)/Makefile": "VERSION = 4\nPATCHLEVEL = 4\n# the kernel's top Makefile\n",
            "usr/src/\(indep)/scripts/Makefile.build": "# Kbuild\n",
            "usr/src/\(indep)/include/linux/module.h": "/* module.h */\n",
        ])
        try package("linux-headers-\(release)", version: version, depends: "\(indep), libc6 (>= 2.14), libssl1.0.0 (>= 1.0.0)",
                    source: source, suite: suite, files: [
            "usr/src/linux-headers-\(release)/.config": "CONFIG_X86_64=y\n\(config)",
            "usr/src/linux-headers-\(release)/include/generated/compile.h": "#define UTS_MACHINE \"x86_64\"\n#define LINUX_COMPILER \"\(compiler)\"\n",
            "usr/src/linux-headers-\(release)/include/config/kernel.release": release + "\n",
            "usr/src/linux-headers-\(release)/scripts/basic/fixdep": "\u{7F}ELF compiled fixdep\n",
            "usr/src/linux-headers-\(release)/Module.symvers": "0x00000000\tprintk\tvmlinux\tEXPORT_SYMBOL\n",
        ], links: [
            "usr/src/linux-headers-\(release)/Makefile": "../\(indep)/Makefile",
            "usr/src/linux-headers-\(release)/include/linux": "../../\(indep)/include/linux",
            "lib/modules/\(release)/build": "/usr/src/linux-headers-\(release)",
        ])
        try package("linux-image-\(release)", version: version, source: derivative.map { "linux-signed-\($0)" } ?? "linux-signed", suite: suite,
                    files: ["boot/vmlinuz-\(release)": "not a kernel\n"])
        try package("linux-modules-\(release)", version: version, source: source, suite: suite,
                    files: ["lib/modules/\(release)/kernel/fs/fat.ko": "not a module\n"])
        // The flavour's meta packages: no kernel, and no warning either.
        try package("linux-headers-\(derivative ?? flavour)", version: "4.4.0.\(abi.split(separator: "-").last ?? "1")",
                    depends: "linux-headers-\(release)", source: "linux-meta", suite: suite)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
