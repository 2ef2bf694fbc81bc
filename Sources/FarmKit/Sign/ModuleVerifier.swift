import FarmEngine
import Foundation

/// Checks an appended module signature the way the kernel does (`mod_verify_sig`): the magic,
/// then `struct module_signature` (a PKCS#7 id type, the other fields zero, a length that fits),
/// then the CMS signature over the module's body with the given certificate's key.
public enum ModuleVerifier {
    public struct Report: Sendable {
        public var bodyLength: Int
        public var signatureLength: Int
        /// The digest the signer used, e.g. `sha256`.
        public var hash: String
    }

    public static func verify(modulePath: String, certificate: String) throws -> Report {
        guard let data = FileManager.default.contents(atPath: modulePath) else {
            throw FarmError("\(modulePath): cannot read the module")
        }
        return try verify(data, name: modulePath, certificate: certificate)
    }

    public static func verify(_ module: Data, name: String, certificate: String) throws -> Report {
        let magic = ModuleSigner.magic
        guard module.count > magic.count + 12, module.suffix(magic.count) == magic else {
            throw FarmError("\(name): the module is not signed (no '~Module signature appended~' at its end)")
        }
        let trailer = [UInt8](module.dropLast(magic.count).suffix(12))
        guard trailer[2] == ModuleSigner.pkcs7IdType else {
            throw FarmError("\(name): the signature's id type is \(trailer[2]), not PKCS#7 (2); the kernel refuses it")
        }
        guard trailer[0] == 0, trailer[1] == 0, trailer[3] == 0, trailer[4] == 0, trailer[5...7].allSatisfy({ $0 == 0 }) else {
            throw FarmError("\(name): the signature trailer has unexpected fields set; the kernel refuses it")
        }
        let length = trailer[8...11].reduce(0) { $0 << 8 | Int($1) }
        let available = module.count - magic.count - 12
        guard length > 0, length <= available else {
            throw FarmError("\(name): the signature length (\(length) bytes) does not fit the module (\(available) bytes before the trailer)")
        }
        let body = module.prefix(available - length)
        let signature = module.dropFirst(available - length).prefix(length)

        let digest: String?
        do {
            digest = try OpenSSL.cmsVerify(signatureDER: Data(signature), content: Data(body), certificate: certificate)
        } catch let error as OpenSSLError {
            switch error.kind {
            case .notCMS:
                throw FarmError("\(name): the appended signature is not a CMS (PKCS#7) message")
            case .doesNotVerify:
                throw FarmError("\(name): the signature does not verify with \(certificate): the module was changed after signing,"
                                        + " or it was signed with another key")
            case .unknownDigest, .failed:
                throw FarmError(error.message)
            }
        }
        let hash = digest ?? "unknown"
        return Report(bodyLength: body.count, signatureLength: length, hash: hash.lowercased())
    }
}
