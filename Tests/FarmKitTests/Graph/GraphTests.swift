import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import farm_test_driver
import Testing

@Suite("Planning")
struct GraphTests {
    @Test(arguments: [
        ("6.1.*", "6.1.0-56-amd64", true), ("6.1.*", "6.12.0-1-amd64", false), ("*-rt-amd64", "6.1.0-56-rt-amd64", true),
        ("5.10.0-3?-*", "5.10.0-32-cloud-amd64", true), ("6.1.0-56-amd64", "6.1.0-56-amd64", true),
    ])
    func patternsAreShellGlobs(_ pattern: String, _ release: String, _ matches: Bool) {
        let kernel = Kernel(release: release, upstream: "debian", family: .debian, suite: nil, distribution: nil, version: nil,
                            toolchain: nil, compiler: nil, packages: [], image: nil, lastSeen: nil,
                            location: SourceLocation(file: "manifest.yml", line: 1, column: 1))
        #expect(KernelPattern(pattern).matches(kernel) == matches)
    }

    /// Patterns match releases; one with an `@` matches `release@upstream`, to pick one upstream's kernel.
    @Test(arguments: [("4.4.*@xenial", "xenial", true), ("4.4.*@xenial", "trusty", false), ("4.4.*", "trusty", true), ("*@trusty", "trusty", true)])
    func aPatternWithAnAtMatchesTheUpstream(_ pattern: String, _ upstream: String, _ matches: Bool) {
        let kernel = Kernel(release: "4.4.0-45-generic", upstream: upstream, family: .ubuntu, suite: nil, distribution: nil, version: nil,
                            toolchain: nil, compiler: nil, packages: [], image: nil, lastSeen: nil,
                            location: SourceLocation(file: "manifest.yml", line: 1, column: 1))
        #expect(KernelPattern(pattern).matches(kernel) == matches)
    }

    @Test func aSharedTaskIsPlannedOnce() throws {
        var graph = BuildGraph()
        let a = graph.add(SyntheticToolchain(name: "bookworm"), label: "bookworm")
        let b = graph.add(SyntheticToolchain(name: "bookworm"), label: "bookworm")
        #expect(a == b)
        #expect(graph.count == 1)
    }

    @Test func keyDependsOnInputContentNotOnTheProducersKey() {
        let input = SHA256.hash("bundle bytes")
        let one = TaskDefinition(kind: "compile", version: 1, parameters: [("release", "6.1")],
                                 inputs: [.init(role: "bundle", output: "bundle", digest: input)])
        let same = TaskDefinition(kind: "compile", version: 1, parameters: [("release", "6.1")],
                                  inputs: [.init(role: "bundle", output: "bundle", digest: input)])
        let otherParameter = TaskDefinition(kind: "compile", version: 1, parameters: [("release", "6.2")],
                                            inputs: [.init(role: "bundle", output: "bundle", digest: input)])
        #expect(one.key == same.key)
        #expect(one.key != otherParameter.key)
        // Length prefixes keep values from running into each other.
        let split1 = TaskDefinition(kind: "k", version: 1, parameters: [("a", "b c")], inputs: [])
        let split2 = TaskDefinition(kind: "k", version: 1, parameters: [("a b", "c")], inputs: [])
        #expect(split1.key != split2.key)
    }

    @Test func planFormatsShowEveryTaskAndEdge() throws {
        let scratch = try Scratch()
        let path = try scratch.write("manifest.yml", SyntheticManifest.text(kernels: 2))
        let session = try Session(manifestPath: path, cacheDirectory: scratch.file("cache"), rules: SyntheticRules())
        let graph = try session.plan([])
        let text = PlanFormatter.format(graph, as: .text)
        #expect(text.hasSuffix("\(graph.count) tasks\n"))
        #expect(text.contains("synthetic-sign:6.0.0-0-amd64 <- synthetic-compile:6.0.0-0-amd64"))

        let json = try #require(try JSONSerialization.jsonObject(with: Data(PlanFormatter.format(graph, as: .json).utf8)) as? [String: Any])
        let tasks = try #require(json["tasks"] as? [[String: Any]])
        #expect(tasks.count == graph.count)
        let compile = try #require(tasks.first { $0["name"] as? String == "synthetic-compile:6.0.0-0-amd64" })
        #expect((compile["dependencies"] as? [[String: String]])?.map { $0["role"] } == ["bundle", "toolchain"])

        let dot = PlanFormatter.format(graph, as: .dot)
        #expect(dot.hasPrefix("digraph farm {"))
        let edges = dot.split(separator: "\n").filter { $0.contains("->") }.count
        #expect(edges == graph.nodes.reduce(0) { $0 + $1.dependencies.count })
    }

    @Test func plainOutputPrintsAFailedBlockWithTheLogTail() throws {
        let scratch = try Scratch()
        let path = scratch.file("out.txt")
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        let reporter = ConsoleReporter(style: .plain, output: handle)
        let log = (1...40).map { "line \($0)" }.joined(separator: "\n") + "\n"
        reporter.report(.failed(.init(kind: "compile", label: "6.1.0-1-amd64", key: SHA256.hash("k")), .init(finished: 3, total: 9, running: 0),
                                error: "make exited with status 2", log: log))
        try handle.close()
        let text = try scratch.read("out.txt")
        #expect(text.hasPrefix("FAILED: [3/9] compile 6.1.0-1-amd64\n"))
        #expect(text.contains("error: make exited with status 2"))
        #expect(text.contains("farm log compile:6.1.0-1-amd64"))
        #expect(text.contains("    line 40\n"))
        #expect(!text.contains("line 10\n"))
    }

    /// farm-bench times the engine on a plan file and the product on a manifest of the same
    /// kernels; the two must be the same build, or the comparison means nothing.
    @Test func aSyntheticPlanFileAndItsManifestPlanTheSameTasks() throws {
        let scratch = try Scratch()
        let kernels = SyntheticKernel.numbered(5, failing: [2])
        let planPath = try scratch.write("plan.txt", SyntheticPlan.text(kernels))
        var fromFile = BuildGraph()
        SyntheticPlan.add(try SyntheticPlan.read(planPath), to: &fromFile)
        let manifest = try scratch.write("manifest.yml", SyntheticManifest.text(kernels))
        let fromManifest = try Session(manifestPath: manifest, cacheDirectory: scratch.file("cache"), rules: SyntheticRules()).plan([])

        func described(_ graph: BuildGraph) -> [String] {
            graph.nodes.map { node in
                let parameters = node.action.parameters.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
                let inputs = node.dependencies.map { "\($0.role)<-\(graph.nodes[$0.node].name)\($0.optional ? "?" : "")" }.joined(separator: ",")
                return "\(node.name) [\(parameters)] \(inputs)"
            }
        }
        #expect(fromFile.count == 5 * 5 + 3 + 1)
        #expect(described(fromFile) == described(fromManifest))
        #expect(described(fromFile).contains { $0.hasPrefix("synthetic-compile:6.0.2-2-amd64 [release=6.0.2-2-amd64,fails=yes]") })
    }

    @Test func aMalformedPlanFileLineIsRefusedWithItsFileAndLine() throws {
        let good = SyntheticPlan.text(SyntheticKernel.numbered(1))
        #expect(try SyntheticPlan.parse(good, path: "plan.txt") == SyntheticKernel.numbered(1))
        let error = #expect(throws: FarmError.self) {
            try SyntheticPlan.parse(good + "6.0.1-1-amd64 toolchain-1 maybe\n", path: "plan.txt")
        }
        #expect(error?.description.hasPrefix("plan.txt:3: 'maybe' is neither 'ok' nor 'fails'") == true)
        #expect(error?.category == .badInput)
    }
}
