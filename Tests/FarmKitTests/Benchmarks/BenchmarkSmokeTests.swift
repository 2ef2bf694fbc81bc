import FarmEngine
import FarmKit
import Foundation
import Testing

/// Every `farm-bench` mode runs once at its smallest size, so a change that breaks a benchmark
/// turns the suite red. No time is asserted: each must finish and print its ratio line.
struct BenchmarkSmokeTests {
    static var bench: String { Products.directory + "/farm-bench" }

    @Test func theEngineBenchmarkRunsAndPrintsItsRatios() throws {
        let result = try runProcess(Self.bench, ["--kernels", "20", "--runs", "1"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("ratio no-op    engine/ninja: "), "\(result.stdout)")
        #expect(result.stdout.contains("farm path no-op: 104 cached, 0 database writes, database files untouched"), "\(result.stdout)")
    }

    @Test func thePlanBenchmarkRunsOnTheShippedManifest() throws {
        let result = try runProcess(Self.bench, ["plan", "--manifest", DebianArchiveTests.projectRoot + "/manifest.yml", "--kernels", "40", "--runs", "1"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("farm plan --format json: "), "\(result.stdout)")
    }
}

extension DebianArchiveTests {
    /// The bundle and compile benchmarks on the real project the compile tests built (its cache
    /// holds the packages, the bookworm root and a compile), at their smallest sizes.
    @Suite("farm-bench on real kernels, once", .serialized)
    struct RealBenchmarkSmokeTests {
        @Test func theBundleBenchmarkRunsAgainstKernelPackersWay() async throws {
            let project = try await CompileProject.shared.get()
            let result = try runProcess(BenchmarkSmokeTests.bench, ["bundle", "--manifest", project.manifest, "--release", project.release, "--runs", "1"],
                                        environment: ["FARM_CACHE": project.cache])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            #expect(result.stdout.contains("ratio"), "\(result.stdout)")
        }

        @Test func theCaptureBenchmarkRunsAgainstMargaritaShotgun() async throws {
            let project = try await CompileProject.shared.get()
            let result = try runProcess(BenchmarkSmokeTests.bench, ["capture", "--manifest", project.manifest, "--cache", project.cache,
                                                                    "--release", project.release, "--memory", "128", "--runs", "1", "--compress", "off"])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            #expect(result.stdout.contains("ratio"), "\(result.stdout)")
        }

        @Test(.enabled(if: NginxServer.installed, "needs nginx (apt-get install nginx-light)"))
        func theRemoteBenchmarkRunsAgainstAColdBuild() async throws {
            let project = try await CompileProject.shared.get()
            let result = try runProcess(BenchmarkSmokeTests.bench, ["remote", "--manifest", project.manifest, "--kernels", "1", "-j", "2"])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            #expect(result.stdout.contains("ratio remote/cold: ") && result.stdout.contains("(0 packages downloaded)"), "\(result.stdout)")
        }

        @Test func theCompileBenchmarkRunsAgainstSerialMake() async throws {
            let project = try await CompileProject.shared.get()
            // A copy of the project with its own keys: the shared project has none, and its other tests rely on that.
            let scratch = try Scratch()
            try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("recipes"))
            try FileManager.default.copyItem(atPath: project.manifest, toPath: scratch.file("manifest.yml"))
            let keys = try runProcess(Products.farm, ["keys", "init", "--manifest", scratch.file("manifest.yml")])
            #expect(keys.status == 0, "\(keys.stdout)\(keys.stderr)")
            let result = try runProcess(BenchmarkSmokeTests.bench, ["compile", "--manifest", scratch.file("manifest.yml"), "--kernels", "1"],
                                        environment: ["FARM_CACHE": project.cache])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            #expect(result.stdout.contains("ratio"), "\(result.stdout)")
        }
    }
}
