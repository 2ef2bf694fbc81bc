import FarmEngine
import FarmKit
import Foundation
import Testing

/// One suite read as apt reads it: which signatures count, and which index files are taken.
@Suite("Reading an apt suite")
struct AptArchiveTests {
    func read(_ archive: LocalAptArchive, suite: String = "testsuite") throws -> [IndexPackage] {
        let work = archive.scratch.file("work")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let apt = AptArchive(baseURL: "file://\(archive.root)", keyrings: [archive.keyring])
        return try apt.packages(suite: suite, component: "main", architecture: "amd64", workDirectory: work).1
    }

    /// Ubuntu's xenial InRelease carries a retired key's signature beside the current key's:
    /// apt ignores a signature whose key it lacks, and so does farm.
    @Test func aReleaseSignedByAKeyOfTheKeyringAndAnUnknownOneIsAccepted() throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.addKey("retired@farm.test")
        try archive.package("linux-headers-6.1.0-40-amd64", version: "6.1.150-1")
        try archive.publish(suite: "testsuite", signature: .inRelease(["retired@farm.test", "archive@farm.test"]))
        let inRelease = try String(contentsOfFile: archive.root + "/dists/testsuite/InRelease", encoding: .utf8)
        #expect(inRelease.components(separatedBy: "-----BEGIN PGP SIGNATURE-----").count == 2)
        // gpgv alone fails on it: the verdict is farm's, as apt's is apt's.
        let gpgv = try runProcess("/usr/bin/gpgv", ["--keyring", archive.keyring, archive.root + "/dists/testsuite/InRelease"])
        #expect(gpgv.status != 0, "the fixture must carry a signature gpgv cannot check")

        #expect(try read(archive).map(\.name) == ["linux-headers-6.1.0-40-amd64"])
    }

    @Test func aReleaseSignedOnlyByAnUnknownKeyIsRefused() throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.addKey("stranger@farm.test")
        try archive.package("linux-headers-6.1.0-40-amd64", version: "6.1.150-1")
        try archive.publish(suite: "testsuite", signature: .inRelease(["stranger@farm.test"]))
        #expect {
            try read(archive)
        } throws: { error in
            "\(error)".contains("the signature does not verify") && "\(error)".contains("No good signature by a key of the keyring")
                && "\(error)".contains("not in the keyring")
        }
    }

    @Test func aBadSignatureBesideAGoodOneIsRefused() throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.addKey("second@farm.test")
        // Both keys in the keyring: the second key's signature is over other text, so it is bad.
        try archive.trust(["second@farm.test"])
        try archive.package("linux-headers-6.1.0-40-amd64", version: "6.1.150-1")
        try archive.publish(suite: "testsuite", signature: .detached(["archive@farm.test", "second@farm.test"], tampered: ["second@farm.test"]))
        #expect {
            try read(archive)
        } throws: { error in
            "\(error)".contains("file://\(archive.root)/dists/testsuite/Release: the signature does not verify") && "\(error)".contains("Bad signature by")
        }

        // The same two signatures, both over the published text: accepted.
        try archive.publish(suite: "testsuite", signature: .detached(["archive@farm.test", "second@farm.test"]))
        #expect(try read(archive).count == 1)
    }

    /// apt counts an expired key's signature for nothing: beside a good one the suite is read,
    /// alone it is refused.
    @Test func anExpiredKeysSignatureCountsForNothing() throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.addKey("expired@farm.test", createdAt: "20200101T000000")
        try archive.trust(["expired@farm.test"])
        try archive.package("linux-headers-6.1.0-40-amd64", version: "6.1.150-1")
        let old = ["expired@farm.test": "20200101T120000"]
        try archive.publish(suite: "testsuite", signature: .detached(["expired@farm.test", "archive@farm.test"], at: old))
        let status = try runProcess("/usr/bin/gpgv", ["--status-fd", "1", "--keyring", archive.keyring,
                                                      archive.root + "/dists/testsuite/Release.gpg", archive.root + "/dists/testsuite/Release"])
        #expect(status.stdout.contains("[GNUPG:] EXPKEYSIG"), "the fixture must carry an expired key's signature: \(status.stdout)")
        #expect(try read(archive).count == 1)

        try archive.publish(suite: "testsuite", signature: .detached(["expired@farm.test"], at: old))
        #expect {
            try read(archive)
        } throws: { error in
            "\(error)".contains("No good signature by a key of the keyring") && "\(error)".contains("(expired)")
        }
    }

    @Test func anArchiveWithOnlyReleaseAndReleaseGpgIsRead() throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.package("linux-headers-6.1.0-40-amd64", version: "6.1.150-1")
        try archive.publish(suite: "testsuite", signature: .detached(["archive@farm.test"]))
        #expect(!FileManager.default.fileExists(atPath: archive.root + "/dists/testsuite/InRelease"))
        #expect(try read(archive).map(\.name) == ["linux-headers-6.1.0-40-amd64"])
    }

    @Test(arguments: [["gz"], [""], ["gz", ""], ["", "gz", "xz"]])
    func anIndexIsReadInWhicheverCompressionTheReleaseLists(_ compressions: [String]) throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.package("linux-headers-6.1.0-40-amd64", version: "6.1.150-1")
        try archive.publish(suite: "testsuite", compressions: compressions)
        #expect(try read(archive).map(\.name) == ["linux-headers-6.1.0-40-amd64"])
    }

    @Test func aReleaseListingNoPackagesIndexNamesWhatWasLookedFor() throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.package("linux-headers-6.1.0-40-amd64", version: "6.1.150-1")
        try archive.publish(suite: "testsuite", compressions: [])
        #expect {
            try read(archive)
        } throws: { error in
            "\(error)".contains("the Release lists no main/binary-amd64/Packages.xz, main/binary-amd64/Packages.gz or main/binary-amd64/Packages")
        }
    }
}
