import ArgumentParser
import FarmKit
import Foundation

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a signed kernel module the way the kernel would: its signature trailer, then the signature over its body.")

    @Option(name: .long, help: "The module-signing certificate (PEM or DER) the module must be signed with.")
    var cert: String

    @Argument(help: "The signed module (.ko).")
    var module: String

    func run() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: module, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw exitReporting(ValidationError("\(module): expected a signed module file (.ko)"))
        }
        do {
            let report = try ModuleVerifier.verify(modulePath: module, certificate: cert)
            print("\(module): signature OK (\(report.hash), \(report.signatureLength) bytes over \(report.bodyLength) bytes of module)")
        } catch {
            throw exitReporting(error)
        }
    }
}
