import FarmEngine
import Foundation

extension AptArchive: PackageIndexSource {
    public func index(of upstream: Upstream, suite: String, component: String, architecture: String, workDirectory: String,
                      downloader: Downloader, relevant: @escaping (String) -> Bool) throws -> SuiteIndex {
        let (release, packages) = try self.packages(suite: suite, component: component, architecture: architecture,
                                                    workDirectory: workDirectory, downloader: downloader, relevant: relevant)
        return SuiteIndex(upstream: upstream, suite: suite, architecture: architecture,
                          codename: release.codename, version: release.version, packages: packages)
    }
}

/// One suite of an apt archive, read the way apt does: `InRelease` verified against the archive
/// keyring, then the `Packages.xz` whose sha256 the verified Release lists.
public struct AptArchive: Sendable {
    public let baseURL: String
    public let keyrings: [String]

    public init(baseURL: String, keyrings: [String]) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.keyrings = keyrings
    }

    /// InRelease has no pin; Debian's are a few hundred KiB.
    public static let inReleaseLimit = SizeLimit(bytes: 64 << 20, what: "the 64 MiB farm allows for an InRelease file")

    public struct Release: Sendable {
        public var suite: String
        public var codename: String?
        public var version: String?
        public var files: [String: (sha256: Digest, size: Int64)]
    }

    /// Reads one suite's index for one component and architecture. Blocking.
    public func packages(suite: String, component: String, architecture: String, workDirectory: String,
                         downloader: Downloader = Downloader(), log: TaskLog? = nil,
                         relevant: @escaping (String) -> Bool = { _ in true }) throws -> (Release, [IndexPackage]) {
        let inReleaseURL = "\(baseURL)/dists/\(suite)/InRelease"
        let signed = workDirectory + "/\(suite)-InRelease"
        unlink(signed)
        try downloader.download(inReleaseURL, to: signed, limit: AptArchive.inReleaseLimit, log: log)
        let verified = try verify(signed, url: inReleaseURL, workDirectory: workDirectory)
        let release = try parseRelease(verified, suite: suite, url: inReleaseURL)

        let path = "\(component)/binary-\(architecture)/Packages.xz"
        guard let pin = release.files[path] else {
            throw FarmError(message: "\(inReleaseURL): the Release lists no \(path); check the suite, component and architecture in the manifest")
        }
        let indexURL = "\(baseURL)/dists/\(suite)/\(path)"
        let compressed = workDirectory + "/\(suite)-\(component)-\(architecture)-Packages.xz"
        unlink(compressed)
        try downloader.fetchPinned(urls: [indexURL], to: compressed, sha256: pin.sha256, size: pin.size, log: log)
        guard let data = FileManager.default.contents(atPath: compressed) else {
            throw FarmError(message: "\(compressed): cannot read the downloaded index")
        }
        let index = try Archive.decompress(data)
        let wanted: Set<String> = ["Package", "Version", "Architecture", "Source", "Depends", "Filename", "Size", "SHA256"]
        let stanzas = ControlFile.parse(index, fields: wanted) { stanza in
            // A crawl needs the kernel's packages and the recipes' source packages only.
            guard let name = stanza["Package"] else { return false }
            return relevant(name)
        }
        let packages = stanzas.compactMap { stanza -> IndexPackage? in
            guard let name = stanza["Package"], let version = stanza["Version"], let filename = stanza["Filename"],
                  let size = stanza["Size"].flatMap({ Int64($0) }), let sha = stanza["SHA256"].flatMap(Digest.init(hex:)) else { return nil }
            let source = stanza["Source"].map { String($0.split(separator: " ").first ?? "") } ?? name
            return IndexPackage(name: name, version: version, architecture: stanza["Architecture"] ?? "", source: source,
                              depends: stanza["Depends"] ?? "", filename: filename, size: size, sha256: sha, suite: suite)
        }
        return (release, packages)
    }

    /// Checks the clearsigned InRelease with gpgv and returns only the signed text; anything that
    /// fails verification is an error and is never used.
    func verify(_ signed: String, url: String, workDirectory: String) throws -> Data {
        guard let gpgv = Executable.find("gpgv") else {
            throw FarmError(message: "gpgv is not installed; it verifies the archive's InRelease (apt-get install gpgv)")
        }
        var arguments = ["--status-fd", "1"]
        for keyring in keyrings {
            arguments += ["--keyring", try binaryKeyring(keyring, workDirectory: workDirectory)]
        }
        let output = signed + ".verified"
        unlink(output)
        arguments += ["--output", output, signed]
        let result = try Executable.run(gpgv, arguments)
        let good = result.stdout.split(separator: "\n").contains { $0.hasPrefix("[GNUPG:] VALIDSIG") }
        guard result.status == 0, good, let data = FileManager.default.contents(atPath: output) else {
            throw FarmError(message: "\(url): the signature does not verify against \(keyrings.joined(separator: ", ")); the index is not used. gpgv said: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return data
    }

    /// gpgv reads binary keyrings only; an ASCII-armored one is converted first.
    private func binaryKeyring(_ path: String, workDirectory: String) throws -> String {
        guard let head = FileHandle(forReadingAtPath: path)?.readData(ofLength: 32) else {
            throw FarmError(message: "\(path): cannot read the keyring; check 'Signed-By' in the apt sources or 'keyring' in the manifest")
        }
        guard String(decoding: head, as: UTF8.self).hasPrefix("-----BEGIN PGP") else { return path }
        guard let gpg = Executable.find("gpg") else {
            throw FarmError(message: "\(path) is ASCII-armored and gpg is not installed to convert it (apt-get install gnupg)")
        }
        let converted = workDirectory + "/keyring-\(SHA256.hash(path).short).gpg"
        unlink(converted)
        let result = try Executable.run(gpg, ["--batch", "--yes", "--dearmor", "--output", converted, path])
        guard result.status == 0 else { throw FarmError(message: "\(path): gpg --dearmor failed: \(result.stderr)") }
        return converted
    }

    func parseRelease(_ data: Data, suite: String, url: String) throws -> Release {
        guard let stanza = ControlFile.parse(data).first else { throw FarmError(message: "\(url): the Release is empty") }
        if let validUntil = stanza["Valid-Until"], let date = AptArchive.parseDate(validUntil), date < Date() {
            throw FarmError(message: "\(url): the Release expired on \(validUntil) (Valid-Until); the mirror is stale or the clock is wrong")
        }
        var files: [String: (Digest, Int64)] = [:]
        for line in (stanza["SHA256"] ?? "").split(separator: "\n") {
            let parts = line.split(whereSeparator: \.isWhitespace)
            guard parts.count == 3, let digest = Digest(hex: String(parts[0])), let size = Int64(parts[1]) else { continue }
            files[String(parts[2])] = (digest, size)
        }
        return Release(suite: suite, codename: stanza["Codename"], version: stanza["Version"], files: files)
    }

    static func parseDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEE, d MMM yyyy HH:mm:ss zzz", "EEE, dd MMM yyyy HH:mm:ss Z"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: text) { return date }
        }
        return nil
    }
}
