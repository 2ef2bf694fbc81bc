import FarmEngine
import Foundation

/// An unpacked bundle: the kernel's header tree in kernel-packer's layout, and the facts about
/// the kernel it holds (where to run `make -C`, its `.config`). Compile and sign read the kernel
/// through this, so neither needs the other.
public struct BundleTree: Sendable {
    /// The unpacked bundle's root (`BUNDLE_*` files, `./usr`, `./lib`).
    public let root: String
    public let release: String

    public init(root: String, release: String) {
        self.root = root
        self.release = release
    }

    /// The headers' directory, relative to the root, as `BUNDLE_BUILD_DIR` names it:
    /// `usr/src/linux-headers-<release>` for Debian.
    public func buildDirectory() throws -> String {
        let text = (try? String(contentsOfFile: root + "/BUNDLE_BUILD_DIR", encoding: .utf8)) ?? ""
        let directory = text.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "./", with: "", options: .anchored)
        guard !directory.isEmpty, !directory.split(separator: "/").contains("..") else {
            throw FarmError(message: "the bundle of \(release) names no usable BUNDLE_BUILD_DIR ('\(directory)')")
        }
        return directory
    }

    /// The headers' directory, absolute.
    public func headers() throws -> String { root + "/" + (try buildDirectory()) }

    /// The kernel's `.config`, when the headers carry one.
    public func config() throws -> KernelConfig? { KernelConfig.read(path: try headers() + "/.config") }

    /// The compiler the kernel was built with, from its `.config` or `include/generated/compile.h`.
    public func compiler() throws -> KernelCompiler.Reading? { KernelCompiler.read(headers: try headers()) }

    /// Where the `.config` is (for messages).
    public func configPath() throws -> String { try headers() + "/.config" }
}
