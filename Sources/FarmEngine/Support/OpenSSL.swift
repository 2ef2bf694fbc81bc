import COpenSSL
import Foundation

/// An OpenSSL failure: what was being done, followed by OpenSSL's own error queue. `kind` tells
/// apart the outcomes a caller words differently for its users.
public struct OpenSSLError: Error, CustomStringConvertible {
    public enum Kind: Sendable { case unknownDigest, notCMS, doesNotVerify, failed }
    public let kind: Kind
    public let message: String
    public var description: String { message }
}

/// OpenSSL behind thrown errors: SHA-256, and detached CMS signatures made and checked the way
/// Linux's `scripts/sign-file` and the kernel's `mod_verify_sig` do. The only file that imports
/// `COpenSSL`.
public enum OpenSSL {
    /// A running SHA-256 over the bytes given so far.
    struct SHA256Context: ~Copyable {
        private let context: OpaquePointer

        // OpenSSL 3 looks the implementation up in its providers on every init unless it is fetched
        // once; a no-op build hashes 50,000 task definitions, so the lookup is worth saving.
        nonisolated(unsafe) private static let algorithm: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)

        init() {
            guard let context = EVP_MD_CTX_new(), EVP_DigestInit_ex(context, SHA256Context.algorithm ?? EVP_sha256(), nil) == 1 else {
                fatalError("OpenSSL could not set up a SHA-256 context (out of memory)")
            }
            self.context = context
        }

        deinit { EVP_MD_CTX_free(context) }

        func update(_ bytes: UnsafeRawBufferPointer) {
            guard let base = bytes.baseAddress, bytes.count > 0 else { return }
            EVP_DigestUpdate(context, base, bytes.count)
        }

        consuming func finalize() -> [UInt8] {
            var out = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            EVP_DigestFinal_ex(context, &out, &length)
            return out
        }
    }

    /// A detached CMS SignedData (DER) over `content`, as sign-file makes it: no certificates, no
    /// signed attributes, no S/MIME capabilities, binary content, the signer named by issuer and
    /// serial number. `privateKey` is a PEM file, `certificate` PEM or DER, `digest` an OpenSSL
    /// digest name (`sha256`); an unknown one throws `.unknownDigest`.
    public static func cmsSign(content: Data, privateKey: String, certificate: String, digest name: String) throws -> Data {
        let key = try loadPrivateKey(privateKey)
        defer { EVP_PKEY_free(key) }
        let x509 = try loadCertificate(certificate)
        defer { X509_free(x509) }
        guard let digest = EVP_get_digestbyname(name) else {
            throw OpenSSLError(kind: .unknownDigest, message: "unknown digest '\(name)'")
        }

        let input = try memoryBIO(content)
        defer { BIO_free(input) }
        let partial = UInt32(CMS_NOCERTS | CMS_PARTIAL | CMS_BINARY | CMS_DETACHED | CMS_STREAM)
        guard let cms = CMS_sign(nil, nil, nil, nil, partial) else { throw failure("CMS_sign") }
        defer { CMS_ContentInfo_free(cms) }
        guard CMS_add1_signer(cms, x509, key, digest, UInt32(CMS_NOCERTS | CMS_BINARY | CMS_NOSMIMECAP | CMS_NOATTR)) != nil else {
            throw failure("adding the signer (does the key belong to the certificate?)")
        }
        guard CMS_final(cms, input, nil, UInt32(CMS_NOCERTS | CMS_BINARY)) == 1 else { throw failure("CMS_final") }

        guard let output = BIO_new(BIO_s_mem()) else { throw failure("BIO_new") }
        defer { BIO_free(output) }
        guard i2d_CMS_bio_stream(output, cms, nil, 0) == 1 else { throw failure("writing the signature") }
        return memoryContents(output)
    }

    /// Checks a detached CMS signature (DER) over `content` with the key of `certificate` (PEM or
    /// DER), which is trusted as it is: no chain is checked, as in the kernel's keyring. Returns
    /// the first signer's digest short name (`SHA256`), nil when it names none. Throws `.notCMS`
    /// when the bytes are not a CMS message and `.doesNotVerify` when the signature is wrong.
    public static func cmsVerify(signatureDER: Data, content: Data, certificate: String) throws -> String? {
        let x509 = try loadCertificate(certificate)
        defer { X509_free(x509) }
        let signatureBIO = try memoryBIO(signatureDER)
        defer { BIO_free(signatureBIO) }
        guard let cms = d2i_CMS_bio(signatureBIO, nil) else {
            throw OpenSSLError(kind: .notCMS, message: "not a CMS (PKCS#7) message")
        }
        defer { CMS_ContentInfo_free(cms) }
        let input = try memoryBIO(content)
        defer { BIO_free(input) }
        guard let certificates = OPENSSL_sk_new_null() else { throw OpenSSLError(kind: .failed, message: "out of memory") }
        defer { OPENSSL_sk_free(certificates) }
        OPENSSL_sk_push(certificates, UnsafeRawPointer(x509))
        let flags = UInt32(CMS_BINARY | CMS_NOVERIFY | CMS_NOINTERN | CMS_DETACHED)
        guard CMS_verify(cms, certificates, nil, input, nil, flags) == 1 else {
            ERR_clear_error()
            throw OpenSSLError(kind: .doesNotVerify, message: "the signature does not verify")
        }
        guard let signers = CMS_get0_SignerInfos(cms), OPENSSL_sk_num(signers) > 0,
              let signer = OPENSSL_sk_value(signers, 0) else { return nil }
        var digest: UnsafeMutablePointer<X509_ALGOR>?
        CMS_SignerInfo_get0_algs(OpaquePointer(signer), nil, nil, &digest, nil)
        guard let algorithm = digest?.pointee.algorithm else { return nil }
        return String(cString: OBJ_nid2sn(OBJ_obj2nid(algorithm)))
    }

    private static func loadPrivateKey(_ path: String) throws -> OpaquePointer {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw OpenSSLError(kind: .failed, message: "\(path): cannot read the private key")
        }
        let bio = try memoryBIO(data)
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw failure("\(path): not a PEM private key (an unencrypted one is needed)")
        }
        return key
    }

    private static func loadCertificate(_ path: String) throws -> OpaquePointer {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw OpenSSLError(kind: .failed, message: "\(path): cannot read the certificate")
        }
        let bio = try memoryBIO(data)
        defer { BIO_free(bio) }
        if let certificate = PEM_read_bio_X509(bio, nil, nil, nil) { return certificate }
        ERR_clear_error()
        let der = try memoryBIO(data)
        defer { BIO_free(der) }
        guard let certificate = d2i_X509_bio(der, nil) else { throw failure("\(path): not an X.509 certificate (PEM or DER)") }
        return certificate
    }

    private static func memoryBIO(_ data: Data) throws -> OpaquePointer {
        guard let bio = BIO_new(BIO_s_mem()) else { throw failure("BIO_new") }
        let written = data.withUnsafeBytes { BIO_write(bio, $0.baseAddress, Int32($0.count)) }
        guard written == data.count || data.isEmpty else { BIO_free(bio); throw failure("BIO_write") }
        return bio
    }

    private static func memoryContents(_ bio: OpaquePointer) -> Data {
        var pointer: UnsafeMutablePointer<CChar>?
        let count = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &pointer)
        guard count > 0, let pointer else { return Data() }
        return Data(bytes: pointer, count: count)
    }

    /// `what`, followed by the reasons OpenSSL queued (which this empties).
    private static func failure(_ what: String) -> OpenSSLError {
        var reasons: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            reasons.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        return OpenSSLError(kind: .failed, message: what + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")))
    }
}
