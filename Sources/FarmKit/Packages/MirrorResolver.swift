import FarmEngine
import Foundation

/// Turns a package's archive path into URLs: the upstream's explicit mirror, or for `mirror: apt`
/// the host's apt source for the kernel's suite first, then the host's other archives. A
/// kernel's packages need not share its suite's archive: a security kernel's kbuild package may
/// be the main archive's.
struct MirrorResolver {
    let manifest: Manifest
    let sources: Result<AptSources, Error>

    init(manifest: Manifest, aptRoot: String) {
        self.manifest = manifest
        sources = Result { try AptSources.load(root: aptRoot) }
    }

    func urls(for package: PackageReference, upstream name: String, suite: String?) -> (urls: [String], reason: String?) {
        if package.url.hasPrefix("http://") || package.url.hasPrefix("https://") || package.url.hasPrefix("file://") {
            return ([package.url], nil)
        }
        guard let upstream = manifest.upstream(named: name) else { return ([], "no upstream named '\(name)'") }
        var bases: [String] = []
        if upstream.mirror == "apt" {
            do {
                let sources = try sources.get()
                bases.append(try sources.entry(for: suite ?? upstream.suites.first ?? "").uri)
                for other in upstream.suites {
                    if let uri = try? sources.entry(for: other).uri, !bases.contains(uri) { bases.append(uri) }
                }
            } catch {
                return ([], "\(error)")
            }
        } else if upstream.mirror.isEmpty, let mirrorlist = upstream.mirrorlist {
            // Read when the package is fetched (FetchAction), never while planning.
            return ([], "upstream '\(name)' names its mirrors in \(mirrorlist)")
        } else {
            bases.append(upstream.mirror)
        }
        return (bases.map { base in (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/" + package.url }, nil)
    }
}

extension MirrorResolver {
    /// The archive a whole suite is read from, as a one-line apt source (`deb [signed-by=K] URI
    /// suite components`) for mmdebstrap; or why there is none.
    func sourceLine(upstream name: String, suite: String, components: [String]) -> (line: String?, reason: String?) {
        guard let upstream = manifest.upstream(named: name) else { return (nil, "no upstream named '\(name)' in the manifest") }
        var uri = upstream.mirror
        var keyrings: [String] = []
        if let keyring = upstream.keyring {
            keyrings = [keyring.hasPrefix("/") ? keyring : manifest.directory + "/" + keyring]
        }
        if upstream.mirror == "apt" {
            do {
                let entry = try sources.get().entry(for: suite)
                uri = entry.uri
                if keyrings.isEmpty, let signedBy = entry.signedBy, !signedBy.contains("BEGIN PGP") {
                    keyrings = signedBy.split(separator: " ").map(String.init)
                }
            } catch {
                return (nil, "\(error)")
            }
        } else if keyrings.isEmpty, let keyring = upstream.family.defaultKeyring {
            keyrings = [keyring]
        }
        let options = keyrings.isEmpty ? "" : "[signed-by=\(keyrings.joined(separator: ","))] "
        return ("deb \(options)\(uri) \(suite) \(components.joined(separator: " "))", nil)
    }
}
