import FarmEngine
import Foundation

/// A detached OpenPGP signature checked by gpgv against one keyring: a yum repository's
/// `repomd.xml.asc` and the signatures an RPM carries in its signature header.
enum DetachedSignature {
    /// Succeeds only when gpgv reports a good signature (`VALIDSIG`) by a key of `keyring` over
    /// `data`; `what` names the signed thing in the error.
    static func verify(signature: String, data: String, keyring: String, workDirectory: String, what: String) throws {
        guard let gpgv = Executable.find("gpgv") else {
            throw FarmError.toolMissing(tool: "gpgv", package: "gpgv", purpose: "checking \(what)'s OpenPGP signature")
        }
        let binary = try binaryKeyring(keyring, workDirectory: workDirectory, fix: "check 'keyring:' of the upstream in the manifest")
        let result = try Executable.run(gpgv, ["--status-fd", "1", "--keyring", binary, signature, data])
        let good = result.stdout.split(separator: "\n").contains { $0.hasPrefix("[GNUPG:] VALIDSIG") }
        guard result.status == 0, good else {
            let said = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            throw FarmError("\(what): the OpenPGP signature does not verify against \(keyring); it is not used. gpgv said: \(said)")
        }
    }

    /// gpgv reads binary keyrings only; an ASCII-armored one is converted into the work directory
    /// (apt's and yum's checks both come here). `fix` says where the keyring was named.
    static func binaryKeyring(_ path: String, workDirectory: String, fix: String) throws -> String {
        guard let head = FileHandle(forReadingAtPath: path)?.readData(ofLength: 32) else {
            throw FarmError.badInput("\(path): cannot read the keyring; \(fix)")
        }
        guard String(decoding: head, as: UTF8.self).hasPrefix("-----BEGIN PGP") else { return path }
        guard let gpg = Executable.find("gpg") else {
            throw FarmError.toolMissing(tool: "gpg", package: "gnupg", purpose: "converting the ASCII-armored keyring \(path)")
        }
        let converted = workDirectory + "/keyring-\(SHA256.hash(path).short).gpg"
        if FileManager.default.fileExists(atPath: converted) { return converted }
        let temporary = converted + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let result = try Executable.run(gpg, ["--batch", "--yes", "--dearmor", "--output", temporary, path])
        guard result.status == 0 else {
            unlink(temporary)
            throw FarmError.badInput("\(path): gpg --dearmor failed: \(result.stderr)")
        }
        rename(temporary, converted)
        return converted
    }
}
