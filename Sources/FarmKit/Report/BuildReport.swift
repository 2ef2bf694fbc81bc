import FarmEngine
import Foundation

/// The tasks a build report follows for one kernel, as the rules that planned them name them.
public struct KernelTasks: Sendable {
    public struct Module: Sendable {
        public var recipe: String
        /// The file name the repository gives the module (`lime-6.1.0-56-amd64.ko`).
        public var file: String
        /// Compile, then sign when there is one: the last task's outputs are the module's.
        public var tasks: [String]
        public var moduleOutput: String
        public var signatureOutput: String?

        public init(recipe: String, file: String, tasks: [String], moduleOutput: String = "module", signatureOutput: String? = nil) {
            (self.recipe, self.file, self.tasks, self.moduleOutput, self.signatureOutput) = (recipe, file, tasks, moduleOutput, signatureOutput)
        }
    }

    /// Every task whose end decides the kernel's state (its bundle, its modules, its profile).
    public var tasks: [String]
    public var modules: [Module]
    /// The symbol table's task (output `table`), when the rules plan one.
    public var profile: String?

    public init(tasks: [String] = [], modules: [Module] = [], profile: String? = nil) {
        (self.tasks, self.modules, self.profile) = (tasks, modules, profile)
    }
}

/// `--report FILE.json` and `cache/reports/last.json`: one record per kernel of a build's plan, with
/// what became of it. The README's "Build reports" table documents each field; `schema` changes
/// when one changes meaning or goes away.
public struct BuildReport: Codable, Sendable, Equatable {
    public static let schemaVersion = 1

    public enum State: String, Codable, Sendable, Comparable {
        case cached, built, skipped, failed

        /// The worse of two states is the kernel's: a failure anywhere is the kernel's failure.
        public static func < (a: State, b: State) -> Bool { a.rank < b.rank }
        private var rank: Int { [.cached: 0, .built: 1, .skipped: 2, .failed: 3][self]! }
    }

    /// Why something has no result, and the task whose log says more (`farm log TASK`).
    public struct Problem: Codable, Sendable, Equatable {
        public var reason: String
        public var logTask: String

        enum CodingKeys: String, CodingKey { case reason, logTask = "log_task" }
    }

    public struct Module: Codable, Sendable, Equatable {
        public var recipe: String
        public var file: String
        public var state: State
        public var sha256: String?
        public var signature: String?
        public var problem: Problem?
    }

    public struct Profile: Codable, Sendable, Equatable {
        public var state: State
        public var sha256: String?
        public var problem: Problem?
    }

    public struct KernelRecord: Codable, Sendable, Equatable {
        /// `release@upstream`, as commands take it.
        public var kernel: String
        public var upstream: String
        public var family: String
        public var release: String
        public var version: String?
        public var state: State
        public var problem: Problem?
        public var modules: [Module]
        public var profile: Profile?
    }

    public var schema = BuildReport.schemaVersion
    public var farm: String
    public var command: String
    public var started: String
    public var finished: String
    public var kernels: [KernelRecord]

    public init(farm: String = FarmVersion.current, command: String, started: String, finished: String, kernels: [KernelRecord]) {
        (self.farm, self.command, self.started, self.finished, self.kernels) = (farm, command, started, finished, kernels)
    }

    public static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(timeZone: TimeZone(identifier: "UTC")!))
    }

    // MARK: From a build

    /// Each task's state from how the build reported it. A task that failed is the problem; one
    /// skipped because another failed shares that failure (the kernel has no module because of it);
    /// one the build never reached (it stopped at a failure without `-k`) is skipped.
    static func state(of tasks: [String], outcomes: OutcomeRecorder) -> (State, Problem?) {
        var state = State.cached
        var problem: Problem?
        func worsen(_ next: State, _ why: Problem?) {
            if next > state {
                (state, problem) = (next, why)
            } else if next == state, problem == nil {
                problem = why
            }
        }
        for task in tasks {
            switch outcomes.outcome(of: task) {
            case .cached: break
            case .built: worsen(.built, nil)
            case let .failed(_, error): worsen(.failed, Problem(reason: error, logTask: task))
            case let .skipped(because):
                let error: String
                if case let .failed(_, text) = outcomes.outcome(of: because) { error = text } else { error = "failed" }
                worsen(.failed, Problem(reason: "\(task) needs \(because), which failed: \(error)", logTask: because))
            case nil:
                worsen(.skipped, Problem(reason: "\(task) did not run: the build stopped at the first failure (farm build -k builds the rest)",
                                         logTask: task))
            }
        }
        return (state, problem)
    }

    /// The outputs the last run of `task` in this build recorded, read by the key the build reported.
    static func outputs(of task: String, outcomes: OutcomeRecorder, cache: BuildCache) -> [String: String] {
        let key: Digest?
        switch outcomes.outcome(of: task) {
        case let .built(found), let .cached(found): key = found
        default: key = nil
        }
        guard let key, let record = try? cache.record(forKey: key) else { return [:] }
        return Dictionary(record.outputs.map { ($0.name, $0.digest.hex) }, uniquingKeysWith: { a, _ in a })
    }

    /// The report of a build of `kernels` over `graph`; only tasks the graph holds are followed.
    public static func make(kernels: [Kernel], graph: BuildGraph, rules: any BuildRules, manifest: Manifest, recipes: RecipeBook,
                            outcomes: OutcomeRecorder, cache: BuildCache, command: String, started: Date, finished: Date) -> BuildReport {
        let planned = { (name: String) in graph.node(named: name) != nil }
        let records = kernels.map { kernel -> KernelRecord in
            let plan = rules.reportTasks(for: kernel, manifest: manifest, recipes: recipes)
            let modules = plan.modules.filter { $0.tasks.allSatisfy(planned) }.map { module -> Module in
                let (state, problem) = BuildReport.state(of: module.tasks, outcomes: outcomes)
                let outputs = module.tasks.last.map { self.outputs(of: $0, outcomes: outcomes, cache: cache) } ?? [:]
                return Module(recipe: module.recipe, file: module.file, state: state, sha256: outputs[module.moduleOutput],
                              signature: module.signatureOutput.flatMap { outputs[$0] }, problem: problem)
            }
            let profile = plan.profile.flatMap { task -> Profile? in
                guard planned(task) else { return nil }
                let (state, problem) = BuildReport.state(of: [task], outcomes: outcomes)
                return Profile(state: state, sha256: outputs(of: task, outcomes: outcomes, cache: cache)["table"], problem: problem)
            }
            let (state, problem) = BuildReport.state(of: plan.tasks.filter(planned), outcomes: outcomes)
            return KernelRecord(kernel: kernel.name.description, upstream: kernel.upstream, family: kernel.family.rawValue,
                                release: kernel.release, version: kernel.version, state: state, problem: problem,
                                modules: modules, profile: profile)
        }
        return BuildReport(command: command, started: timestamp(started), finished: timestamp(finished), kernels: records)
    }

    /// The same report for a build the up-to-date stamp proved to be a no-op: everything it had is cached now.
    public func asUnchanged(started: Date, finished: Date) -> BuildReport {
        var report = self
        report.started = BuildReport.timestamp(started)
        report.finished = BuildReport.timestamp(finished)
        for index in report.kernels.indices {
            func cached(_ state: State) -> State { state == .built ? .cached : state }
            report.kernels[index].state = cached(report.kernels[index].state)
            for module in report.kernels[index].modules.indices {
                report.kernels[index].modules[module].state = cached(report.kernels[index].modules[module].state)
            }
            if report.kernels[index].profile != nil { report.kernels[index].profile!.state = cached(report.kernels[index].profile!.state) }
        }
        return report
    }

    // MARK: Files

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    public static func read(_ path: String) throws -> BuildReport {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FarmError.badInput("\(path): no such report (farm build writes one each build; --report FILE keeps a copy)")
        }
        do {
            let report = try JSONDecoder().decode(BuildReport.self, from: data)
            guard report.schema == schemaVersion else {
                throw FarmError.badInput("\(path): report schema \(report.schema); this farm reads schema \(schemaVersion)")
            }
            return report
        } catch let error as DecodingError {
            throw FarmError.badInput("\(path): not a farm build report: \(BuildReport.describe(error))")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case let .keyNotFound(key, context):
            let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
            return "field '\(key.stringValue)' is missing" + (path.isEmpty ? "" : " at \(path)")
        case let .dataCorrupted(context), let .typeMismatch(_, context), let .valueNotFound(_, context):
            let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
            return (path.isEmpty ? "" : "at \(path): ") + context.debugDescription
        @unknown default:
            return "\(error)"
        }
    }

    /// Where every build keeps its report, for `farm report`.
    public static func lastPath(cacheDirectory: String) -> String { cacheDirectory + "/reports/last.json" }

    /// Writes `data` to `path` whole or not at all, making its directory.
    public static func write(_ data: Data, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try AtomicFile.makeDirectory(directory) }
        try AtomicFile.write(data, to: path)
    }
}
