import FarmEngine
import FarmKit
import Foundation
import Testing

/// How `profiles: true` plans symbol tables: one profile task per kernel with an image, over its
/// image's fetch task; a kernel its family built without BTF also gets the types task.
struct ProfilePlanTests {
    func project(_ scratch: Scratch, profiles: Bool) throws -> String {
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes/toolchains", toPath: scratch.file("project/recipes/toolchains"))
        try scratch.write("project/src/Makefile", "obj-m := mod.o\n")
        try scratch.write("project/recipes/mod.yml", "farm: 1\nsource:\n  dir: src\nbuild: make\nmodule: mod.ko\noutput: mod-{release}.ko\n")
        func kernel(_ release: String, _ compiler: String, image: Bool = true) -> String {
            let pin = { (name: String) in "{url: 'file://\(scratch.file(name))', sha256: \(String(repeating: "0", count: 64)), size: 1}" }
            return "  - {release: \(release), upstream: debian, distribution: debian-12, version: 1.0-1, compiler: \(compiler),\n"
                + "     packages: [\(pin("headers-\(release).deb"))]" + (image ? ", image: \(pin("image-\(release).deb"))}\n" : "}\n")
        }
        return try scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          debian: {kind: apt, mirror: apt, suites: [bookworm], components: [main], architectures: [amd64]}
        modules: [mod]
        \(profiles ? "profiles: true\n" : "")kernels:
        \(kernel("6.1.0-56-amd64", "linux-compiler-gcc-12-x86"))\(kernel("4.19.0-27-amd64", "linux-compiler-gcc-12-x86"))\
        \(kernel("4.19.0-28-amd64", "gcc-4.9"))\(kernel("6.1.0-57-amd64", "linux-compiler-gcc-12-x86", image: false))
        """)
    }

    @Test func eachKernelWithAnImageGetsAProfileAndOneWithoutBTFItsTypesTask() throws {
        let scratch = try Scratch()
        let session = try Session(manifestPath: try project(scratch, profiles: true), cacheDirectory: scratch.file("cache"), rules: FarmRules())
        let graph = try session.plan([])
        func dependencies(_ name: String) -> Set<String>? {
            graph.node(named: name).map { node in Set(node.dependencies.map { "\($0.role) \(graph.nodes[$0.node].name)" }) }
        }
        // 5.10 and later: types from the image's own .BTF.
        #expect(dependencies("profile:6.1.0-56-amd64@debian") == ["image fetch:image-6.1.0-56-amd64.deb"])
        // 4.19: Debian built it without BTF, so farm's types module is compiled against its headers.
        #expect(dependencies("profile:4.19.0-27-amd64@debian") == ["image fetch:image-4.19.0-27-amd64.deb", "types types:4.19.0-27-amd64@debian"])
        #expect(dependencies("types:4.19.0-27-amd64@debian") == ["bundle bundle:4.19.0-27-amd64@debian", "toolchain toolchain:debian-bookworm"])
        // No toolchain for its compiler: the profile fails with the reason, the rest plans.
        let uncovered = try #require(graph.node(named: "profile:4.19.0-28-amd64@debian")?.action as? UnbuildableAction)
        #expect(uncovered.message.contains("has no BTF in its image") && uncovered.message.contains("gcc-4.9"), "\(uncovered.message)")
        // No image pinned: no table.
        #expect(graph.node(named: "profile:6.1.0-57-amd64@debian") == nil)
        let plain = try Scratch("plain")
        #expect(try !Session(manifestPath: try project(plain, profiles: false), cacheDirectory: nil, rules: FarmRules())
                    .plan([]).nodes.contains { $0.action.kind == "profile" })
    }
}
