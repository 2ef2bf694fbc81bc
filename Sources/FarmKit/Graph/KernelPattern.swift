import FarmEngine
import Foundation

/// A shell glob over kernel releases (`6.1.*`, `*-rt-amd64`), as `farm build PATTERN` takes it.
public struct KernelPattern: Sendable, Hashable, CustomStringConvertible {
    public let glob: String

    public init(_ glob: String) { self.glob = glob }

    public func matches(_ release: String) -> Bool { fnmatch(glob, release, 0) == 0 }

    public var description: String { glob }
}
