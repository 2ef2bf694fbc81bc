import Foundation

/// Which tasks kept a build waiting: from the task that finished last, back through the
/// dependency that finished last, each with how long it ran and how long it waited, ready, for a
/// slot of its resource class. A build's wall time is that chain, so it is where speed is won.
public enum CriticalPath {
    public struct Step: Codable, Sendable, Equatable {
        /// `kind:label`.
        public var task: String
        public var seconds: Double
        /// Ready (inputs done) but queued for a slot of its resource class.
        public var waited: Double
    }

    struct Timing {
        private var readyAt: [BuildGraph.NodeID: Double] = [:]
        private var startedAt: [BuildGraph.NodeID: Double] = [:]
        private var finishedAt: [BuildGraph.NodeID: Double] = [:]

        mutating func ready(_ id: BuildGraph.NodeID, at time: Double) { readyAt[id] = time }
        mutating func started(_ id: BuildGraph.NodeID, at time: Double) { startedAt[id] = time }
        mutating func finished(_ id: BuildGraph.NodeID, at time: Double) { finishedAt[id] = time }

        func criticalPath(in graph: BuildGraph) -> [Step] {
            guard var current = finishedAt.max(by: { $0.value < $1.value })?.key else { return [] }
            var steps: [Step] = []
            while true {
                let started = startedAt[current] ?? 0
                steps.append(Step(task: graph.nodes[current].name, seconds: (finishedAt[current] ?? started) - started,
                                  waited: max(0, started - (readyAt[current] ?? started))))
                // The dependency that ran and finished last held this one back; cached ones did not.
                guard let next = graph.nodes[current].dependencies.map(\.node).filter({ finishedAt[$0] != nil })
                    .max(by: { finishedAt[$0]! < finishedAt[$1]! }) else { break }
                current = next
            }
            return steps.reversed()
        }
    }

    /// `fetch:x.deb 3.1 s → bundle:6.1.0-56-amd64@debian 20.3 s (waited 5.2 s for a slot) → ...`
    public static func describe(_ steps: [Step]) -> String {
        let total = steps.reduce(0) { $0 + $1.seconds + $1.waited }
        let chain = steps.map { step in
            String(format: "%@ %.1f s", step.task, step.seconds) + (step.waited >= 0.05 ? String(format: " (waited %.1f s for a slot)", step.waited) : "")
        }
        return String(format: "critical path %.1f s: ", total) + chain.joined(separator: " → ")
    }
}
