import FarmEngine
import FarmKit
import Foundation
import Testing

/// examples/github/farm-nightly.yml cannot run here (no GitHub runner), so its parts that are
/// farm's are checked: the matrix numbers its shards 0 to N-1, and every `farm` command in it,
/// with the matrix and secrets filled in, is one the real binary takes (flags and values).
@Suite("GitHub workflow example")
struct GitHubWorkflowTests {
    static let path = DebianArchiveTests.projectRoot + "/examples/github/farm-nightly.yml"

    @Test func theMatrixNumbersItsShardsFromZero() throws {
        let text = try String(contentsOfFile: Self.path, encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("shard: [") })
        let values = line.split(separator: "[")[1].split(separator: "]")[0].split(separator: ",")
            .map { Int($0.trimmingCharacters(in: .whitespaces)) }
        #expect(values == Array(0..<values.count).map(Optional.init), "\(line)")
        #expect(text.contains("--shard ${{ matrix.shard }}/${{ strategy.job-total }}"))
        #expect(text.contains("needs: shard") && text.contains("if: always()"))
    }

    @Test func itsFarmCommandsAreOnesFarmTakes() throws {
        let scratch = try Scratch()
        let manifest = try scratch.write("manifest.yml", upstreamHeader + "kernels:\n" + validKernel)
        let text = try String(contentsOfFile: Self.path, encoding: .utf8)
        let commands = text.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: ".build/release/farm ") else { return nil }
            return String(line[range.upperBound...])
        }
        #expect(commands.count == 2, "\(commands)")
        for command in commands {
            let filled = command.replacingOccurrences(of: "${{ matrix.shard }}", with: "3")
                .replacingOccurrences(of: "${{ strategy.job-total }}", with: "4")
                .replacingOccurrences(of: "\"$FARM_REMOTE_CACHE\"", with: "http://127.0.0.1:9/")
            var arguments = filled.split(separator: " ").map(String.init)
            arguments += ["--manifest", manifest, "--cache", scratch.file("cache")]
            // A dry run for build: it parses everything and plans, and asks no server.
            if arguments.first == "build" { arguments.append("-n") }
            let result = try runProcess(Products.farm, arguments, directory: scratch.path)
            for refusal in ["Unknown option", "Missing value", "Unexpected argument", "--shard", "--report", "--junit"] {
                #expect(!result.stderr.contains(refusal), "\(arguments): \(result.stderr)")
            }
            if arguments.first == "build" {
                #expect(result.status == 0, "\(arguments): \(result.stdout)\(result.stderr)")
            } else {
                // This project has no signing or publish: the one refusal left is that.
                #expect(result.stderr.contains("needs 'signing:' and 'publish:'"), "\(arguments): \(result.stderr)")
            }
        }
    }
}
