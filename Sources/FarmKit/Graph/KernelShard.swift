import FarmEngine
import Foundation

/// `--shard I/N`: one of N disjoint parts of a manifest's kernels, for engines that run N jobs
/// (a CI matrix, a Slurm job array, Kubernetes Indexed Jobs). A kernel's part is a hash of its
/// upstream and release, so it does not move when other kernels are added or removed, and
/// every job computes the same split without talking to the others.
public struct KernelShard: Sendable, Hashable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1 else { throw FarmError.badInput("--shard \(index)/\(count): the number of shards must be at least 1") }
        guard (0..<count).contains(index) else {
            throw FarmError.badInput("--shard \(index)/\(count): the shard must be 0 to \(count - 1) (numbered from 0, as "
                                     + "Slurm's SLURM_ARRAY_TASK_ID and a matrix index)")
        }
        self.index = index
        self.count = count
    }

    /// `I/N`, as the command line gives it.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]) else {
            throw FarmError.badInput("--shard '\(text)': expected I/N, two whole numbers such as 0/4 (shard 0 of 4)")
        }
        try self.init(index: index, count: count)
    }

    public func contains(_ kernel: Kernel) -> Bool {
        KernelShard.part(of: kernel, among: count) == index
    }

    /// The first 8 bytes of sha256("<upstream>\0<release>") modulo `count`.
    public static func part(of kernel: Kernel, among count: Int) -> Int {
        let digest = SHA256.hash(kernel.upstream + "\u{0}" + kernel.release)
        return Int(UInt64(digest.hex.prefix(16), radix: 16)! % UInt64(count))
    }

    public var description: String { "\(index)/\(count)" }
}
