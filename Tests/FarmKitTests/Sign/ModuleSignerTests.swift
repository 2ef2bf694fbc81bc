import FarmEngine
import FarmKit
import Foundation
import Testing

/// A module-signing key pair made as the kernel's certs/Makefile makes one (openssl req with
/// CA:FALSE, digitalSignature and a subject key id), in `directory`.
func makeSigningKey(in directory: String, bits: Int = 2048) throws -> (key: String, certificate: String) {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let config = directory + "/x509.genkey"
    try Data("""
    [ req ]
    default_bits = \(bits)
    distinguished_name = req_distinguished_name
    prompt = no
    string_mask = utf8only
    x509_extensions = myexts

    [ req_distinguished_name ]
    CN = farm test module signing key

    [ myexts ]
    basicConstraints=critical,CA:FALSE
    keyUsage=digitalSignature
    subjectKeyIdentifier=hash
    authorityKeyIdentifier=keyid

    """.utf8).write(to: URL(fileURLWithPath: config))
    let key = directory + "/signing_key.pem", certificate = directory + "/signing_key.x509"
    let request = try runProcess("/usr/bin/openssl", ["req", "-new", "-nodes", "-utf8", "-sha256", "-days", "365", "-batch", "-x509",
                                                      "-config", config, "-outform", "PEM", "-out", certificate, "-keyout", key])
    guard request.status == 0 else { throw TestFailure("openssl req: \(request.stderr)") }
    return (key, certificate)
}

struct ModuleSignerTests {
    /// The appended block is a CMS signature that `openssl cms -verify` accepts over the module's bytes.
    @Test(arguments: ["sha256", "sha512"])
    func theAppendedSignatureVerifiesOverTheModule(hash: String) throws {
        let scratch = try Scratch()
        try scratch.write("m.c", "__attribute__((section(\".modinfo\"), used)) static const char n[] = \"name=m\";\nint x;\n")
        #expect(try runProcess("/usr/bin/gcc", ["-c", scratch.file("m.c"), "-o", scratch.file("m.ko")]).status == 0)
        let module = try #require(FileManager.default.contents(atPath: scratch.file("m.ko")))
        let (key, certificate) = try makeSigningKey(in: scratch.file("keys"))
        let signed = try ModuleSigner.sign(module: module, key: key, certificate: certificate, hash: hash)

        #expect(signed.prefix(module.count) == module)
        #expect(signed.suffix(ModuleSigner.magic.count) == ModuleSigner.magic)
        let trailer = signed.dropLast(ModuleSigner.magic.count).suffix(12)
        #expect(Array(trailer.prefix(8)) == [0, 0, 2, 0, 0, 0, 0, 0])
        let length = trailer.suffix(4).reduce(0) { $0 << 8 | Int($1) }
        #expect(module.count + length + 12 + ModuleSigner.magic.count == signed.count)
        let signature = signed.dropFirst(module.count).prefix(length)
        try Data(signature).write(to: URL(fileURLWithPath: scratch.file("sig.der")))
        let verify = try runProcess("/usr/bin/openssl", ["cms", "-verify", "-binary", "-inform", "DER", "-in", scratch.file("sig.der"),
                                                         "-content", scratch.file("m.ko"), "-certfile", certificate, "-nointern",
                                                         "-noverify", "-out", "/dev/null"])
        #expect(verify.status == 0, "\(verify.stderr)")
        let printed = try runProcess("/usr/bin/openssl", ["cms", "-cmsout", "-print", "-inform", "DER", "-in", scratch.file("sig.der")])
        let structure = printed.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(structure.contains("certificates: <ABSENT>"), "certificates in the block: \(structure)")
        #expect(structure.contains("signedAttrs: <ABSENT>"), "signed attributes in the block: \(structure)")
        #expect(structure.contains("d.issuerAndSerialNumber"), "the signer is not named by issuer and serial: \(structure)")

        // Signing a signed module again is refused.
        #expect(throws: FarmError.self) { try ModuleSigner.sign(module: signed, key: key, certificate: certificate, hash: hash) }
    }

    /// `farm verify MODULE --cert CERT`: a good module passes; a tampered one, one signed by
    /// another key and an unsigned one are refused with a message naming the file.
    @Test func verifyRefusesTamperedForeignAndUnsignedModules() throws {
        let scratch = try Scratch()
        try scratch.write("m.c", "int x = 1;\n")
        #expect(try runProcess("/usr/bin/gcc", ["-c", scratch.file("m.c"), "-o", scratch.file("m.ko")]).status == 0)
        let module = try #require(FileManager.default.contents(atPath: scratch.file("m.ko")))
        let (key, certificate) = try makeSigningKey(in: scratch.file("keys"))
        let (otherKey, otherCertificate) = try makeSigningKey(in: scratch.file("other"))

        let good = scratch.file("good.ko")
        try ModuleSigner.sign(module: module, key: key, certificate: certificate, hash: "sha512").write(to: URL(fileURLWithPath: good))
        let ok = try runProcess(Products.farm, ["verify", good, "--cert", certificate])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("signature OK (sha512"))

        var tampered = try #require(FileManager.default.contents(atPath: good))
        tampered[100] ^= 0x01
        let cases: [(String, Data, String, String)] = [
            ("tampered.ko", tampered, certificate, "does not verify"),
            ("foreign.ko", try ModuleSigner.sign(module: module, key: otherKey, certificate: otherCertificate, hash: "sha256"), certificate, "does not verify"),
            ("unsigned.ko", module, certificate, "not signed"),
        ]
        for (name, bytes, cert, message) in cases {
            let path = scratch.file(name)
            try bytes.write(to: URL(fileURLWithPath: path))
            let result = try runProcess(Products.farm, ["verify", path, "--cert", cert])
            #expect(result.status == 1, "\(name): \(result.stdout)")
            #expect(result.stderr.contains("\(path): ") && result.stderr.contains(message), "\(name): \(result.stderr)")
        }
    }
}
