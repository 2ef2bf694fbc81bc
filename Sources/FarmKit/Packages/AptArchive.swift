import FarmEngine
import Foundation

extension AptArchive: PackageIndexSource {
    public func index(of upstream: Upstream, suite: String, component: String, architecture: String, workDirectory: String,
                      downloader: Downloader, relevant: @escaping (String) -> Bool) throws -> SuiteIndex {
        let (release, packages) = try self.packages(suite: suite, component: component, architecture: architecture,
                                                    workDirectory: workDirectory, downloader: downloader, relevant: relevant,
                                                    selection: "family " + upstream.family.rawValue)
        return SuiteIndex(upstream: upstream, suite: suite, architecture: architecture,
                          codename: release.codename, version: release.version, packages: packages)
    }
}

/// One suite of an apt archive, read the way apt does: `InRelease` (or `Release` and
/// `Release.gpg`) verified against the archive keyring, then the `Packages` index, compressed as
/// the verified Release lists it, checked against the sha256 the Release gives.
public struct AptArchive: Sendable {
    public let baseURL: String
    public let keyrings: [String]
    /// The last crawls' indices, by the signed Release's digest; nil reads everything.
    public var memory: CrawlMemory?

    public init(baseURL: String, keyrings: [String], memory: CrawlMemory? = nil) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.keyrings = keyrings
        self.memory = memory
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
                         relevant: @escaping (String) -> Bool = { _ in true }, selection: String = "all") throws -> (Release, [IndexPackage]) {
        let (releaseURL, verified) = try signedRelease(suite: suite, workDirectory: workDirectory, downloader: downloader, log: log)
        let release = try parseRelease(verified, suite: suite, url: releaseURL)
        // The same verified Release names the same Packages files: what they listed last time holds.
        let memoryKey = "\(baseURL) \(suite) \(component) \(architecture) \(selection)"
        let releaseDigest = SHA256.hash(verified)
        if let memory, let known = memory.packages(key: memoryKey, release: releaseDigest) {
            log?.append("\(releaseURL): unchanged since the last crawl; its \(component)/\(architecture) packages are taken from \(memory.directory)\n")
            return (release, known)
        }

        // apt takes the first compression it knows that the Release lists; so does farm.
        let base = "\(component)/binary-\(architecture)/Packages"
        guard let path = [base + ".xz", base + ".gz", base].first(where: { release.files[$0] != nil }), let pin = release.files[path] else {
            throw FarmError(message: "\(releaseURL): the Release lists no \(base).xz, \(base).gz or \(base); check the suite, component and architecture in the manifest")
        }
        let indexURL = "\(baseURL)/dists/\(suite)/\(path)"
        let downloaded = workDirectory + "/\(suite)-\(component)-\(architecture)-" + (path as NSString).lastPathComponent
        unlink(downloaded)
        try downloader.fetchPinned(urls: [indexURL], to: downloaded, sha256: pin.sha256, size: pin.size, log: log)
        guard let data = FileManager.default.contents(atPath: downloaded) else {
            throw FarmError(message: "\(downloaded): cannot read the downloaded index")
        }
        let index = path == base ? data : try Archive.decompress(data)
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
        memory?.remember(key: memoryKey, release: releaseDigest, packages: packages)
        return (release, packages)
    }

    /// The suite's Release text, verified: `InRelease`, or, where the archive has none (older
    /// archives, some third-party ones), `Release` with its detached `Release.gpg`, as apt falls back.
    /// Returns the URL the text came from, for messages.
    func signedRelease(suite: String, workDirectory: String, downloader: Downloader, log: TaskLog?) throws -> (String, Data) {
        let inReleaseURL = "\(baseURL)/dists/\(suite)/InRelease"
        let signed = workDirectory + "/\(suite)-InRelease"
        unlink(signed)
        do {
            try downloader.download(inReleaseURL, to: signed, limit: AptArchive.inReleaseLimit, log: log)
            return (inReleaseURL, try verify(signed, url: inReleaseURL, workDirectory: workDirectory))
        } catch let error as HTTPError where !HTTPClient.exists(inReleaseURL) {
            let releaseURL = "\(baseURL)/dists/\(suite)/Release"
            let release = workDirectory + "/\(suite)-Release"
            unlink(release)
            unlink(release + ".gpg")
            do {
                try downloader.download(releaseURL, to: release, limit: AptArchive.inReleaseLimit, log: log)
                try downloader.download(releaseURL + ".gpg", to: release + ".gpg", limit: AptArchive.inReleaseLimit, log: log)
            } catch let releaseError {
                throw FarmError(message: "\(baseURL)/dists/\(suite): neither InRelease nor Release with Release.gpg can be read (\(error); \(releaseError)); check the mirror URL and the suite")
            }
            return (releaseURL, try verify(release, detachedSignature: release + ".gpg", url: releaseURL, workDirectory: workDirectory))
        }
    }

    /// Checks the suite's signature with gpgv and returns only the signed text; anything that
    /// fails verification is an error and is never used. `detachedSignature` is Release.gpg; without
    /// it `file` is a clearsigned InRelease.
    func verify(_ file: String, detachedSignature: String? = nil, url: String, workDirectory: String) throws -> Data {
        guard let gpgv = Executable.find("gpgv") else {
            throw FarmError(message: "gpgv is not installed; it verifies the archive's InRelease (apt-get install gpgv)")
        }
        var arguments = ["--status-fd", "1"]
        for keyring in keyrings {
            arguments += ["--keyring", try DetachedSignature.binaryKeyring(keyring, workDirectory: workDirectory,
                                                                           fix: "check 'Signed-By' in the apt sources or 'keyring' in the manifest")]
        }
        let output = file + ".verified"
        unlink(output)
        if let detachedSignature {
            arguments += [detachedSignature, file]
        } else {
            arguments += ["--output", output, file]
        }
        // gpgv's exit status is not the verdict: it fails when any signature's key is missing,
        // and an archive signed by an old and a new key (Ubuntu's) is good for apt.
        let result = try Executable.run(gpgv, arguments)
        let signatures = SignatureStatus(gpgvStatus: result.stdout)
        guard signatures.accepted, let data = FileManager.default.contents(atPath: detachedSignature == nil ? output : file) else {
            throw FarmError(message: "\(url): the signature does not verify against \(keyrings.joined(separator: ", ")); the index is not used. "
                                + signatures.refusal + " gpgv said: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return data
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

/// What gpgv's status lines say of a file's signatures, judged as apt's gpgv method judges them:
/// the file is good when at least one signature is good and none is bad. A signature by a key
/// the keyring lacks, an expired or revoked key's, or one over a digest apt no longer trusts
/// (MD5, SHA-1, RIPEMD-160) counts for nothing either way.
struct SignatureStatus {
    /// Long key ids (GOODSIG) whose signature verified with a trusted digest.
    var good: [String] = []
    /// BADSIG: the text does not match a signature by a key of the keyring.
    var bad: [String] = []
    /// Signatures that count for nothing, with why.
    var ignored: [String] = []

    init(gpgvStatus: String) {
        var goodIDs: [String] = []
        var untrusted: [String] = []
        for line in gpgvStatus.split(separator: "\n") where line.hasPrefix("[GNUPG:] ") {
            let fields = line.dropFirst("[GNUPG:] ".count).split(separator: " ").map(String.init)
            guard let keyword = fields.first else { continue }
            let key = fields.count > 1 ? fields[1] : "?"
            switch keyword {
            case "GOODSIG": goodIDs.append(key)
            case "BADSIG": bad.append(key)
            case "NO_PUBKEY": ignored.append("\(key) (not in the keyring)")
            case "EXPSIG", "EXPKEYSIG": ignored.append("\(key) (expired)")
            case "REVKEYSIG": ignored.append("\(key) (revoked)")
            case "VALIDSIG":
                // Field 8 is the digest algorithm: 1 MD5, 2 SHA-1, 3 RIPEMD-160.
                if fields.count > 8, let digest = Int(fields[8]), digest <= 3 {
                    untrusted.append(key)
                    ignored.append("\(key) (weak digest algorithm \(digest))")
                }
            default: continue
            }
        }
        good = goodIDs.filter { id in !untrusted.contains { $0.hasSuffix(id) } }
    }

    var accepted: Bool { !good.isEmpty && bad.isEmpty }

    var refusal: String {
        var parts: [String] = []
        if !bad.isEmpty { parts.append("Bad signature by \(bad.joined(separator: ", ")).") }
        if good.isEmpty { parts.append("No good signature by a key of the keyring.") }
        if !ignored.isEmpty { parts.append("Not counted: \(ignored.joined(separator: ", ")).") }
        return parts.joined(separator: " ")
    }
}
