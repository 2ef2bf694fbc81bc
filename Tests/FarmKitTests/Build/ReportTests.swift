import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import Testing
import farm_test_driver

@Suite("Build reports")
struct ReportTests {
    /// A synthetic build that writes `--report` and `--junit` into the scratch directory.
    func build(_ project: SyntheticProject, keepGoing: Bool = true, jobs: Int = 3) async throws -> (BuildSummary, BuildReport) {
        let reports = ReportFiles(json: project.scratch.file("out/report.json"), junit: project.scratch.file("out/junit.xml"))
        let summary = try await Session.build(manifestPath: project.manifestPath, cacheDirectory: project.cache, rules: SyntheticRules(),
                                              patterns: [], options: BuildOptions(jobs: jobs, keepGoing: keepGoing), reporter: EventLog(),
                                              reports: reports)
        return (summary, try BuildReport.read(project.scratch.file("out/report.json")))
    }

    /// Runs python3 on `script` with `arguments`; its stdout is one JSON object.
    func python(_ script: String, _ arguments: [String]) throws -> [String: Any] {
        let result = try runProcess("/usr/bin/env", ["python3", "-c", script] + arguments)
        try #require(result.status == 0, "python3: \(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
    }

    @Test func aReportListsEveryKernelWithItsStateModuleDigestAndTheLogToRead() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 3, failing: [1])
        let (_, first) = try await build(project)
        let (good, bad) = (SyntheticProject.release(0), SyntheticProject.release(1))
        #expect(first.schema == 1 && first.command == "build" && first.farm == FarmVersion.current)
        #expect(first.kernels.map(\.release).sorted() == (0..<3).map(SyntheticProject.release).sorted())
        let states = Dictionary(uniqueKeysWithValues: first.kernels.map { ($0.release, $0.state) })
        #expect(states == [good: .built, bad: .failed, SyntheticProject.release(2): .built])
        let failed = try #require(first.kernels.first { $0.release == bad })
        #expect(failed.problem?.logTask == "synthetic-compile:\(bad)")
        #expect(failed.problem?.reason.contains("the compiler exited with status 2") == true, "\(String(describing: failed.problem))")
        #expect(failed.modules.first?.sha256 == nil)
        #expect(failed.upstream == "synthetic" && failed.family == "debian")

        // The digest is the one the store recorded for the kernel's last task.
        let cache = try project.session().openCache(.readOnly)
        let signed = try #require(try cache.findRecords("synthetic-sign:\(good)").first?.output("signed")).digest
        cache.close()
        let module = try #require(first.kernels.first { $0.release == good }?.modules.first)
        #expect(module.sha256 == signed.hex && module.file == "synthetic-\(good).ko" && module.state == .built)

        // The task the report names is the one whose log tells.
        let log = try runProcess(Products.farm, ["log", try #require(failed.problem?.logTask), "--manifest", project.manifestPath])
        #expect(log.status == 0 && log.stdout.contains("headers for \(bad) are broken"), "\(log.stdout)\(log.stderr)")

        // Every build keeps its report in the cache, for `farm report`.
        #expect(FileManager.default.contents(atPath: BuildReport.lastPath(cacheDirectory: project.cache))
                == FileManager.default.contents(atPath: project.scratch.file("out/report.json")))

        let (_, second) = try await build(project)
        #expect(Dictionary(uniqueKeysWithValues: second.kernels.map { ($0.release, $0.state) })
                == [good: .cached, bad: .failed, SyntheticProject.release(2): .cached])
        #expect(second.kernels.first { $0.release == good }?.modules.first?.sha256 == signed.hex)
    }

    @Test func aNoOpBuildProvedByTheStampKeepsTheLastReportWithEverythingCached() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 2)
        let last = BuildReport.lastPath(cacheDirectory: project.cache)
        try await project.build()
        #expect(try BuildReport.read(last).kernels.allSatisfy { $0.state == .built })
        // A stamp is kept only for files older than 100 ms: the second build writes it.
        usleep(150_000)
        try await project.build()
        let first = try BuildReport.read(last)
        // Report times have whole seconds.
        try await Task.sleep(for: .seconds(1.1))
        let (summary, _) = try await project.build()
        try #require(summary.unchangedSinceStamp)
        let second = try BuildReport.read(last)
        #expect(second.kernels.map(\.kernel) == first.kernels.map(\.kernel))
        #expect(second.kernels.allSatisfy { $0.state == .cached && $0.modules.allSatisfy { $0.state == .cached } }, "\(second.kernels)")
        #expect(second.kernels.map { $0.modules.map(\.sha256) } == first.kernels.map { $0.modules.map(\.sha256) })
        #expect(second.finished > first.finished)
    }

    @Test func kernelsTheBuildNeverReachedAreSkippedNotFailed() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 6, failing: [0])
        let (summary, report) = try await build(project, keepGoing: false, jobs: 1)
        try #require(summary.notRun > 0)
        #expect(report.kernels.first { $0.release == SyntheticProject.release(0) }?.state == .failed)
        let skipped = report.kernels.filter { $0.state == .skipped }
        #expect(!skipped.isEmpty, "\(report.kernels.map { "\($0.release) \($0.state)" })")
        #expect(skipped.allSatisfy { $0.problem?.reason.contains("-k") == true })
    }

    static let readJUnit = """
    import json, sys, xml.etree.ElementTree as ET
    root = ET.parse(sys.argv[1]).getroot()
    out = {"root": root.tag, "failures": root.get("failures"), "suites": {}}
    for suite in root.findall("testsuite"):
        out["suites"][suite.get("name")] = [{"name": case.get("name"),
            "failure": (case.find("failure").get("message") if case.find("failure") is not None else None),
            "failure_text": (case.find("failure").text if case.find("failure") is not None else None),
            "skipped": case.find("skipped") is not None} for case in suite.findall("testcase")]
    print(json.dumps(out))
    """

    @Test func theJUnitReportIsValidXMLWithASuitePerFamilyAndCarriesAnyTextSafely() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 3, failing: [1])
        var (_, report) = try await build(project)
        let parsed = try python(ReportTests.readJUnit, [project.scratch.file("out/junit.xml")])
        #expect(parsed["root"] as? String == "testsuites" && parsed["failures"] as? String == "1")
        let debian = try #require((parsed["suites"] as? [String: [[String: Any]]])?["debian"], "\(parsed)")
        #expect(debian.count == 3)
        let failure = try #require(debian.first { $0["name"] as? String == "\(SyntheticProject.release(1))@synthetic" })
        #expect((failure["failure_text"] as? String)?.contains("farm log synthetic-compile:\(SyntheticProject.release(1))") == true)

        // A reason holding markup and a terminal escape (a compiler's log can) and a second family.
        let hostile = "error: <b id=\"x\">&amp; 'quoted' \u{1b}[31mred\u{1b}[0m ]]>"
        report.kernels[1].problem?.reason = hostile
        report.kernels[2].family = "rhel"
        let file = try project.scratch.write("hostile.xml", report.junit())
        let again = try python(ReportTests.readJUnit, [file])
        let suites = try #require(again["suites"] as? [String: [[String: Any]]])
        #expect(Set(suites.keys) == ["debian", "rhel"])
        let message = suites["debian"]?.compactMap { $0["failure"] as? String }.first
        #expect(message == hostile.replacingOccurrences(of: "\u{1b}", with: "\u{FFFD}"))
    }

    @Test func jsonEventsCarrySchemaAndTimeAndCachedTasksAreListed() throws {
        let scratch = try Scratch()
        let manifest = try scratch.write("manifest.yml", SyntheticManifest.text(kernels: 2))
        let arguments = ["--manifest", manifest, "--cache", scratch.file("cache")]
        #expect(try runProcess(Products.driver, arguments).status == 0)
        // Another kernel's package changes: the first kernel's tasks come from the store.
        let release = SyntheticProject.release(1)
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
        try Data(text.replacingOccurrences(of: "linux-headers-\(release)_amd64.deb", with: "linux-headers-\(release)_amd64-v2.deb").utf8)
            .write(to: URL(fileURLWithPath: manifest))
        let before = Date().addingTimeInterval(-1)
        let second = try runProcess(Products.driver, arguments)
        let after = Date().addingTimeInterval(1)
        #expect(second.status == 0, "\(second.stderr)")
        let first = SyntheticProject.release(0)
        #expect(second.tasks("cached").isSuperset(of: ["synthetic-compile:\(first)", "synthetic-sign:\(first)", "synthetic-bundle:\(first)"]),
                "\(second.stdout)")
        #expect(second.tasks("cached").isDisjoint(with: second.tasks("built")))
        let parser = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        for event in second.events {
            #expect(event["schema"] as? Int == 1, "\(event)")
            let time = try #require(event["time"] as? String, "\(event)")
            #expect(time.hasSuffix("Z"), "\(time)")
            let date = try parser.parse(time)
            #expect(date >= before && date <= after, "\(time)")
        }
    }
}
