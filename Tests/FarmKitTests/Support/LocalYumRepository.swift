import FarmEngine
import FarmKit
import Foundation

/// A small yum upstream made by the test with real tools: packages by `rpmbuild` in RHEL's
/// layout, signed by `rpmsign` with a throwaway RSA key, indexed by `createrepo_c`, and each
/// repository's repomd.xml signed by `gpg --detach-sign --armor`. Served as a `file://` URL.
struct LocalYumRepository {
    let scratch: Scratch
    var root: String { scratch.file("yum") }
    var url: String { "file://" + root }
    var keyring: String { scratch.file("yum-keyring.gpg") }
    var gnupgHome: String { scratch.file("gnupg") }
    static let key = "yum@farm.test"

    init(_ scratch: Scratch) throws {
        self.scratch = scratch
        try FileManager.default.createDirectory(atPath: gnupgHome, withIntermediateDirectories: true)
        chmod(gnupgHome, 0o700)
        // RSA: what RHEL's own keys are and what every rpm version embeds.
        try gpg(["--quick-gen-key", "farm yum test <\(LocalYumRepository.key)>", "rsa2048", "sign", "never"])
        try gpg(["--output", keyring, "--export", LocalYumRepository.key])
    }

    @discardableResult
    func gpg(_ arguments: [String]) throws -> ProcessResult {
        let result = try runProcess("/usr/bin/gpg", ["--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--homedir", gnupgHome] + arguments)
        guard result.status == 0 else { throw TestFailure("gpg \(arguments.joined(separator: " ")): \(result.stderr)") }
        return result
    }

    /// Builds `<name>-<version>-<release>.x86_64.rpm` holding `files` (path → text) and the tree
    /// at `root` (copied as it is, to `/`), signs it
    /// (header-only as rpm 4.18 signs, or also header+payload with `rpmv3`) and puts it under
    /// `<repository>/Packages`. Returns its path.
    @discardableResult
    func package(_ name: String, version: String, release: String, repository: String = "os/x86_64",
                 files: [String: String], root tree: String? = nil, sign: Bool = true, rpmv3: Bool = false) throws -> String {
        let top = scratch.file("rpmbuild/\(name)-\(version)-\(release)")
        var install = ""
        for (path, text) in files.sorted(by: { $0.key < $1.key }) {
            let staged = scratch.file("rpmbuild/content/\(name)-\(version)-\(release)/\(path)")
            try scratch.write(String(staged.dropFirst(scratch.path.count + 1)), text)
            install += "mkdir -p %{buildroot}/\((path as NSString).deletingLastPathComponent)\ncp '\(staged)' %{buildroot}/\(path)\n"
        }
        var topLevel = Set(files.keys.map { "/" + $0.split(separator: "/").prefix(2).joined(separator: "/") })
        if let tree {
            install += "cp -a '\(tree)/.' %{buildroot}/\n"
            for first in try FileManager.default.contentsOfDirectory(atPath: tree) {
                for second in try FileManager.default.contentsOfDirectory(atPath: tree + "/" + first) { topLevel.insert("/\(first)/\(second)") }
            }
        }
        try scratch.write("rpmbuild/\(name)-\(version)-\(release)/SPECS/package.spec", """
        %global debug_package %{nil}
        %define __os_install_post %{nil}
        %define _build_id_links none
        Name: \(name)
        Version: \(version)
        Release: \(release)
        Summary: farm test package
        License: GPL-2.0
        AutoReqProv: no
        %description
        A package made by farm's tests.
        %install
        \(install)
        %files
        \(topLevel.sorted().joined(separator: "\n"))

        """)
        let build = try runProcess("/usr/bin/rpmbuild", ["-bb", "--quiet", "--target", "x86_64", "--define", "_topdir \(top)",
                                                          // A fast payload: a real kernel tree is some 80 MB.
                                                          "--define", "_binary_payload w1.zstdio",
                                                          top + "/SPECS/package.spec"])
        guard build.status == 0 else { throw TestFailure("rpmbuild \(name): \(build.stderr)") }
        let built = "\(top)/RPMS/x86_64/\(name)-\(version)-\(release).x86_64.rpm"
        let directory = root + "/\(repository)/Packages"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let output = directory + "/" + (built as NSString).lastPathComponent
        unlink(output)
        try FileManager.default.copyItem(atPath: built, toPath: output)
        if sign {
            let signing = try runProcess("/usr/bin/rpmsign", ["--define", "__gpg /usr/bin/gpg", "--define", "_gpg_name \(LocalYumRepository.key)",
                                                              "--define", "_gpg_path \(gnupgHome)", "--addsign"] + (rpmv3 ? ["--rpmv3"] : []) + [output])
            guard signing.status == 0 else { throw TestFailure("rpmsign \(name): \(signing.stderr)") }
        }
        return output
    }

    /// A kernel-devel holding /usr/src/kernels/<version>-<release>.x86_64 with a Makefile and
    /// the compiler in `.config` (`ccVersionText`) or in compile.h (`linuxCompiler`).
    @discardableResult
    func kernelDevel(version: String, release: String, repository: String = "os/x86_64", name: String = "kernel-devel",
                     ccVersionText: String? = nil, linuxCompiler: String? = nil, rpmv3: Bool = false, tree treeName: String? = nil) throws -> String {
        let tree = "usr/src/kernels/" + (treeName ?? "\(version)-\(release).x86_64")
        var files = ["\(tree)/Makefile": "# \(version)-\(release)\n"]
        files["\(tree)/.config"] = "CONFIG_X86_64=y\n" + (ccVersionText.map { "CONFIG_CC_VERSION_TEXT=\"\($0)\"\n" } ?? "")
        if let linuxCompiler { files["\(tree)/include/generated/compile.h"] = "#define UTS_MACHINE \"x86_64\"\n#define LINUX_COMPILER \"\(linuxCompiler)\"\n" }
        return try package(name, version: version, release: release, repository: repository, files: files, rpmv3: rpmv3)
    }

    /// An image package (`kernel` or `kernel-core`) of the same version.
    @discardableResult
    func kernelImage(_ name: String = "kernel", version: String, release: String, repository: String = "os/x86_64") throws -> String {
        try package(name, version: version, release: release, repository: repository,
                    files: ["lib/modules/\(version)-\(release).x86_64/vmlinuz": "not a kernel\n"])
    }

    /// Runs createrepo_c over a repository and signs its repomd.xml (unless `sign` is false).
    func publish(_ repository: String = "os/x86_64", sign: Bool = true) throws {
        let directory = root + "/" + repository
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: directory + "/repodata")
        let result = try runProcess("/usr/bin/createrepo_c", ["--quiet", "--no-database", directory])
        guard result.status == 0 else { throw TestFailure("createrepo_c: \(result.stderr)") }
        if sign {
            try gpg(["--local-user", LocalYumRepository.key, "--detach-sign", "--armor", "--output", directory + "/repodata/repomd.xml.asc",
                     directory + "/repodata/repomd.xml"])
        }
    }
}
