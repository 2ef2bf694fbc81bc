import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import Testing
import farm_test_driver

/// `--report`, `--junit` and `farm report` from the real `farm` binary.
@Suite("Report command")
struct ReportCommandTests {
    /// Two kernels whose pinned package is not a package: their bundles fail, with nothing downloaded.
    func brokenProject(_ scratch: Scratch) throws -> String {
        let package = try scratch.write("not-a.deb", "this is not an ar archive\n")
        let (digest, size) = try SHA256.hash(fileAt: package)
        var text = upstreamHeader + "kernels:\n"
        for (release, version) in [("6.1.0-1-amd64", "6.1.1-1"), ("6.1.0-2-amd64", "6.1.2-1")] {
            text += "  - release: \(release)\n    upstream: debian\n    version: \(version)\n    packages:\n"
                + "      - url: file://\(package)\n        sha256: \(digest.hex)\n        size: \(size)\n"
        }
        return try scratch.write("manifest.yml", text)
    }

    @Test func aFailedBuildStillWritesItsReportsAndFarmReportRendersThem() throws {
        let scratch = try Scratch()
        let manifest = try brokenProject(scratch)
        let result = try runProcess(Products.farm, ["build", "-k", "--manifest", manifest, "--cache", scratch.file("cache"),
                                                    "--report", scratch.file("out/report.json"), "--junit", scratch.file("out/junit.xml")])
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        let report = try BuildReport.read(scratch.file("out/report.json"))
        #expect(report.kernels.map(\.kernel).sorted() == ["6.1.0-1-amd64@debian", "6.1.0-2-amd64@debian"])
        for kernel in report.kernels {
            #expect(kernel.state == .failed && kernel.version != nil)
            #expect(kernel.problem?.logTask == "bundle:\(kernel.kernel)", "\(kernel)")
            #expect(kernel.problem?.reason.contains("neither a .deb") == true, "\(kernel)")
        }
        let junit = try String(contentsOfFile: scratch.file("out/junit.xml"), encoding: .utf8)
        #expect(junit.contains("failures=\"2\""), "\(junit)")

        let page = try runProcess(Products.farm, ["report", "--manifest", manifest, "--cache", scratch.file("cache"), "-o", scratch.file("site")])
        #expect(page.status == 0, "\(page.stderr)")
        let html = try scratch.read("site/index.html")
        #expect(html.contains("data-kernel=\"6.1.0-2-amd64@debian\" data-state=\"failed\""), "\(html)")
        #expect(html.contains("farm log bundle:6.1.0-1-amd64@debian"))

        let help = try runProcess(Products.farm, ["publish", "--help"])
        #expect(help.stdout.contains("--report <file.json>") && help.stdout.contains("--junit <file.xml>"), "\(help.stdout)")
    }

    /// Each recipe of a kernel is a module of its record, by the name the repository gives it,
    /// failing with the task whose log says why (here: no toolchain has the kernel's compiler).
    @Test func eachRecipeIsAModuleOfItsKernelsRecordByItsPublishedName() throws {
        let scratch = try Scratch()
        var manifest = try brokenProject(scratch)
        try scratch.write("recipes/lime.yml", recipeText)
        try FileManager.default.createDirectory(atPath: scratch.file("recipes/toolchains"), withIntermediateDirectories: true)
        let text = try String(contentsOfFile: manifest, encoding: .utf8)
            .replacingOccurrences(of: "kernels:\n", with: "modules: [lime]\nkernels:\n")
            .replacingOccurrences(of: "    upstream: debian\n    version:", with: "    upstream: debian\n    compiler: gcc-99\n    version:")
        manifest = try scratch.write("manifest.yml", text)
        let result = try runProcess(Products.farm, ["build", "-k", "--manifest", manifest, "--cache", scratch.file("cache"),
                                                    "--report", scratch.file("report.json")])
        #expect(result.status == 1, "\(result.stderr)")
        let report = try BuildReport.read(scratch.file("report.json"))
        let kernel = try #require(report.kernels.first { $0.kernel == "6.1.0-1-amd64@debian" })
        let module = try #require(kernel.modules.first, "\(kernel)")
        #expect(kernel.modules.count == 1 && module.recipe == "lime" && module.file == "lime-6.1.0-1-amd64.ko" && module.state == .failed)
        #expect(module.problem?.logTask == "compile:lime/6.1.0-1-amd64@debian", "\(module)")
        #expect(module.problem?.reason.contains("needs the compiler gcc-99") == true, "\(module)")
        #expect(module.sha256 == nil && kernel.profile == nil)
    }

    @Test func reportRefusesWhatItCannotRenderWithExitTwo() throws {
        let scratch = try Scratch()
        let empty = try runProcess(Products.farm, ["report", "--cache", scratch.file("cache"), "-o", scratch.file("site")])
        #expect(empty.status == 2 && empty.stderr.contains("run 'farm build' first"), "\(empty.stderr)")
        let foreign = try scratch.write("plan.json", "{\"tasks\": []}\n")
        let wrong = try runProcess(Products.farm, ["report", "--input", foreign, "-o", scratch.file("site")])
        #expect(wrong.status == 2 && wrong.stderr.contains("\(foreign): not a farm build report: field 'schema' is missing"), "\(wrong.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("site")))
        let file = try scratch.write("a-file", "x\n")
        let onAFile = try runProcess(Products.farm, ["report", "--input", foreign, "-o", file])
        #expect(onAFile.status == 2 && onAFile.stderr.contains("-o \(file) is a file"), "\(onAFile.stderr)")
    }

    /// A report path that cannot be written is refused before any task runs.
    @Test(arguments: ["--report", "--junit"])
    func aReportPathThatCannotBeWrittenIsBadInputBeforeTheBuild(_ flag: String) throws {
        let scratch = try Scratch()
        let manifest = try brokenProject(scratch)
        let file = try scratch.write("a-file", "x\n")
        for (path, problem) in [(file + "/deeper/r.out", "\(file) is a file, not a directory"), (scratch.path, "is a directory")] {
            let result = try runProcess(Products.farm, ["build", "--json", flag, path, "--manifest", manifest, "--cache", scratch.file("cache")])
            #expect(result.status == 2 && result.stderr.contains("\(flag) \(path): \(problem)"), "\(result.stderr)")
            #expect(result.tasks("started").isEmpty)
        }
    }

    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Width, height, the number of distinct colours and whether each wanted colour occurs, from
    /// the PNG's own bytes (zlib and the five row filters; no imaging package).
    static let readPNG = """
    import json, struct, sys, zlib
    data = open(sys.argv[1], "rb").read()
    assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR": width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        if kind == b"IDAT": idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw, stride, prev, colours = zlib.decompress(idat), width * bpp, bytearray(width * bpp), set()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[i:i + 3]).hex() for i in range(0, stride, bpp))
        prev = line
    print(json.dumps({"width": width, "height": height, "colours": len(colours),
                      "has": {want: want in colours for want in sys.argv[2:]}}))
    """

    /// The rows of each table, as the browser built its DOM, and any element with a given id.
    static let readDOM = """
    import json, sys
    from html.parser import HTMLParser
    class Rows(HTMLParser):
        def __init__(self):
            super().__init__(); self.families, self.family, self.ids = {}, None, []
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "id" in attrs: self.ids.append(attrs["id"])
            if tag == "table" and "data-family" in attrs:
                self.family = attrs["data-family"]; self.families[self.family] = []
            if tag == "tr" and "data-kernel" in attrs:
                self.families[self.family].append([attrs["data-kernel"], attrs["data-state"]])
    rows = Rows(); rows.feed(open(sys.argv[1]).read())
    print(json.dumps({"families": rows.families, "ids": rows.ids}))
    """

    @Test(.enabled(if: chromium != nil, "chromium is not installed (scripts/install-deps installs it)"))
    func theCoveragePageShowsEachFamilyNewestFirstInAHeadlessBrowser() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 4, failing: [1])
        let reportPath = project.scratch.file("report.json")
        _ = try await Session.build(manifestPath: project.manifestPath, cacheDirectory: project.cache, rules: SyntheticRules(), patterns: [],
                                    options: BuildOptions(jobs: 2, keepGoing: true), reporter: EventLog(), reports: ReportFiles(json: reportPath))
        // A second family, and a reason carrying markup, as a compiler's message can.
        var report = try BuildReport.read(reportPath)
        let index = { (n: Int) in report.kernels.firstIndex { $0.release == SyntheticProject.release(n) }! }
        report.kernels[index(3)].family = "ubuntu"
        report.kernels[index(1)].problem?.reason = "error: <img id=\"injected\" src=\"x\"> & more"
        try BuildReport.write(try report.encoded(), to: reportPath)

        let site = project.scratch.file("site")
        let rendered = try runProcess(Products.farm, ["report", "--input", reportPath, "-o", site])
        #expect(rendered.status == 0, "\(rendered.stderr)")
        let browser = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-color-profile=srgb",
                       "--user-data-dir=" + project.scratch.file("chromium")]
        let url = "file://\(site)/index.html"
        let dom = try runProcess("/usr/bin/timeout", ["120", Self.chromium!] + browser + ["--dump-dom", url])
        #expect(dom.status == 0, "\(dom.stderr)")
        let domFile = try project.scratch.write("dom.html", dom.stdout)
        let rows = try python(Self.readDOM, [domFile])
        let families = try #require(rows["families"] as? [String: [[String]]], "\(rows)")
        let r = SyntheticProject.release
        #expect(families["debian"] == [["\(r(2))@synthetic", "built"], ["\(r(1))@synthetic", "failed"], ["\(r(0))@synthetic", "built"]],
                "\(families)")
        #expect(families["ubuntu"] == [["\(r(3))@synthetic", "built"]], "\(families)")
        #expect((rows["ids"] as? [String])?.isEmpty == true, "markup in a reason became an element: \(rows)")
        #expect(dom.stdout.contains("error: &lt;img id=\"injected\""), "\(dom.stdout)")

        let shot = project.scratch.file("page.png")
        let screenshot = try runProcess("/usr/bin/timeout", ["120", Self.chromium!] + browser + ["--window-size=900,600", "--screenshot=" + shot, url])
        #expect(screenshot.status == 0, "\(screenshot.stderr)")
        let png = try python(Self.readPNG, [shot, "c62828", "2e7d32"])
        #expect(png["width"] as? Int == 900 && png["height"] as? Int == 600, "\(png)")
        #expect((png["colours"] as? Int ?? 0) > 20, "a blank page? \(png)")
        #expect(png["has"] as? [String: Bool] == ["c62828": true, "2e7d32": true], "the failed and built state colours: \(png)")
    }

    func python(_ script: String, _ arguments: [String]) throws -> [String: Any] {
        let result = try runProcess("/usr/bin/env", ["python3", "-c", script] + arguments)
        try #require(result.status == 0, "python3: \(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
    }
}
