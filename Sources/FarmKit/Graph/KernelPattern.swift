import FarmEngine
import Foundation

/// A shell glob over kernel releases (`6.1.*`, `*-rt-amd64`), as `farm build PATTERN` takes it.
/// A glob with an `@` matches `release@upstream` instead (`4.4.*@xenial`).
public struct KernelPattern: Sendable, Hashable, CustomStringConvertible {
    public let glob: String

    public init(_ glob: String) { self.glob = glob }

    public func matches(_ kernel: Kernel) -> Bool {
        fnmatch(glob, glob.contains("@") ? kernel.name.description : kernel.release, 0) == 0
    }

    public var description: String { glob }
}
