import FarmEngine
import Foundation

/// Linux's module signature, appended the way `scripts/sign-file` appends it: a detached CMS
/// SignedData (DER) over the module's bytes with no certificates and no signed attributes, the
/// signer named by issuer and serial number, then `struct module_signature` (only `id_type` =
/// PKEY_ID_PKCS7 and the big-endian signature length set) and `~Module signature appended~\n`.
/// For RSA keys the result is byte-identical to sign-file's for the same key, hash and module.
public enum ModuleSigner {
    public static let magic = Data("~Module signature appended~\n".utf8)
    /// `PKEY_ID_PKCS7` in `struct module_signature`.
    static let pkcs7IdType: UInt8 = 2
    /// The `CONFIG_MODULE_SIG_HASH` values of the kernel's Kconfig that farm signs with.
    public static let knownHashes = ["sha1", "sha224", "sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"]

    /// The module with its signature appended. `key` is a PEM private key file, `certificate` a PEM
    /// or DER X.509 certificate, `hash` an OpenSSL digest name as `CONFIG_MODULE_SIG_HASH` gives it.
    public static func sign(module: Data, key: String, certificate: String, hash: String) throws -> Data {
        if module.count >= magic.count, module.suffix(magic.count) == magic {
            throw FarmError("the module is already signed (it ends with the module signature magic); sign the unsigned module")
        }
        let signature: Data
        do {
            signature = try OpenSSL.cmsSign(content: module, privateKey: key, certificate: certificate, digest: hash)
        } catch let error as OpenSSLError where error.kind == .unknownDigest {
            throw FarmError("unknown hash '\(hash)' (from CONFIG_MODULE_SIG_HASH); expected e.g. sha256, sha384 or sha512")
        } catch let error as OpenSSLError {
            throw FarmError(error.message)
        }
        guard signature.count <= Int(UInt32.max) else { throw FarmError("the signature is too large") }

        var result = module
        result.append(signature)
        // struct module_signature: algo, hash, id_type, signer_len, key_id_len, __pad[3], sig_len (big-endian).
        result.append(contentsOf: [0, 0, pkcs7IdType, 0, 0, 0, 0, 0])
        let length = UInt32(signature.count).bigEndian
        withUnsafeBytes(of: length) { result.append(contentsOf: $0) }
        result.append(magic)
        return result
    }
}
