import FarmEngine
import FarmKit
import Foundation
import Testing

/// A no-op build proves from the last complete build's stamp that nothing changed, and any
/// change to what the plan is made from, or to the store, sends it back to the full check.
struct UpToDateStampTests {
    /// A stamp is not trusted for files written in the last 100 ms; wait that out, as a user's next command would.
    func settle() { usleep(150_000) }

    func stamps(_ project: SyntheticProject) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: project.cache + "/stamps")) ?? []
    }

    @Test func aNoOpAfterACompleteBuildIsProvedByTheStampAndWritesNothing() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 3)
        let (first, _) = try await project.build()
        #expect(!first.unchangedSinceStamp)
        settle()
        // A stamp made within 100 ms of the build's last write is not kept; this build writes it then.
        let (full, _) = try await project.build()
        #expect(full.cached == full.total && stamps(project).count == 1)
        settle()
        let database = try #require(FileManager.default.attributesOfItem(atPath: project.cache + "/farm.sqlite")[.modificationDate] as? Date)
        let (noop, log) = try await project.build()
        #expect(noop.unchangedSinceStamp)
        #expect(noop.succeeded && noop.cached == full.total && noop.total == full.total && noop.databaseWrites == 0)
        #expect(ConsoleReporter.describe(noop).hasPrefix("farm: no work to do (nothing changed since the last build of these 19 tasks, "))
        #expect(log.built.isEmpty)
        #expect(try FileManager.default.attributesOfItem(atPath: project.cache + "/farm.sqlite")[.modificationDate] as? Date == database)
    }

    @Test func anObjectRemovedFromTheStoreIsRebuiltDespiteTheStamp() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 2)
        try await project.build()
        settle()
        try await project.build()
        #expect(stamps(project).count == 1)
        let cache = try BuildCache(directory: project.cache)
        let record = try #require(try cache.findRecords("synthetic-sign:\(SyntheticProject.release(1))").first)
        cache.close()
        let signed = try #require(record.outputs.first { $0.name == "signed" })
        try FileManager.default.removeItem(atPath: ContentStore.path(in: project.cache + "/cas", of: signed.digest))
        settle()
        let (summary, log) = try await project.build()
        #expect(!summary.unchangedSinceStamp)
        #expect(log.built == ["synthetic-sign:\(SyntheticProject.release(1))"])
    }

    /// An edit that keeps the manifest's size and modification time (`touch -r`) still changes
    /// its inode change time, so the stamp does not hold.
    @Test func anEditThatKeepsSizeAndTimeIsStillSeen() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 2)
        try await project.build()
        settle()
        try await project.build()
        #expect(stamps(project).count == 1)
        let before = try #require(FileManager.default.attributesOfItem(atPath: project.manifestPath)[.modificationDate] as? Date)
        let text = try String(contentsOfFile: project.manifestPath, encoding: .utf8)
        let release = SyntheticProject.release(1)
        let edited = text.replacingOccurrences(of: "toolchain: toolchain-1", with: "toolchain: toolchain-2")
        #expect(edited != text && edited.utf8.count == text.utf8.count)
        try Data(edited.utf8).write(to: URL(fileURLWithPath: project.manifestPath))
        try FileManager.default.setAttributes([.modificationDate: before], ofItemAtPath: project.manifestPath)
        settle()
        let (_, log) = try await project.build()
        #expect(log.built.contains("synthetic-compile:\(release)"), "\(log.built)")
    }

    @Test func gcRemovesTheStamps() async throws {
        let project = try SyntheticProject(try Scratch(), kernels: 1)
        try await project.build()
        settle()
        try await project.build()
        #expect(stamps(project).count == 1)
        let cache = try BuildCache(directory: project.cache, access: .exclusive)
        _ = try cache.collectGarbage(verify: false)
        cache.close()
        #expect(stamps(project).isEmpty)
    }
}
