import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import Testing

@Suite("Building and memoizing")
struct BuildTests {
    @Test func secondBuildRunsNothing() async throws {
        let project = try SyntheticProject(try Scratch())
        let (first, _) = try await project.build()
        #expect(first.built == first.total)
        #expect(first.total == 4 * 5 + 3 + 1)  // 4 kernels x 5 tasks, 3 toolchains, 1 publish
        let (second, log) = try await project.build()
        #expect(second.built == 0)
        #expect(second.cached == second.total)
        #expect(log.built.isEmpty)
        #expect(second.databaseWrites == 0)
    }

    @Test func changingOneKernelsInputRerunsExactlyItsChain() async throws {
        let project = try SyntheticProject(try Scratch())
        try await project.build()
        let release = SyntheticProject.release(2)
        try project.edit("linux-headers-\(release)_amd64.deb", with: "linux-headers-\(release)_amd64-rebuilt.deb")
        let (summary, log) = try await project.build()
        #expect(log.built == [
            "synthetic-fetch:pool/main/l/linux/linux-headers-\(release)_amd64-rebuilt.deb",
            "synthetic-bundle:\(release)", "synthetic-compile:\(release)", "synthetic-sign:\(release)",
            "synthetic-publish:repository",
        ])
        #expect(summary.cached == summary.total - 5)
    }

    @Test func identicalOutputStopsTheRebuild() async throws {
        let project = try SyntheticProject(try Scratch())
        try await project.build()
        // A new pin for the same package: the fetch task's key changes, but what it yields is
        // known before it runs (the same bytes), so nothing downstream reruns (early cutoff), and
        // the download itself is never needed.
        try project.edit(SHA256.hash("headers 1").hex, with: SHA256.hash("headers 1, re-pinned").hex)
        let (summary, log) = try await project.build()
        #expect(log.built.isEmpty && summary.cached == summary.total, "\(log.built)")
    }

    @Test func patternBuildsOnlyMatchingKernels() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 3)
        let (_, log) = try await project.build([SyntheticProject.release(1)])
        #expect(log.built.contains("synthetic-compile:\(SyntheticProject.release(1))"))
        #expect(!log.built.contains("synthetic-compile:\(SyntheticProject.release(0))"))
        await #expect(throws: FarmError.self) { try await project.build(["9.*"]) }
    }

    @Test func keepGoingBuildsEverythingIndependentOfAFailure() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 4, failing: [1])
        let (summary, log) = try await project.build(keepGoing: true)
        let broken = SyntheticProject.release(1)
        #expect(Set(log.failed.keys) == ["synthetic-compile:\(broken)"])
        #expect(log.skipped == ["synthetic-sign:\(broken)"])
        for index in [0, 2, 3] {
            #expect(log.built.contains("synthetic-sign:\(SyntheticProject.release(index))"))
        }
        #expect(summary.failed == 1)
        #expect(summary.built == summary.total - 2)
        // The publication goes ahead with the three modules that built (an optional input left out).
        let cache = try BuildCache(directory: project.cache, access: .shared)
        defer { cache.close() }
        let publish = try #require(try cache.latestRecord(kind: "synthetic-publish", label: "repository"))
        let index = String(decoding: try cache.objects.read(try #require(publish.outputs.first?.digest)), as: UTF8.self)
        #expect(index.split(separator: "\n").map { $0.split(separator: " ")[0] }
                == [0, 2, 3].map { "module.\(SyntheticProject.release($0))"[...] })
        #expect(!summary.succeeded)
        // farm explain agrees with the build on the input left out: the publication is up to date.
        #expect(try project.session().explain("synthetic-publish:repository").contains("up to date"))
        // The failure is shown with the tail of its log.
        #expect(log.failed["synthetic-compile:\(broken)"]?.log.contains("error: headers for \(broken) are broken") == true)
        // And retried by the next run, not remembered as a result.
        let (again, againLog) = try await project.build(keepGoing: true)
        #expect(Set(againLog.failed.keys) == ["synthetic-compile:\(broken)"])
        #expect(again.built == 0)
    }

    @Test func withoutKeepGoingTheBuildStopsAtTheFirstFailure() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 6, failing: [0])
        let (summary, _) = try await project.build(jobs: 1)
        #expect(summary.failed == 1)
        #expect(summary.notRun > 0)
        #expect(summary.built + summary.failed + summary.cached + summary.notRun == summary.total)
    }

    @Test func keepGoingExitsOneFromTheCommandLine() throws {
        let scratch = try Scratch()
        let manifest = try scratch.write("manifest.yml", SyntheticManifest.text(kernels: 3, failing: [0]))
        let result = try runProcess(Products.driver, ["--manifest", manifest, "--cache", scratch.file("cache"), "-k"])
        #expect(result.status == 1)
        #expect(result.tasks("failed") == ["synthetic-compile:\(SyntheticProject.release(0))"])
        #expect(result.tasks("built").contains("synthetic-sign:\(SyntheticProject.release(2))"))
    }

    @Test func dryRunRunsNothingAndSaysWhy() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 2)
        let (dry, log) = try await project.build(dryRun: true)
        #expect(dry.built == 0)
        #expect(dry.wouldRun == dry.total)
        #expect(log.wouldRun["synthetic-fetch:pool/main/l/linux/linux-kbuild-\(SyntheticProject.release(0))_amd64.deb"] == "never built")
        // The dry run and `farm explain` say the same. The packages' contents are known by their
        // pins, so the bundle's own key is known: it was never built (and its downloads with it).
        let bundleReason = "never built"
        #expect(log.wouldRun["synthetic-bundle:\(SyntheticProject.release(0))"] == bundleReason)
        #expect(try project.session().explain("synthetic-bundle:\(SyntheticProject.release(0))") == "synthetic-bundle:\(SyntheticProject.release(0)): " + bundleReason)
        try await project.build()
        let (after, afterLog) = try await project.build(dryRun: true)
        #expect(after.wouldRun == 0)
        #expect(afterLog.wouldRun.isEmpty)
    }

    @Test func explainSaysWhatChanged() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 3)
        let release = SyntheticProject.release(0)
        #expect(try project.session().explain("synthetic-compile:\(release)").hasSuffix("never built"))
        try await project.build()
        #expect(try project.session().explain("synthetic-compile:\(release)").contains("up to date"))

        // A new package, never fetched: its pin says what it holds, so the bundle names the changed input.
        try project.edit("linux-headers-\(release)_amd64.deb", with: "linux-headers-\(release)_amd64-v2.deb")
        let bundle = try project.session().explain("synthetic-bundle:\(release)")
        #expect(bundle.contains("input package.0/package changed ("), "\(bundle)")

        // Kernel 1 moves to the toolchain kernel 2 already built: its compile sees a changed input.
        try project.edit("toolchain: toolchain-1", with: "toolchain: toolchain-2")
        let compile = try project.session().explain("synthetic-compile:\(SyntheticProject.release(1))")
        #expect(compile.contains("input toolchain/root changed ("), "\(compile)")
        let dry = try await project.build(dryRun: true).1.wouldRun
        #expect(dry["synthetic-compile:\(SyntheticProject.release(1))"]?.hasPrefix("input toolchain/root changed") == true, "\(dry)")
    }

    @Test func definitionDifferenceNamesVersionParameterAndInput() throws {
        let digest = SHA256.hash("a"), other = SHA256.hash("b")
        let old = TaskDefinition(kind: "compile", version: 1, parameters: [("release", "6.1"), ("strip", "yes")],
                                 inputs: [.init(role: "bundle", output: "bundle", digest: digest)])
        let new = TaskDefinition(kind: "compile", version: 2, parameters: [("release", "6.1"), ("strip", "no")],
                                 inputs: [.init(role: "bundle", output: "bundle", digest: other),
                                          .init(role: "toolchain", output: "root", digest: digest)])
        let text = TaskDefinition.difference(from: old, to: new)
        #expect(text.contains("compile implementation version 1 -> 2"))
        #expect(text.contains("parameter strip: 'yes' -> 'no'"))
        #expect(text.contains("input bundle/bundle changed (\(digest.short) -> \(other.short))"))
        #expect(text.contains("input toolchain/root is new"))
        #expect(TaskDefinition(encoded: new.encoded) == new)
        #expect(old.key != new.key)
    }

    @Test func explainNamesAMissingOutput() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 1)
        try await project.build()
        let release = SyntheticProject.release(0)
        let cache = try project.session().openCache()
        let record = try #require(try cache.findRecords("synthetic-sign:\(release)").first)
        unlink(cache.objects.path(of: record.outputs[0].digest))
        #expect(try project.session().explain("synthetic-sign:\(release)").hasSuffix("output signed is missing from the store"))
        let (_, log) = try await project.build()
        #expect(log.built == ["synthetic-sign:\(release)"])
    }

    @Test func logOfAFailedTaskIsKept() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 1, failing: [0])
        try await project.build()
        let (record, text) = try project.session().log("synthetic-compile:\(SyntheticProject.release(0))")
        #expect(record.status != 0)
        #expect(text.contains("error: headers for \(SyntheticProject.release(0)) are broken"))
        #expect(throws: FarmError.self) { try project.session().log("synthetic-compile:nonexistent") }
    }

    @Test func corruptObjectIsNeverServedAndIsRebuilt() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 1)
        try await project.build()
        let release = SyntheticProject.release(0)
        let cache = try project.session().openCache()
        let bundle = try #require(try cache.findRecords("synthetic-bundle:\(release)").first)
        let path = cache.objects.path(of: bundle.outputs[0].digest)
        chmod(path, 0o644)
        try Data("tampered\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: ContentStoreError.self) { try cache.objects.read(bundle.outputs[0].digest) }
        // The corrupt object was removed on sight, so the bundle counts as not built and is remade.
        let (_, log) = try await project.build()
        #expect(log.built == ["synthetic-bundle:\(release)"])
        #expect(try cache.objects.read(bundle.outputs[0].digest).count > 0)
    }

    @Test func gcVerifyFindsCorruptionAndGcDropsSupersededResults() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 2)
        try await project.build()
        let release = SyntheticProject.release(0)
        try project.edit("linux-headers-\(release)_amd64.deb", with: "linux-headers-\(release)_amd64-v2.deb")
        try await project.build()

        let clean = try runProcess(Products.farm, ["gc", "--verify", "--manifest", project.manifestPath])
        #expect(clean.status == 0, "\(clean.stderr)")
        #expect(clean.stdout.contains("0 corrupt"))
        // The kernel's bundle, compile, sign and the publish were superseded; the old fetch task
        // is still the latest of its own name.
        #expect(clean.stdout.contains(", 4 superseded results"), "\(clean.stdout)")

        let cache = try project.session().openCache()
        let sign = try #require(try cache.findRecords("synthetic-sign:\(release)").first)
        let path = cache.objects.path(of: sign.outputs[0].digest)
        cache.close()
        chmod(path, 0o644)
        try Data("bit rot\n".utf8).write(to: URL(fileURLWithPath: path))
        let dirty = try runProcess(Products.farm, ["gc", "--verify", "--manifest", project.manifestPath])
        #expect(dirty.status == 1)
        #expect(dirty.stdout.contains("1 corrupt"))
        #expect(dirty.stdout.contains(path))
        let (_, log) = try await project.build()
        #expect(log.built == ["synthetic-sign:\(release)"])
    }

    @Test func statusReportsTheLastRunsHitRate() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 2)
        try await project.build()
        try await project.build()
        let status = try runProcess(Products.farm, ["status", "--json", "--manifest", project.manifestPath])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
        let last = try #require(object["last_run"] as? [String: Any])
        #expect(last["hit_rate"] as? Double == 1.0)
        #expect(object["tasks"] as? Int == 13)  // 2 kernels x 5, 2 toolchains, 1 publish
    }

    /// A cache holding a real bundle (made from dpkg-deb packages by the bundle task) and its
    /// tree unpacked the way compile and sign tasks unpack it.
    func cacheWithAnUnpackedBundle(_ scratch: Scratch) async throws -> (cache: String, bundle: Digest, tree: String) {
        let release = "6.1.0-47-amd64"
        var graph = BuildGraph()
        let inputs = try Fixtures.kernelPackages(in: scratch, release: release).enumerated().map { index, path in
            BuildGraph.Dependency(role: "package.\(index)", node: graph.add(LocalPackage(path: path), label: path))
        }
        graph.add(BundleAction(release: release), label: release, dependencies: inputs)
        let directory = scratch.file("cache")
        let cache = try BuildCache(directory: directory)
        defer { cache.close() }
        let summary = try await Builder(cache: cache, options: BuildOptions(jobs: 2), reporter: EventLog()).build(graph)
        try #require(summary.succeeded, "\(summary.failures)")
        let bundle = try #require(try cache.latestRecord(kind: "bundle", label: release)?.output("bundle")).digest
        let tree = try UnpackedTrees(objects: cache.objects).tree(of: bundle, log: TaskLog())
        return (directory, bundle, tree)
    }

    @Test func unpackedTreesAreReadOnlyAndGcVerifyFindsAndRemovesAnEditedOne() async throws {
        let scratch = try Scratch()
        let (cache, bundle, tree) = try await cacheWithAnUnpackedBundle(scratch)
        let header = "usr/src/linux-headers-6.1.0-47-common/include/linux/module.h"
        var writable: [String] = []
        for path in [""] + (FileManager.default.subpaths(atPath: tree) ?? []) {
            var info = stat()
            lstat(tree + "/" + path, &info)
            if info.st_mode & S_IFMT != S_IFLNK, info.st_mode & 0o222 != 0 { writable.append(path) }
        }
        #expect(writable.isEmpty, "writable in the unpacked tree: \(writable)")

        // Mount points farm adds before a sandbox starts are not a change; a stale unpack is removed.
        try UnpackedTrees.makeMountPoint(tree + "/usr/src/linux-headers-6.1.0-47-amd64/mounted/here", inTree: tree)
        let stale = scratch.file("cache/unpacked/.unpacking-\(bundle.hex)-999999")
        try FileManager.default.createDirectory(atPath: stale + "/usr", withIntermediateDirectories: true)
        chmod(stale + "/usr", 0o555)
        let clean = try runProcess(Products.farm, ["gc", "--verify", "--cache", cache])
        #expect(clean.status == 0, "\(clean.stdout)\(clean.stderr)")
        #expect(clean.stdout.contains("1 unpacked trees: 0 corrupt"), "\(clean.stdout)")
        #expect(FileManager.default.fileExists(atPath: tree + "/" + header))
        #expect(!FileManager.default.fileExists(atPath: stale))

        // An edit as a user would make it.
        chmod(tree + "/" + header, 0o644)
        try Data("#define MODULE 2\n".utf8).write(to: URL(fileURLWithPath: tree + "/" + header))
        let dirty = try runProcess(Products.farm, ["gc", "--verify", "--cache", cache])
        #expect(dirty.status == 1)
        #expect(dirty.stdout.contains("1 corrupt"), "\(dirty.stdout)")
        #expect(dirty.stdout.contains("\(tree) (unpacked tree: \(header) was modified)"), "\(dirty.stdout)")
        #expect(!FileManager.default.fileExists(atPath: tree))

        // The next use unpacks the archive again.
        let opened = try BuildCache(directory: cache)
        defer { opened.close() }
        let again = try UnpackedTrees(objects: opened.objects).tree(of: bundle, log: TaskLog())
        #expect(try String(contentsOfFile: again + "/" + header, encoding: .utf8) == "#define MODULE\n")
    }

    @Test func statusCountsEverythingUnderTheCacheByPart() async throws {
        let scratch = try Scratch()
        let (cache, _, _) = try await cacheWithAnUnpackedBundle(scratch)
        try FileManager.default.createDirectory(atPath: cache + "/labs/lab1", withIntermediateDirectories: true)
        try Data(count: 300_000).write(to: URL(fileURLWithPath: cache + "/labs/lab1/initrd"))
        let status = try runProcess(Products.farm, ["status", "--json", "--cache", cache])
        #expect(status.status == 0, "\(status.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
        let parts = try #require(object["parts"] as? [String: Int64], "\(status.stdout)")
        func du(_ part: String) throws -> Int64 {
            let result = try runProcess("/usr/bin/du", ["-s", "-B1", cache + "/" + part])
            return Int64(result.stdout.split(separator: "\t").first ?? "") ?? -1
        }
        for part in ["cas", "unpacked", "labs"] {
            #expect(parts[part] == (try du(part)), "\(part): \(status.stdout)")
        }
        #expect(parts["unpacked"] ?? 0 > 0)
        #expect(object["bytes"] as? Int64 == parts.values.reduce(0, +))

        let text = try runProcess(Products.farm, ["status", "--cache", cache])
        #expect(text.stdout.contains("unpacked "), "\(text.stdout)")
        #expect(text.stdout.contains("labs "), "\(text.stdout)")
    }
}
