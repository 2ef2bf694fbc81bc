import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Remove objects no current task result references.",
        discussion: """
        With --max-size, then drop the least recently used results (and the objects only they use) until \
        everything under the cache fits; results the last build used go last. The next build reruns \
        exactly the dropped tasks. Exit 1 when the cache still does not fit (what is left is not the store's).
        """)

    @OptionGroup var options: GlobalOptions

    @Flag(name: .long, help: "Re-hash every kept object and report (and remove) corrupt ones.")
    var verify = false

    @Option(name: .long, help: ArgumentHelp("Shrink the cache to at most this size: bytes, or with K, M, G or T (powers of 1024), e.g. 10G, 500M.",
                                            valueName: "size"))
    var maxSize: String?

    /// `10G`, `500M`, `1.5G`, `4096`: binary units, as `farm status` prints sizes.
    static func bytes(_ text: String) -> Int64? {
        var number = text.uppercased()
        for suffix in ["IB", "B"] where number.hasSuffix(suffix) && number.count > suffix.count { number.removeLast(suffix.count) }
        let units: [Character: Double] = ["K": 0x1p10, "M": 0x1p20, "G": 0x1p30, "T": 0x1p40]
        var scale = 1.0
        if let last = number.last, let unit = units[last] {
            scale = unit
            number.removeLast()
        }
        guard let value = Double(number), value >= 0, value.isFinite, value * scale < 9e18 else { return nil }
        return Int64(value * scale)
    }

    func validate() throws {
        if let maxSize, GCCommand.bytes(maxSize) == nil {
            throw ValidationError("--max-size takes a size such as 10G, 500M or 4096 (bytes), not '\(maxSize)'")
        }
    }

    func run() throws {
        let directory = options.cacheDirectory
        let limit = maxSize.flatMap(GCCommand.bytes)
        let report = try BuildCache(directory: directory, access: .exclusive).collectGarbage(verify: verify, maxBytes: limit)
        let size = { ByteCountFormatter.string(fromByteCount: $0, countStyle: .binary) }
        print("removed \(report.removedObjects) objects (\(size(report.removedBytes))), \(report.removedResults) superseded results and \(report.removedTrees) unpacked trees")
        if let limit {
            print("dropped \(report.droppedResults) least recently used results (\(report.droppedFromLastBuild) of them used by the last build)"
                  + " to fit \(size(limit)); the cache is now \(size(report.bytesAfter)); the next build reruns what was dropped")
        }
        if verify {
            print("verified \(report.checkedObjects) objects and \(report.checkedTrees) unpacked trees: \(report.corrupt.count) corrupt")
            for path in report.corrupt { print("corrupt (removed; the next build remakes it): \(path)") }
            if !report.corrupt.isEmpty { throw ExitCode(ExitStatus.failure) }
        }
        if let limit, report.bytesAfter > limit {
            FileHandle.standardError.write(Data(("farm: \(directory) is still \(size(report.bytesAfter)), over --max-size \(size(limit)):"
                + " no results are left to drop; 'farm status' shows what else takes the space (labs, git, the database)\n").utf8))
            throw ExitCode(ExitStatus.failure)
        }
    }
}
