import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import Testing
import farm_test_driver

@Suite("gc --max-size")
struct GCSizeTests {
    func cacheBytes(_ project: SyntheticProject) throws -> Int64 {
        let status = try runProcess(Products.farm, ["status", "--json", "--manifest", project.manifestPath])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any], "\(status.stdout)")
        return try #require(object["bytes"] as? Int64)
    }

    /// The tasks whose latest result the cache still holds, each with every output present.
    func recorded(_ names: Set<String>, in project: SyntheticProject) throws -> Set<String> {
        let cache = try BuildCache(directory: project.cache, access: .readOnly)
        defer { cache.close() }
        var kept = Set<String>()
        for name in names {
            let parts = name.split(separator: ":", maxSplits: 1).map(String.init)
            guard let record = try cache.latestRecord(kind: parts[0], label: parts[1]) else { continue }
            for output in record.outputs { #expect(cache.objects.isPresent(output.digest), "\(name) names a removed object") }
            if let log = record.log { #expect(cache.objects.isPresent(log), "\(name) names a removed log") }
            kept.insert(name)
        }
        return kept
    }

    @Test func maxSizeDropsTheLeastRecentlyUsedResultsAndTheNextBuildRerunsExactlyThose() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 6)
        let (_, first) = try await project.build()
        let all = first.built
        // The last build uses kernels 0 and 1 (made first, so oldest unless a hit marks them used).
        let (recent, used) = ([SyntheticProject.release(0), SyntheticProject.release(1)], try await project.build([SyntheticProject.release(0), SyntheticProject.release(1)]).1)
        // The synthetic rules publish whatever the pattern; only the publication is new.
        #expect(used.built == ["synthetic-publish:repository"])
        let usedByLast = all.subtracting(["synthetic-publish:repository"]).filter { name in recent.contains { name.hasSuffix(":" + $0) } || name.hasSuffix(":toolchain-0") || name.hasSuffix(":toolchain-1") }

        #expect(try runProcess(Products.farm, ["gc", "--manifest", project.manifestPath]).status == 0)
        let before = try cacheBytes(project)
        let limit = before - 40_960
        let gc = try runProcess(Products.farm, ["gc", "--max-size", "\(limit)", "--manifest", project.manifestPath])
        #expect(gc.status == 0, "\(gc.stdout)\(gc.stderr)")
        #expect(gc.stdout.contains("(0 of them used by the last build)"), "\(gc.stdout)")
        #expect(try cacheBytes(project) <= limit)

        let kept = try recorded(all, in: project)
        let dropped = all.subtracting(kept).subtracting(["synthetic-publish:repository"])
        #expect(!dropped.isEmpty)
        #expect(dropped.isDisjoint(with: usedByLast), "dropped what the last build used: \(dropped.intersection(usedByLast).sorted())")
        let (summary, rebuilt) = try await project.build()
        #expect(summary.succeeded)
        // Exactly the dropped tasks, except downloads that nothing rebuilt reads (their results are
        // known by their pins, and their bundles were kept).
        let needed = dropped.filter { name in
            guard name.hasPrefix("synthetic-fetch:") else { return true }
            return rebuilt.built.contains { $0.hasPrefix("synthetic-bundle:") && name.contains("-\($0.dropFirst("synthetic-bundle:".count))_") }
        }
        #expect(rebuilt.built.subtracting(["synthetic-publish:repository"]) == needed, "rebuilt \(rebuilt.built.sorted()), dropped \(dropped.sorted())")
        #expect(needed.contains { $0.hasPrefix("synthetic-fetch:") }, "a rebuilt bundle fetched its packages again")
    }

    /// Sets every object's last use two hours back, as if the builds so far were that long ago.
    func age(_ project: SyntheticProject) throws {
        let cas = project.cache + "/cas"
        let then = timespec(tv_sec: time(nil) - 7200, tv_nsec: 0)
        for prefix in try FileManager.default.contentsOfDirectory(atPath: cas) where prefix.count == 2 {
            for name in try FileManager.default.contentsOfDirectory(atPath: cas + "/" + prefix) {
                let times = [then, then]
                #expect(utimensat(AT_FDCWD, "\(cas)/\(prefix)/\(name)", times, 0) == 0)
            }
        }
    }

    @Test func aBuildThatTakesResultsFromTheStoreKeepsThemFromBeingDroppedFirst() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 6)
        let (_, first) = try await project.build()
        try age(project)
        let r = SyntheticProject.release
        // Kernels 0 and 1 are used (all cached) two hours after they were built; then 2 and 3 are the last build.
        #expect(try await project.build([r(0), r(1)]).1.built == ["synthetic-publish:repository"])
        #expect(try await project.build([r(2), r(3)]).1.built == ["synthetic-publish:repository"])

        #expect(try runProcess(Products.farm, ["gc", "--manifest", project.manifestPath]).status == 0)
        // Four objects' worth: less than kernels 4 and 5 hold (logs are shared, outputs are not).
        let limit = try cacheBytes(project) - 16_384
        let gc = try runProcess(Products.farm, ["gc", "--max-size", "\(limit)", "--manifest", project.manifestPath])
        #expect(gc.status == 0 && gc.stdout.contains("(0 of them used by the last build)"), "\(gc.stdout)\(gc.stderr)")
        let dropped = first.built.subtracting(try recorded(first.built, in: project)).subtracting(["synthetic-publish:repository"])
        #expect(!dropped.isEmpty)
        // Only what no build used since: kernels 4 and 5 (their toolchains serve kernels 0 to 3 too).
        let unused = first.built.filter { name in [r(4), r(5)].contains { name.contains($0) } }
        #expect(dropped.isSubset(of: unused), "dropped what a later build used: \(dropped.subtracting(unused).sorted())")
    }

    @Test func aSizeTheStoreCannotReachDropsEverythingAndExitsOne() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 2)
        let (_, first) = try await project.build()
        let gc = try runProcess(Products.farm, ["gc", "--max-size", "1K", "--manifest", project.manifestPath])
        #expect(gc.status == 1, "\(gc.stdout)\(gc.stderr)")
        #expect(gc.stderr.contains("over --max-size 1") && gc.stderr.contains("farm status"), "\(gc.stderr)")
        #expect(try recorded(first.built, in: project).isEmpty)
        let (summary, again) = try await project.build()
        #expect(summary.succeeded && again.built == first.built)
    }

    @Test(arguments: ["10X", "1.5Q", "G", "ten"])
    func aSizeThatIsNotOneIsBadInput(_ size: String) throws {
        let scratch = try Scratch()
        let gc = try runProcess(Products.farm, ["gc", "--max-size", size, "--cache", scratch.file("cache")])
        #expect(gc.status == 2 && gc.stderr.contains("--max-size takes a size such as 10G"), "\(gc.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("cache")))
    }
}
