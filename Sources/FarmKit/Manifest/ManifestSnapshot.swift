import FarmEngine
import Foundation

/// A checked manifest kept in the cache in a compact binary form, named by the sha256 of the
/// manifest's bytes. Parsing a 10,000-kernel manifest with Yams takes about 0.3 s; reading this
/// back takes a fraction, which is what keeps a no-op build of such a manifest under a second.
/// Any change to the manifest's bytes, its path or farm's version makes the snapshot not match.
enum ManifestSnapshot {
    static let magic = "farm-manifest-snapshot 6\n"

    static func path(in directory: String) -> String { directory + "/manifest.snapshot" }

    static func identity(source: Digest, path: String) -> String {
        "\(magic)\(source.hex) \(FarmVersion.current) \(path)\n"
    }

    // MARK: Writing

    static func encode(_ manifest: Manifest, source: Digest) -> Data {
        var writer = Writer()
        writer.bytes.append(contentsOf: Array(identity(source: source, path: manifest.path).utf8))
        writer.count(manifest.upstreams.count)
        for upstream in manifest.upstreams {
            writer.string(upstream.name)
            writer.string(upstream.kind.rawValue)
            writer.string(upstream.family.rawValue)
            writer.string(upstream.mirror)
            writer.strings(upstream.suites)
            writer.strings(upstream.components)
            writer.strings(upstream.architectures)
            writer.optional(upstream.keyring)
            writer.optional(upstream.mirrorlist)
            writer.optional(upstream.distribution)
        }
        writer.count(manifest.modules.count)
        for module in manifest.modules {
            writer.string(module.name)
            writer.location(module.location)
        }
        writer.count(manifest.kernels.count)
        for kernel in manifest.kernels {
            writer.string(kernel.release)
            writer.string(kernel.upstream)
            writer.string(kernel.family.rawValue)
            writer.optional(kernel.suite)
            writer.optional(kernel.distribution)
            writer.optional(kernel.version)
            writer.optional(kernel.toolchain)
            writer.optional(kernel.compiler)
            writer.count(kernel.packages.count)
            for package in kernel.packages { writer.package(package) }
            writer.count(kernel.image == nil ? 0 : 1)
            if let image = kernel.image { writer.package(image) }
            writer.count(kernel.imageModules == nil ? 0 : 1)
            if let modules = kernel.imageModules { writer.package(modules) }
            writer.optional(kernel.lastSeen)
            writer.location(kernel.location)
        }
        writer.count(manifest.packages.count)
        for pinned in manifest.packages {
            writer.string(pinned.name)
            writer.string(pinned.upstream)
            writer.optional(pinned.suite)
            writer.optional(pinned.version)
            writer.package(pinned.package)
        }
        writer.optional(manifest.signing?.moduleKey)
        writer.optional(manifest.signing?.repoKey)
        writer.count(manifest.signing == nil ? 0 : 1)
        writer.optional(manifest.publish?.dir)
        writer.optional(manifest.publish?.url)
        writer.optional(manifest.sandbox)
        writer.count(manifest.profiles ? 1 : 0)
        writer.optional(manifest.remoteCache)
        return Data(writer.bytes)
    }

    struct Writer {
        var bytes: [UInt8] = []

        mutating func count(_ value: Int) {
            var value = UInt64(value)
            while value >= 0x80 {
                bytes.append(UInt8(value & 0x7f) | 0x80)
                value >>= 7
            }
            bytes.append(UInt8(value))
        }

        mutating func string(_ value: String) {
            count(value.utf8.count)
            bytes.append(contentsOf: value.utf8)
        }

        mutating func strings(_ values: [String]) {
            count(values.count)
            for value in values { string(value) }
        }

        mutating func optional(_ value: String?) {
            if let value {
                bytes.append(1)
                string(value)
            } else {
                bytes.append(0)
            }
        }

        mutating func location(_ location: SourceLocation) {
            count(location.line)
            count(location.column)
        }

        mutating func package(_ package: PackageReference) {
            string(package.url)
            string(package.sha256.hex)
            count(Int(package.size))
        }
    }

    // MARK: Reading

    /// The manifest, or nil when the snapshot is for other bytes, another path or another farm.
    static func decode(_ data: Data, path: String, source: Digest) -> Manifest? {
        let expected = Array(identity(source: source, path: path).utf8)
        return data.withUnsafeBytes { raw -> Manifest? in
            let bytes = raw.bindMemory(to: UInt8.self)
            guard bytes.count >= expected.count, bytes.prefix(expected.count).elementsEqual(expected) else { return nil }
            var reader = Reader(bytes: bytes, offset: expected.count, file: path)
            return reader.manifest(path: path)
        }
    }

    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var offset: Int
        let file: String
        var failed = false

        mutating func count() -> Int {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while offset < bytes.count {
                let byte = bytes[offset]
                offset += 1
                value |= UInt64(byte & 0x7f) << shift
                if byte < 0x80 { return Int(value) }
                shift += 7
                if shift > 63 { break }
            }
            failed = true
            return 0
        }

        mutating func string() -> String {
            let length = count()
            guard !failed, length <= bytes.count - offset else {
                failed = true
                return ""
            }
            let value = String(decoding: UnsafeBufferPointer(rebasing: bytes[offset..<offset + length]), as: UTF8.self)
            offset += length
            return value
        }

        mutating func strings() -> [String] { (0..<min(count(), bytes.count)).map { _ in string() } }

        mutating func optional() -> String? {
            guard offset < bytes.count else {
                failed = true
                return nil
            }
            offset += 1
            return bytes[offset - 1] == 1 ? string() : nil
        }

        mutating func location() -> SourceLocation {
            SourceLocation(file: file, line: count(), column: count())
        }

        mutating func package() -> PackageReference? {
            let url = string()
            guard let digest = Digest(hex: string()) else {
                failed = true
                return nil
            }
            return PackageReference(url: url, sha256: digest, size: Int64(count()))
        }

        mutating func manifest(path: String) -> Manifest? {
            var upstreams: [Upstream] = []
            for _ in 0..<min(count(), bytes.count) {
                let name = string()
                guard let kind = Upstream.Kind(rawValue: string()), let family = Family(rawValue: string()) else { return nil }
                upstreams.append(Upstream(name: name, kind: kind, family: family, mirror: string(), suites: strings(),
                                          components: strings(), architectures: strings(), keyring: optional(),
                                          mirrorlist: optional(), distribution: optional()))
            }
            var modules: [ModuleReference] = []
            for _ in 0..<min(count(), bytes.count) {
                modules.append(ModuleReference(name: string(), location: location()))
            }
            let kernelCount = min(count(), bytes.count)
            var kernels: [Kernel] = []
            kernels.reserveCapacity(kernelCount)
            for _ in 0..<kernelCount {
                let release = string(), upstream = string()
                guard let family = Family(rawValue: string()) else { return nil }
                let suite = optional(), distribution = optional(), version = optional(), toolchain = optional(), compiler = optional()
                var packages: [PackageReference] = []
                for _ in 0..<min(count(), bytes.count) {
                    guard let package = package() else { return nil }
                    packages.append(package)
                }
                let image = count() == 1 ? package() : nil
                let imageModules = count() == 1 ? package() : nil
                kernels.append(Kernel(release: release, upstream: upstream, family: family, suite: suite, distribution: distribution, version: version,
                                      toolchain: toolchain, compiler: compiler, packages: packages, image: image,
                                      imageModules: imageModules, lastSeen: optional(), location: location()))
                if failed { return nil }
            }
            var packages: [PinnedPackage] = []
            for _ in 0..<min(count(), bytes.count) {
                let name = string(), upstream = string(), suite = optional(), version = optional()
                guard let package = package() else { return nil }
                packages.append(PinnedPackage(name: name, upstream: upstream, suite: suite, version: version, package: package))
            }
            let moduleKey = optional(), repoKey = optional()
            let signing = count() == 1 ? Signing(moduleKey: moduleKey, repoKey: repoKey) : nil
            let directory = optional(), url = optional()
            let publish = directory.map { Publish(dir: $0, url: url) }
            let sandbox = optional()
            let profiles = count() == 1
            let remoteCache = optional()
            guard !failed, offset == bytes.count else { return nil }
            var manifest = Manifest(path: path, upstreams: upstreams, modules: modules, kernels: kernels, packages: packages,
                                    signing: signing, publish: publish, sandbox: sandbox)
            manifest.profiles = profiles
            manifest.remoteCache = remoteCache
            return manifest
        }
    }
}
