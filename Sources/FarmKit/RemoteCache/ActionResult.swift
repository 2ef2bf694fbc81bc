import FarmEngine
import Foundation

/// A remote cache's `ac/<key>` entry: the Remote Execution API's `ActionResult`
/// (build/bazel/remote/execution/v2/remote_execution.proto), reduced to what farm writes and reads.
/// Field numbers are the proto's; bazel-remote checks such entries when its AC validation is on.
struct ActionResult: Equatable {
    struct OutputFile: Equatable {
        /// The task's output name.
        var path: String
        var digest: RemoteResult.Object
        var isExecutable = false
    }

    var outputFiles: [OutputFile]
    var exitCode: Int32 = 0
    /// The task's log.
    var stdoutDigest: RemoteResult.Object?
    /// `execution_metadata.worker`: the proto advises one non-default field, so that an entry is
    /// never empty bytes.
    var worker: String?

    private enum Field {
        // ActionResult
        static let outputFiles = 2, exitCode = 4, stdoutDigest = 6, executionMetadata = 9
        // OutputFile
        static let path = 1, digest = 2, isExecutable = 4
        // Digest
        static let hash = 1, sizeBytes = 2
        // ExecutedActionMetadata
        static let worker = 1
    }

    init(outputFiles: [OutputFile], exitCode: Int32 = 0, stdoutDigest: RemoteResult.Object?, worker: String?) {
        self.outputFiles = outputFiles
        self.exitCode = exitCode
        self.stdoutDigest = stdoutDigest
        self.worker = worker
    }

    init(_ result: RemoteResult) {
        self.init(outputFiles: result.outputs.sorted { $0.key < $1.key }.map { OutputFile(path: $0.key, digest: $0.value) },
                  stdoutDigest: result.log, worker: "farm \(FarmVersion.current)")
    }

    var encoded: Data {
        func digest(_ writer: inout ProtobufWriter, _ object: RemoteResult.Object) {
            writer.string(Field.hash, object.digest.hex)
            writer.integer(Field.sizeBytes, object.size)
        }
        var writer = ProtobufWriter()
        for file in outputFiles {
            writer.message(Field.outputFiles) { output in
                output.string(Field.path, file.path)
                output.message(Field.digest) { digest(&$0, file.digest) }
                output.bool(Field.isExecutable, file.isExecutable)
            }
        }
        writer.integer(Field.exitCode, Int64(exitCode))
        if let stdoutDigest { writer.message(Field.stdoutDigest) { digest(&$0, stdoutDigest) } }
        if let worker { writer.message(Field.executionMetadata) { $0.string(Field.worker, worker) } }
        return Data(writer.bytes)
    }

    init(decoding data: Data) throws {
        func digest(_ value: ProtobufReader.Value, _ name: String) throws -> RemoteResult.Object {
            var reader = try value.message(name)
            var hash = "", size: Int64 = 0
            while let (field, value) = try reader.next() {
                switch field {
                case Field.hash: hash = try value.string("\(name).hash")
                case Field.sizeBytes: size = try value.integer("\(name).size_bytes")
                default: continue
                }
            }
            guard let parsed = Digest(hex: hash), hash == parsed.hex else {
                throw ProtobufReader.Malformed(offset: 0, reason: "\(name).hash '\(hash)' is not a lowercase sha256")
            }
            guard size >= 0 else { throw ProtobufReader.Malformed(offset: 0, reason: "\(name).size_bytes is negative") }
            return RemoteResult.Object(digest: parsed, size: size)
        }
        outputFiles = []
        var reader = ProtobufReader(ArraySlice(data))
        while let (field, value) = try reader.next() {
            switch field {
            case Field.outputFiles:
                var output = try value.message("output_files")
                var path = "", object: RemoteResult.Object?, executable = false
                while let (field, value) = try output.next() {
                    switch field {
                    case Field.path: path = try value.string("output_files.path")
                    case Field.digest: object = try digest(value, "output_files.digest")
                    case Field.isExecutable: executable = try value.integer("output_files.is_executable") != 0
                    default: continue
                    }
                }
                guard let object else { throw ProtobufReader.Malformed(offset: 0, reason: "output file '\(path)' has no digest") }
                outputFiles.append(OutputFile(path: path, digest: object, isExecutable: executable))
            case Field.exitCode:
                exitCode = Int32(truncatingIfNeeded: try value.integer("exit_code"))
            case Field.stdoutDigest:
                stdoutDigest = try digest(value, "stdout_digest")
            case Field.executionMetadata:
                var metadata = try value.message("execution_metadata")
                while let (field, value) = try metadata.next() {
                    if field == Field.worker { worker = try value.string("execution_metadata.worker") }
                }
            default:
                continue
            }
        }
    }

    /// The task result this entry records; nil for a failed run (a non-zero exit code), which is
    /// not a result to reuse. Throws when two outputs share a name or one has none.
    func result() throws -> RemoteResult? {
        guard exitCode == 0 else { return nil }
        var outputs: [String: RemoteResult.Object] = [:]
        for file in outputFiles {
            guard !file.path.isEmpty else { throw ProtobufReader.Malformed(offset: 0, reason: "an output file without a path") }
            guard outputs.updateValue(file.digest, forKey: file.path) == nil else {
                throw ProtobufReader.Malformed(offset: 0, reason: "output '\(file.path)' is listed twice")
            }
        }
        return RemoteResult(outputs: outputs, log: stdoutDigest)
    }
}
