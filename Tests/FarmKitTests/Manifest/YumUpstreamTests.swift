import FarmEngine
import FarmKit
import Foundation
import Testing

let yumHeader = """
farm: 1
upstreams:
  centos:
    kind: yum
    mirror: https://mirror.example/centos/7
    suites: [os/x86_64, updates/x86_64]

"""

let malformedYumCases: [MalformedCase] = [
    MalformedCase(name: "yum upstream without a mirror", manifest: yumHeader.replacingOccurrences(of: "    mirror: https://mirror.example/centos/7\n", with: ""),
                  location: "manifest.yml:4:5", message: "upstream 'centos' (kind yum) needs 'mirror: URL' (the repositories' base URL) or 'mirrorlist: URL'"),
    MalformedCase(name: "yum upstream with mirror apt", manifest: yumHeader.replacingOccurrences(of: "https://mirror.example/centos/7", with: "apt"),
                  location: "manifest.yml:5:13", message: "expected an http(s):// or file:// URL, found 'apt'; 'mirror: apt' reads the host's apt sources"),
    MalformedCase(name: "yum upstream with mirror and mirrorlist", manifest: yumHeader.replacingOccurrences(of: "    suites:", with: "    mirrorlist: https://mirrors.example/list\n    suites:"),
                  location: "manifest.yml:6:17", message: "give 'mirror' or 'mirrorlist', not both"),
    MalformedCase(name: "yum upstream with components", manifest: yumHeader.replacingOccurrences(of: "    suites:", with: "    components: [main]\n    suites:"),
                  location: "manifest.yml:6:17", message: "a yum repository has no components; name each repository path under 'suites' instead"),
    MalformedCase(name: "yum suite outside the mirror", manifest: yumHeader.replacingOccurrences(of: "updates/x86_64", with: "../epel"),
                  location: "manifest.yml:6:13", message: "'../epel' is not a repository path under the mirror"),
    MalformedCase(name: "yum distribution that is not one", manifest: yumHeader.replacingOccurrences(of: "    suites:", with: "    distribution: CentOS 7\n    suites:"),
                  location: "manifest.yml:6:19", message: "expected a distribution release like 'centos-7' or 'amzn-2', found 'CentOS 7'"),
    MalformedCase(name: "mirrorlist on an apt upstream", manifest: upstreamHeader.replacingOccurrences(of: "    suites:", with: "    mirrorlist: https://mirrors.example/list\n    suites:"),
                  location: "manifest.yml:6:17", message: "'mirrorlist' is for yum upstreams"),
    MalformedCase(name: "rhel family on an apt upstream", manifest: upstreamHeader.replacingOccurrences(of: "    suites:", with: "    family: rhel\n    suites:"),
                  location: "manifest.yml:6:13", message: "the rhel family's kernels are not in apt indices; use 'kind: yum'"),
]

@Suite("Yum upstreams in the manifest")
struct YumUpstreamTests {
    @Test(arguments: malformedYumCases)
    func refusesAMalformedYumUpstreamWithItsLocation(_ example: MalformedCase) throws {
        let scratch = try Scratch()
        let path = try scratch.write("manifest.yml", example.manifest)
        let error = #expect(throws: ManifestError.self) { try ManifestLoader.load(path: path) }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.hasPrefix(scratch.path + "/" + example.location), "\(text)")
        #expect(text.contains(example.message), "\(text)")
    }

    @Test func readsAYumUpstreamAndKeepsItInTheSnapshot() throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let path = try scratch.write("manifest.yml", """
        farm: 1
        upstreams:
          amazon:
            kind: yum
            mirrorlist: https://mirrors.example/amzn2/mirror.list
            suites: [.]
            keyring: keys/RPM-GPG-KEY-amazon-linux-2
            distribution: amzn-2
          centos:
            kind: yum
            mirror: https://mirror.example/centos/7
            suites: [os/x86_64, updates/x86_64]
        kernels: []

        """)
        let first = try ManifestLoader.load(path: path, snapshotDirectory: cache)
        let amazon = try #require(first.upstream(named: "amazon"))
        #expect(amazon.kind == .yum && amazon.family == .rhel)
        #expect(amazon.mirrorlist == "https://mirrors.example/amzn2/mirror.list")
        #expect(amazon.distribution == "amzn-2")
        #expect(amazon.architectures == ["x86_64"])
        #expect(first.upstream(named: "centos")?.mirror == "https://mirror.example/centos/7")
        #expect(first.upstream(named: "centos")?.distribution == nil)
        let again = try ManifestLoader.load(path: path, snapshotDirectory: cache)
        #expect(again.upstreams == first.upstreams)
    }
}
