import FarmEngine
import FarmKit
import Foundation
import Testing

/// What `farm lab` does with the names and arguments it is given, before any VM boots.
struct LabNameTests {
    /// A cache with a lab-like directory (keys, lab.json) and a victim directory beside it.
    private func cacheWithVictim(_ scratch: Scratch) throws -> (cache: String, victim: String, lab: String) {
        let victim = try scratch.write("x/victim/precious.txt", "keep me\n")
        try FileManager.default.createDirectory(atPath: scratch.file("x/c/cas"), withIntermediateDirectories: true)
        let lab = scratch.file("x/c/labs/ir1")
        try scratch.write("x/c/labs/ir1/id_ed25519", "a lab's key\n")
        try scratch.write("x/c/labs/ir1/lab.json", #"{"name": "ir1"}"#)
        return (scratch.file("x/c"), victim, lab)
    }

    @Test(arguments: ["../../victim", "..", "."])
    func labDownRefusesANameOutsideTheLabs(_ name: String) throws {
        let scratch = try Scratch()
        let (cache, victim, lab) = try cacheWithVictim(scratch)
        let down = try runProcess(Products.farm, ["lab", "down", name, "--cache", cache])
        #expect(down.status == ExitStatus.badInput, "\(down.stdout)\(down.stderr)")
        #expect(down.stderr.contains("'\(name)' is not a lab name"), "\(down.stderr)")
        #expect(FileManager.default.fileExists(atPath: victim))
        #expect(FileManager.default.fileExists(atPath: cache + "/cas"))
        #expect(FileManager.default.fileExists(atPath: lab + "/id_ed25519"), "another lab's key was removed")
    }

    /// `up`, `ssh` and `capture --lab` take the same rule as `down`, before anything is built or run.
    @Test func everyLabCommandRefusesANameThatIsNotALabName() throws {
        let scratch = try Scratch()
        let (cache, victim, _) = try cacheWithVictim(scratch)
        for arguments in [["lab", "up", "6.1.0-99-amd64", "--name", "../../victim"], ["lab", "ssh", "--name", "..", "--", "true"],
                          ["capture", "--lab", "../victim", "--repo", scratch.file("repo")]] {
            let result = try runProcess(Products.farm, arguments + ["--cache", cache])
            #expect(result.status == ExitStatus.badInput, "\(arguments): \(result.stdout)\(result.stderr)")
            #expect(result.stderr.contains("is not a lab name"), "\(arguments): \(result.stderr)")
        }
        #expect(FileManager.default.fileExists(atPath: victim))
    }

    /// A directory under labs/ without its own lab.json (not a lab farm made) is never removed.
    @Test func labDownRemovesOnlyADirectoryHoldingItsLabJson() throws {
        let scratch = try Scratch()
        let stray = try scratch.write("c/labs/stray/notes.txt", "mine\n")
        let other = try scratch.write("c/labs/other/lab.json", #"{"name": "someone-else"}"#)
        for name in ["stray", "other"] {
            let down = try runProcess(Products.farm, ["lab", "down", name, "--cache", scratch.file("c")])
            #expect(down.status == ExitStatus.failure && down.stderr.contains("no lab named '\(name)'"), "\(down.stdout)\(down.stderr)")
        }
        let all = try runProcess(Products.farm, ["lab", "down", "--all", "--cache", scratch.file("c")])
        #expect(all.status == 0, "\(all.stdout)\(all.stderr)")
        #expect(FileManager.default.fileExists(atPath: stray) && FileManager.default.fileExists(atPath: other))
    }

    @Test func labSshHelpPrintsHelpWithoutALab() throws {
        let scratch = try Scratch()
        for flag in ["--help", "-h"] {
            let help = try runProcess(Products.farm, ["lab", "ssh", flag, "--cache", scratch.file("cache")])
            #expect(help.status == 0, "\(help.stdout)\(help.stderr)")
            #expect(help.stdout.contains("USAGE: farm lab ssh"), "\(help.stdout)")
        }
    }

    @Test func labNamesAreOneDirectoryEntry() throws {
        for good in ["ir1", "6.12.94+deb13-amd64", "e2e-123", "A_b.c"] { #expect(try LabName(good).value == good) }
        for bad in ["", ".", "..", ".hidden", "-x", "a/b", "../x", "a b", "é", String(repeating: "a", count: 65)] {
            #expect(throws: LabNameError.self, "'\(bad)'") { try LabName(bad) }
        }
    }
}
