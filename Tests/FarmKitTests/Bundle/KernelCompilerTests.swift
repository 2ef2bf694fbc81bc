import FarmEngine
import FarmKit
import Foundation
import Testing

/// The compiler a kernel was built with, read from its header tree or straight from its package:
/// `.config`'s CONFIG_CC_VERSION_TEXT, else compile.h's LINUX_COMPILER (4.4 and 3.10 kernels).
/// The files are written as the kernel writes them (scripts/kconfig, scripts/mkcompile_h).
struct KernelCompilerTests {
    static let xenialCompileH = """
        /* This file is auto generated, version 231 */
        /* SMP */
        #define UTS_MACHINE "x86_64"
        #define UTS_VERSION "#231-Ubuntu SMP Fri Jan 21 13:40:51 UTC 2022"
        #define LINUX_COMPILE_BY "buildd"
        #define LINUX_COMPILE_HOST "lcy02-amd64-029"
        #define LINUX_COMPILER "gcc version 5.4.0 20160609 (Ubuntu 5.4.0-6ubuntu1~16.04.12) "

        """
    static let centos7CompileH = """
        /* This file is auto generated, version 1 */
        /* SMP */
        #define UTS_MACHINE "x86_64"
        #define UTS_VERSION "#1 SMP Wed Oct 13 17:20:51 UTC 2021"
        #define LINUX_COMPILE_BY "mockbuild"
        #define LINUX_COMPILE_HOST "kbuilder.bsys.centos.org"
        #define LINUX_COMPILER "gcc version 4.8.5 20150623 (Red Hat 4.8.5-44) (GCC) "

        """
    static let bookwormConfig = """
        #
        # Automatically generated file; DO NOT EDIT.
        # Linux/x86 6.1.158 Kernel Configuration
        #
        CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
        CONFIG_CC_IS_GCC=y
        CONFIG_GCC_VERSION=120200
        # CONFIG_CC_IS_CLANG is not set

        """

    @Test func aTreeWithOnlyCompileHIsReadFromLinuxCompiler() throws {
        let scratch = try Scratch()
        let compileH = try scratch.write("xenial/include/generated/compile.h", Self.xenialCompileH)
        let xenial = try #require(KernelCompiler.read(headers: scratch.file("xenial")))
        #expect(xenial.compiler == KernelCompiler(family: .gcc, version: [5, 4, 0]))
        #expect(xenial.compiler.name == "gcc-5")
        #expect(xenial.file == compileH)
        #expect(xenial.text == "gcc version 5.4.0 20160609 (Ubuntu 5.4.0-6ubuntu1~16.04.12) ")

        try scratch.write("centos/include/generated/compile.h", Self.centos7CompileH)
        // A .config without CONFIG_CC_VERSION_TEXT, as 3.10 writes it, does not hide compile.h.
        try scratch.write("centos/.config", "CONFIG_64BIT=y\nCONFIG_X86_64=y\n")
        let centos = try #require(KernelCompiler.read(headers: scratch.file("centos")))
        #expect(centos.compiler.name == "gcc-4.8")
        #expect(centos.compiler.version == [4, 8, 5])
    }

    @Test func theConfigWinsOverCompileHAndATreeWithNeitherHasNoCompiler() throws {
        let scratch = try Scratch()
        let config = try scratch.write("bookworm/.config", Self.bookwormConfig)
        let reading = try #require(KernelCompiler.read(headers: scratch.file("bookworm")))
        #expect(reading.compiler.name == "gcc-12")
        #expect(reading.file == config)
        try scratch.write("bookworm/include/generated/compile.h", Self.xenialCompileH)
        #expect(KernelCompiler.read(headers: scratch.file("bookworm"))?.compiler.name == "gcc-12")

        try scratch.write("empty/include/generated/autoconf.h", "#define CONFIG_64BIT 1\n")
        #expect(KernelCompiler.read(headers: scratch.file("empty")) == nil)
    }

    @Test(arguments: [
        ("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", "gcc-12"),
        ("gcc-14 (Debian 14.2.0-19) 14.2.0", "gcc-14"),
        ("gcc (GCC) 8.5.0 20210514 (Red Hat 8.5.0-4)", "gcc-8"),
        ("gcc version 4.9.2 (Debian 4.9.2-10+deb8u2) ", "gcc-4.9"),
        // compile.h since 5.8: the compiler, a comma, the linker.
        ("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40", "gcc-12"),
        ("Debian clang version 16.0.6 (15)", "clang-16"),
        ("Ubuntu clang version 14.0.0-1ubuntu1.1", "clang-14"),
    ])
    func compilerNamesFollowDebianAndUbuntuPackageNames(text: String, name: String) {
        #expect(KernelCompiler(versionText: text)?.name == name)
    }

    @Test func namesAreValidInRecipesAndKernelsOnlyAsPackagesSpellThem() {
        #expect(KernelCompiler(versionText: "GNU ld (GNU Binutils) 2.40") == nil)
        #expect(KernelCompiler(versionText: "gcc") == nil)
        for name in ["gcc-4.8", "gcc-4.9", "gcc-5", "gcc-12"] { #expect(ToolchainCatalog.compilerName(name) == name) }
        #expect(ToolchainCatalog.compilerName("linux-compiler-gcc-4.9-x86") == "gcc-4.9")
        #expect(ToolchainCatalog.compilerName("linux-compiler-gcc-12-x86") == "gcc-12")
        for wrong in ["gcc-4", "gcc-12.2", "gcc-5.4", "gcc-", "gcc"] { #expect(ToolchainCatalog.compilerName(wrong) == nil, "\(wrong)") }
    }

    /// An Ubuntu flavour headers package made by dpkg-deb: compile.h only, among other files.
    @Test func theCompilerIsReadFromADebWithoutUnpackingIt() throws {
        let scratch = try Scratch()
        let tree = "usr/src/linux-headers-4.4.0-210-generic"
        let deb = try Fixtures.deb(in: scratch, name: "linux-headers-4.4.0-210-generic", compression: "xz", files: [
            "\(tree)/include/generated/compile.h": Self.xenialCompileH,
            "\(tree)/include/generated/autoconf.h": "#define CONFIG_64BIT 1\n",
            "\(tree)/.config": "CONFIG_64BIT=y\n",
            "\(tree)/scripts/basic/fixdep": "ELF*",
        ], links: ["\(tree)/Makefile": "../linux-headers-4.4.0-210/Makefile"])
        let before = try FileManager.default.subpathsOfDirectory(atPath: scratch.path).count
        let reading = try #require(try KernelCompiler.read(package: deb))
        #expect(reading.compiler.name == "gcc-5")
        #expect(reading.file == deb + ":\(tree)/include/generated/compile.h")
        #expect(try FileManager.default.subpathsOfDirectory(atPath: scratch.path).count == before, "reading wrote files")

        let bookworm = try Fixtures.deb(in: scratch, name: "linux-headers-6.1.0-56-amd64", compression: "zstd", files: [
            "usr/src/linux-headers-6.1.0-56-amd64/.config": Self.bookwormConfig,
        ])
        #expect(try KernelCompiler.read(package: bookworm)?.compiler.name == "gcc-12")
        let none = try Fixtures.deb(in: scratch, name: "lime-forensics-dkms", compression: "gzip", files: ["usr/src/lime-1.9.1/Makefile": "obj-m := lime.o\n"])
        #expect(try KernelCompiler.read(package: none) == nil)
    }

    /// A RHEL-layout kernel-devel made by rpmbuild.
    @Test(.enabled(if: Fixtures.hasTool("rpmbuild"), "rpmbuild is not installed (Debian package rpm; scripts/install-deps installs it)"))
    func theCompilerIsReadFromAKernelDevelRpm() throws {
        let scratch = try Scratch()
        let release = "3.10.0-1160.53.1.el7.x86_64"
        try scratch.write("compile.h", Self.centos7CompileH)
        try scratch.write("config", "CONFIG_64BIT=y\n")
        let spec = try scratch.write("kernel-devel.spec", """
            Name: kernel-devel
            Version: 3.10.0
            Release: 1160.53.1.el7
            Summary: farm test fixture
            License: GPL-2.0-only
            BuildArch: x86_64
            %description
            Fixture for farm's compiler reader.
            %install
            dir=%{buildroot}/usr/src/kernels/\(release)
            mkdir -p $dir/include/generated
            cp \(scratch.file("compile.h")) $dir/include/generated/compile.h
            cp \(scratch.file("config")) $dir/.config
            %files
            /usr/src/kernels/\(release)

            """)
        try Fixtures.run("rpmbuild", ["-bb", "--define", "_topdir \(scratch.file("rpmbuild"))", "--define", "__os_install_post %{nil}", spec])
        let rpm = scratch.file("rpmbuild/RPMS/x86_64/kernel-devel-3.10.0-1160.53.1.el7.x86_64.rpm")
        let reading = try #require(try KernelCompiler.read(package: rpm))
        #expect(reading.compiler.name == "gcc-4.8")
        #expect(reading.file == rpm + ":usr/src/kernels/\(release)/include/generated/compile.h")
        #expect(reading.text == "gcc version 4.8.5 20150623 (Red Hat 4.8.5-44) (GCC) ")
    }

    @Test func aPackageThatIsNeitherDebNorRpmIsRefusedByName() throws {
        let scratch = try Scratch()
        let path = try scratch.write("headers.deb", "<html>not found</html>\n")
        let error = try #require(throws: ExtractionError.self) { try KernelCompiler.read(package: path) }
        #expect(error.description.contains(path))
    }

    /// The compile task's check: a 4.4 tree with only compile.h is checked like a .config.
    @Test func theCompileCheckReadsCompileHAndAMismatchNamesBothCompilersAndTheFile() throws {
        let scratch = try Scratch()
        let compileH = try scratch.write("headers/include/generated/compile.h", Self.xenialCompileH)
        let error = try #require(throws: FarmError.self) {
            try CompileAction.checkCompiler(headers: scratch.file("headers"), release: "4.4.0-210-generic", toolchain: "debian-bookworm",
                                            provides: "gcc-12")
        }
        #expect(error.description.contains("kernel 4.4.0-210-generic was built with gcc-5 (\(compileH) says 'gcc version 5.4.0"), "\(error)")
        #expect(error.description.contains("toolchain debian-bookworm provides gcc-12"), "\(error)")
        #expect(error.description.contains("'compiler: gcc-5'"), "\(error)")
        let reading = try CompileAction.checkCompiler(headers: scratch.file("headers"), release: "4.4.0-210-generic", toolchain: "ubuntu-xenial",
                                                      provides: "gcc-5")
        #expect(reading?.compiler.name == "gcc-5")
        // The host backend builds with whatever the host has: the check is not enforced.
        #expect(try CompileAction.checkCompiler(headers: scratch.file("headers"), release: "4.4.0-210-generic", toolchain: "host",
                                                provides: "gcc-12", enforced: false) != nil)
    }
}
