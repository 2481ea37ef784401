import HeraldNode
import ArgumentParser
import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldRunReader
import HeraldLive
import HeraldMonitor
import Logging

/// Where driver plugins come from (run, validate, drivers).
struct PluginOptions: ParsableArguments {
    @Option(name: .customLong("plugin-dir"), help: "Load driver plugins from this directory (repeatable; after HERALD_PLUGIN_PATH).")
    var pluginDirectories: [String] = []
}

/// How a script is compiled (run, validate): the script, mocks, parameter overrides, include folders.
struct ScriptOptions: ParsableArguments {
    @Argument(help: "The experiment script (YAML).") var script: String
    @Flag(help: "Swap every device for its simulated-lab mock.") var mock = false
    @Option(name: .customLong("set"), help: "Override a script parameter, e.g. --set integration=2s (repeatable).")
    var overrides: [String] = []
    @Option(name: .customLong("include-dir"), help: "Let include: read from this folder too, not only the script's own (repeatable).")
    var includeDirectories: [String] = []

    func validate() throws { _ = try parameters() }

    /// `--set name=value` items as a dictionary.
    func parameters() throws -> [String: String] { try parseAssignments(overrides, option: "--set", example: "integration=2s") }
}

/// Parses repeated `name=value` options.
func parseAssignments(_ items: [String], option: String, example: String) throws -> [String: String] {
    var out: [String: String] = [:]
    for item in items {
        guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
            throw ValidationError("\(option) expects name=value (e.g. \(option) \(example)), got '\(item)'")
        }
        out[String(item[..<eq])] = String(item[item.index(after: eq)...])
    }
    return out
}

/// Every exit status the CLI uses, and the one place errors become them.
enum ExitStatusCode {
    /// The run or command failed (a device, a file, a failed check).
    static let failed: Int32 = 1
    /// A file could not be read: libhdf5 never returned from reading it (EX_IOERR).
    static let unreadable: Int32 = 74

    /// For commands that only read files: a read that libhdf5 never returns from (a damaged
    /// object header can make it loop) ends the command with an error naming the file, after
    /// `HERALD_READ_LIMIT_S` seconds (default 60) in one library call.
    static func watchReads(of file: String) {
        let text = ProcessInfo.processInfo.environment["HERALD_READ_LIMIT_S"] ?? ""
        let seconds = Double(text).flatMap { $0.isFinite && $0 > 0 && $0 < 86_400 ? $0 : nil } ?? 60
        RunFile.watchReads(limit: .milliseconds(Int64(seconds * 1000))) { message in
            FileHandle.standardError.write(Data("error: \(file): \(message)\n".utf8))
            // The stuck thread holds the library: nothing else can close the file or exit cleanly.
            _exit(unreadable)
        }
    }
    /// The input was rejected before anything ran: a script, a counts table (EX_DATAERR).
    static let rejected: Int32 = 65
    /// The run was stopped by a signal and went to its safe state (128 + SIGINT).
    static let aborted: Int32 = 130

    /// Prints `error` on stderr, as people read it, and gives the exit code for it.
    static func exit(for error: Error) -> Error {
        switch error {
        case is ExitCode, is ValidationError, is CleanExit:
            return error  // ArgumentParser's own: it prints and exits
        case let e as ScriptErrors:
            report(e.description)
            return ExitCode(rejected)
        case let e as CountsTable.ParseError:
            report(e.description)
            return ExitCode(rejected)
        case let e as ClockCalibrationError:
            report("error: \(e.description)")
            return ExitCode(rejected)
        default:
            report("error: \(error)")
            return ExitCode(failed)
        }
    }

    static func code(for status: HeraldCore.ExitStatus) -> Int32 {
        switch status {
        case .success: return 0
        case .failed: return failed
        case .aborted: return aborted
        }
    }

    private static func report(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }
}

/// Runs a command's body, mapping whatever it throws through ``ExitStatusCode``.
func mappingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch { throw ExitStatusCode.exit(for: error) }
}

func mappingErrors<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch { throw ExitStatusCode.exit(for: error) }
}

/// How `herald run` proves itself to a script's nodes.
struct NodeClientOptions: ParsableArguments {
    @Option(name: .customLong("cert"), help: "This coordinator's certificate (a controller's, from `herald node issue`).") var certificate: String?
    @Option(name: .customLong("key"), help: "Its private key.") var key: String?
    @Option(name: .customLong("ca"), help: "The lab CA's certificate, which the nodes' certificates must chain to.") var ca: String?
    @Flag(help: "Reach the nodes without TLS: loopback addresses only.") var plaintextLoopback = false

    var security: NodeSecurity? {
        get throws {
            if plaintextLoopback { return .plaintextLoopback }
            switch (certificate, key, ca) {
            case (nil, nil, nil): return nil
            case (let c?, let k?, let a?): return .mutualTLS(certificate: c, key: k, ca: a)
            default: throw ValidationError("--cert, --key and --ca go together")
            }
        }
    }
}

/// `herald run --monitor`: the live web page, its feed and `/metrics`.
struct MonitorOptions: ParsableArguments {
    @Option(
        name: .customLong("monitor"),
        help: "Serve a live page of the run, and /metrics for Prometheus, at HOST:PORT (e.g. 127.0.0.1:8080; loopback unless told otherwise).")
    var address: String?
    @Option(
        name: .customLong("monitor-token"),
        help: "The token every request must carry (?token= or Authorization: Bearer); required beyond loopback. Default: $HERALD_MONITOR_TOKEN.")
    var token: String?
    @Option(name: .customLong("monitor-hold"), help: "Keep serving the final state this many seconds after the run ends.")
    var hold: Double = 0

    var configuration: MonitorConfiguration? {
        get throws {
            guard let address else { return nil }
            guard hold.isFinite, (0...86_400).contains(hold) else { throw ValidationError("--monitor-hold takes 0 to 86400 seconds") }
            let token = token ?? ProcessInfo.processInfo.environment["HERALD_MONITOR_TOKEN"]
            do { return try MonitorConfiguration(parsing: address, token: token) } catch {
                throw ValidationError("--monitor: \(error)")
            }
        }
    }

    /// Starts the monitor when asked for, logging where it is.
    func start(live: LiveRun, logger: Logger) async throws -> MonitorServer? {
        guard let configuration = try configuration else { return nil }
        let server = MonitorServer(live: live, configuration: configuration)
        let port: Int
        do { port = try await server.start() } catch { throw ExitStatusCode.exit(for: error) }
        let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        logger.notice("monitor: http://\(host):\(port)/\(configuration.token == nil ? "" : "?token=…")  (metrics at /metrics)")
        return server
    }

    /// After one feed period (so open pages get the final state) and the `--monitor-hold`,
    /// which a stop signal ends early.
    func stop(_ server: MonitorServer?, stopRequest: StopRequest) async {
        guard let server else { return }
        try? await Task.sleep(for: .milliseconds(300))
        let until = ContinuousClock.now + .milliseconds(Int64(hold * 1000))
        while ContinuousClock.now < until, stopRequest.reason == nil {
            try? await Task.sleep(for: .milliseconds(100))
        }
        await server.stop()
    }
}
