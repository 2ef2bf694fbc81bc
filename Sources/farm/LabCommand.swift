import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct LabCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab",
        abstract: "Boot a real distribution kernel under QEMU, reachable by SSH on 127.0.0.1, to test modules and captures on.",
        subcommands: [Up.self, SSH.self, Down.self, List.self])

    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Boot RELEASE's linux-image package with farm's initramfs (busybox, dropbear, the kernel's NIC drivers).")

        @OptionGroup var options: GlobalOptions
        @OptionGroup var output: OutputOptions

        @Option(name: .long, help: "The lab's name (default: the release).")
        var name: String?

        @Option(name: .long, help: "The VM's memory in MiB.")
        var memory = 512

        @Option(name: .long, help: "auto (KVM when it answers within a few seconds, else software emulation), kvm or tcg.")
        var accel = "auto"

        @Option(name: .long, help: "The port of 127.0.0.1 forwarded to the VM's SSH (default: a free one).")
        var port: Int?

        @Argument(help: "The kernel release, as the manifest lists it.")
        var release: String

        func run() async throws {
            guard ["auto", "kvm", "tcg"].contains(accel) else { throw ValidationError("--accel is auto, kvm or tcg, not '\(accel)'") }
            let labName = try LabName(name ?? release)
            let session = try options.session()
            let (kernel, initramfs) = try await session.labImage(release: release, options: BuildOptions(),
                                                                 reporter: output.reporter())
            let labs = Labs(cacheDirectory: session.cacheDirectory)
            let lab = try labs.up(release: release, kernel: kernel, initramfs: initramfs,
                                  options: .init(name: labName, memoryMiB: memory, accelerator: accel, port: port)) {
                FileHandle.standardError.write(Data(($0 + "\n").utf8))
            }
            let seconds = String(format: "%.1f", Date().timeIntervalSince(lab.started))
            if output.json {
                let object: [String: Any] = ["event": "lab-up", "name": lab.name, "release": lab.release, "accelerator": lab.accelerator,
                                             "memory_mib": lab.memoryMiB, "ssh": "127.0.0.1:\(lab.port)",
                                             "seconds": Date().timeIntervalSince(lab.started)]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            print("lab \(lab.name) is up: \(lab.release) (\(lab.accelerator), \(lab.memoryMiB) MiB), SSH on 127.0.0.1:\(lab.port) after \(seconds) s")
            print("  farm lab ssh --name \(lab.name)          farm capture --lab \(lab.name) --repo DIR|URL          farm lab down \(lab.name)")
        }
    }

    struct SSH: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ssh",
            abstract: "Run ssh into a lab (its own key and known_hosts, strict host key checking), or a command in it.")

        @OptionGroup var options: GlobalOptions

        @Option(name: .long, help: "The lab (default: the only one up).")
        var name: String?

        @Argument(parsing: .captureForPassthrough, help: "A command to run in the lab instead of a shell.")
        var command: [String] = []

        func run() throws {
            // Passthrough takes `--help` for the command to run; a command that starts with a dash
            // follows `--` (`farm lab ssh -- -x`).
            if let first = command.first, ["--help", "-h"].contains(first) {
                print(Farm.helpMessage(for: SSH.self))
                return
            }
            let lab = try Labs(cacheDirectory: options.cacheDirectory).resolve(name)
            guard let ssh = Executable.find("ssh") else { throw FarmError.toolMissing(tool: "ssh", package: "openssh-client", purpose: "farm lab ssh") }
            var arguments = ["ssh"] + lab.sshOptions
            if command.isEmpty && isatty(0) != 0 { arguments.append("-t") }
            arguments.append(lab.destination)
            arguments += command.first == "--" ? Array(command.dropFirst()) : command
            let argv = arguments.map { strdup($0) } + [nil]
            execv(ssh, argv)
            throw FarmError("could not run \(ssh): \(String(cString: strerror(errno)))")
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a lab's VM and remove its keys and files; also ends a lab left by a killed farm.")

        @OptionGroup var options: GlobalOptions

        @Flag(name: .long, help: "End every lab of this cache.")
        var all = false

        @Argument(help: "The lab (default: the only one).")
        var name: String?

        func run() throws {
            let labs = Labs(cacheDirectory: options.cacheDirectory)
            let chosen = all ? labs.list() : [try labs.resolve(name)]
            for lab in chosen {
                let ended = labs.down(lab)
                print("lab \(lab.name): \(ended ? "ended" : "was not running; its files are removed")")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The labs of this cache: name, release, port, state.")

        @OptionGroup var options: GlobalOptions

        func run() throws {
            let labs = Labs(cacheDirectory: options.cacheDirectory).list()
            guard !labs.isEmpty else {
                print("no labs")
                return
            }
            for lab in labs {
                let state = lab.pid.map { "running (pid \($0), \(lab.accelerator))" } ?? "not running; 'farm lab down \(lab.name)' removes it"
                print("\(lab.name)\t\(lab.release)\t127.0.0.1:\(lab.port)\t\(lab.memoryMiB) MiB\t\(state)")
            }
        }
    }
}
