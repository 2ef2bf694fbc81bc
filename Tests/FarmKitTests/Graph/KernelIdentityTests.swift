import FarmEngine
import FarmKit
import Foundation
import Testing

/// A kernel is its upstream and its release: xenial's and trusty-HWE's `4.4.0-45-generic` are two
/// kernels, built apart; the repository, which names modules by release, publishes one of them.
struct KernelIdentityTests {
    func project(_ scratch: Scratch) throws -> String {
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes", toPath: scratch.file("project/recipes"))
        func kernel(_ upstream: String, _ marker: String) -> String {
            """
              - release: 4.4.0-45-generic
                upstream: \(upstream)
                toolchain: debian-bookworm
                packages:
                  - url: pool/main/l/linux/linux-headers-4.4.0-45-generic_\(marker)_amd64.deb
                    sha256: \(SHA256.hash(marker).hex)
                    size: 1000

            """
        }
        return try scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          xenial: {kind: apt, family: ubuntu, mirror: apt, suites: [xenial-updates]}
          trusty: {kind: apt, family: ubuntu, mirror: apt, suites: [trusty-updates]}
        modules: [lime]
        signing: {module-key: keys/module, repo-key: keys/repo}
        publish: {dir: repo}
        packages:
          lime-forensics-dkms:
            upstream: xenial
            url: pool/main/l/lime-forensics/lime-forensics-dkms_1.9.1-8_all.deb
            sha256: \(SHA256.hash("lime").hex)
            size: 13612
        kernels:
        \(kernel("xenial", "a"))\(kernel("trusty", "b"))
        """)
    }

    @Test func twoUpstreamsOfOneReleaseAreTwoKernelsAndTheFirstUpstreamIsPublished() throws {
        let scratch = try Scratch()
        let manifest = try project(scratch)
        let keys = try runProcess(Products.farm, ["keys", "init", "--manifest", manifest])
        #expect(keys.status == 0, "\(keys.stdout)\(keys.stderr)")

        let plan = try runProcess(Products.farm, ["plan", "--format", "json", "--manifest", manifest])
        #expect(plan.status == 0, "\(plan.stderr)")
        let tasks = try #require((try JSONSerialization.jsonObject(with: Data(plan.stdout.utf8)) as? [String: Any])?["tasks"] as? [[String: Any]])
        let names = Set(tasks.compactMap { $0["name"] as? String })
        for upstream in ["xenial", "trusty"] {
            #expect(names.contains("bundle:4.4.0-45-generic@\(upstream)"), "\(names.sorted())")
            #expect(names.contains("compile:lime/4.4.0-45-generic@\(upstream)"))
            #expect(names.contains("sign:lime/4.4.0-45-generic@\(upstream)"))
        }
        let publish = try #require(tasks.first { $0["kind"] as? String == "publish" })
        let inputs = (publish["dependencies"] as? [[String: String]] ?? []).compactMap { $0["task"] }
        #expect(inputs == ["sign:lime/4.4.0-45-generic@xenial"], "the upstream listed first is published")

        // A command that takes one kernel asks which, and takes release@upstream.
        let ambiguous = try runProcess(Products.farm, ["bundle", "4.4.0-45-generic", "--manifest", manifest])
        #expect(ambiguous.status == 2, "\(ambiguous.stdout)\(ambiguous.stderr)")
        #expect(ambiguous.stderr.contains("4.4.0-45-generic@xenial, 4.4.0-45-generic@trusty"), "\(ambiguous.stderr)")
        let one = try runProcess(Products.farm, ["plan", "4.4.*@trusty", "--manifest", manifest])
        #expect(one.status == 0 && one.stdout.contains("bundle:4.4.0-45-generic@trusty") && !one.stdout.contains("@xenial"), "\(one.stdout)\(one.stderr)")
    }
}
