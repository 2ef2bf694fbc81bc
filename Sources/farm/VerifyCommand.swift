import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a signed module as the kernel would, or a whole repository as a careful client would.",
        discussion: """
        A module file: its signature trailer, then the CMS signature over its body with --cert's key. \
        A repository (directory or URL): repomd.xml's OpenPGP signature against the pinned key \
        (--fingerprint, else the manifest's repository key), the manifest's checksums, and every \
        module's checksum and OpenPGP signature (and its module signature, given --cert or the manifest's key).
        """)

    @Option(name: .long, help: "The module-signing certificate (PEM or DER). Required for a module file; for a repository, default: the manifest's.")
    var cert: String?

    @Option(name: .long, help: "The repository key's fingerprint you trust (40 hex digits). Default: the manifest's repository key.")
    var fingerprint: String?

    @Option(name: .long, help: "The manifest whose 'signing:' keys are the defaults.")
    var manifest = "manifest.yml"

    @Argument(help: "A signed module (.ko), or a repository directory or URL.")
    var target: String

    func run() throws {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory)
        if exists, !isDirectory.boolValue {
            guard let cert else { throw ValidationError("checking the module \(target) needs --cert CERT") }
            let report = try ModuleVerifier.verify(modulePath: target, certificate: cert)
            print("\(target): signature OK (\(report.hash), \(report.signatureLength) bytes over \(report.bodyLength) bytes of module)")
            return
        }
        guard exists || target.contains("://") else {
            throw ValidationError("\(target): no such module file or repository directory")
        }
        try verifyRepository()
    }

    func verifyRepository() throws {
        let keys = Signing.paths(manifestAt: manifest)
        guard let pinned = try RepositoryKey.trusted(given: fingerprint, own: keys?.repository) else {
            throw ValidationError("which repository key do you trust? pass --fingerprint (40 hex digits; REPO_SIGNING_KEY.json in the repository"
                                  + " names it, but only you can vouch for it)")
        }
        let certificate = cert ?? keys.map(\.module.certificate).flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        let report = try RepositoryVerifier(source: RepositorySource(target), fingerprint: pinned, certificate: certificate).verify()
        for problem in report.problems { FileHandle.standardError.write(Data("farm: \(problem)\n".utf8)) }
        let distinct = Set(report.modules.map(\.location)).count
        let tables = report.tables.isEmpty ? "" : " and \(report.tables.count) symbol table(s)"
        guard report.problems.isEmpty else {
            FileHandle.standardError.write(Data("farm: \(target): \(report.problems.count) of \(distinct) module(s)\(tables) failed the checks\n".utf8))
            throw ExitCode(ExitStatus.failure)
        }
        print("\(target): revision \(report.revision), \(distinct) module(s)\(tables): repomd.xml signed by \(pinned), checksums and signatures OK"
              + (certificate == nil ? "" : ", module signatures OK"))
    }
}
