import COpenSSL
import Foundation

public struct SigningError: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}

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
            throw SigningError("the module is already signed (it ends with the module signature magic); sign the unsigned module")
        }
        let privateKey = try loadKey(key)
        defer { EVP_PKEY_free(privateKey) }
        let x509 = try loadCertificate(certificate)
        defer { X509_free(x509) }
        guard let digest = EVP_get_digestbyname(hash) else {
            throw SigningError("unknown hash '\(hash)' (from CONFIG_MODULE_SIG_HASH); expected e.g. sha256, sha384 or sha512")
        }

        let content = try memoryBIO(module)
        defer { BIO_free(content) }
        let partial = UInt32(CMS_NOCERTS | CMS_PARTIAL | CMS_BINARY | CMS_DETACHED | CMS_STREAM)
        guard let cms = CMS_sign(nil, nil, nil, nil, partial) else { throw openSSLError("CMS_sign") }
        defer { CMS_ContentInfo_free(cms) }
        guard CMS_add1_signer(cms, x509, privateKey, digest, UInt32(CMS_NOCERTS | CMS_BINARY | CMS_NOSMIMECAP | CMS_NOATTR)) != nil else {
            throw openSSLError("adding the signer (does the key belong to the certificate?)")
        }
        guard CMS_final(cms, content, nil, UInt32(CMS_NOCERTS | CMS_BINARY)) == 1 else { throw openSSLError("CMS_final") }

        guard let output = BIO_new(BIO_s_mem()) else { throw openSSLError("BIO_new") }
        defer { BIO_free(output) }
        guard i2d_CMS_bio_stream(output, cms, nil, 0) == 1 else { throw openSSLError("writing the signature") }
        let signature = memoryContents(output)
        guard signature.count <= Int(UInt32.max) else { throw SigningError("the signature is too large") }

        var result = module
        result.append(signature)
        // struct module_signature: algo, hash, id_type, signer_len, key_id_len, __pad[3], sig_len (big-endian).
        result.append(contentsOf: [0, 0, pkcs7IdType, 0, 0, 0, 0, 0])
        let length = UInt32(signature.count).bigEndian
        withUnsafeBytes(of: length) { result.append(contentsOf: $0) }
        result.append(magic)
        return result
    }

    static func loadKey(_ path: String) throws -> OpaquePointer {
        guard let data = FileManager.default.contents(atPath: path) else { throw SigningError("\(path): cannot read the private key") }
        let bio = try memoryBIO(data)
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw openSSLError("\(path): not a PEM private key (an unencrypted one is needed)")
        }
        return key
    }

    static func loadCertificate(_ path: String) throws -> OpaquePointer {
        guard let data = FileManager.default.contents(atPath: path) else { throw SigningError("\(path): cannot read the certificate") }
        let bio = try memoryBIO(data)
        defer { BIO_free(bio) }
        if let certificate = PEM_read_bio_X509(bio, nil, nil, nil) { return certificate }
        ERR_clear_error()
        let der = try memoryBIO(data)
        defer { BIO_free(der) }
        guard let certificate = d2i_X509_bio(der, nil) else { throw openSSLError("\(path): not an X.509 certificate (PEM or DER)") }
        return certificate
    }

    static func memoryBIO(_ data: Data) throws -> OpaquePointer {
        let bio = BIO_new(BIO_s_mem())
        guard let bio else { throw openSSLError("BIO_new") }
        let written = data.withUnsafeBytes { BIO_write(bio, $0.baseAddress, Int32($0.count)) }
        guard written == data.count || data.isEmpty else { BIO_free(bio); throw openSSLError("BIO_write") }
        return bio
    }

    static func memoryContents(_ bio: OpaquePointer) -> Data {
        var pointer: UnsafeMutablePointer<CChar>?
        let count = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &pointer)
        guard count > 0, let pointer else { return Data() }
        return Data(bytes: pointer, count: count)
    }

    static func openSSLError(_ what: String) -> SigningError {
        var reasons: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            reasons.append(String(cString: buffer))
        }
        return SigningError(what + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")))
    }
}
