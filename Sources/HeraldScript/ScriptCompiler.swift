import Foundation
import HeraldCore
import Yams

/// Turns a YAML experiment script into a validated `Plan`, with no device I/O.
///
/// Every problem is collected with its file:line:column and all of them are
/// reported together, so a user fixes a script in one pass, not one error at a time.
/// The language is described in docs/script-language.md.
public struct ScriptCompiler: Sendable {
    public var registry: DriverRegistry
    /// What the `simulation:` block may contain (from the simulated lab).
    public var simulationSpecs: [PropertySpec]
    /// A physical check of one `simulation:` value beyond its type and range (nil: fine).
    public var simulationCheck: @Sendable (String, Value) -> String? = { _, _ in nil }
    /// Reads one `simulation.faults` entry: the device it names, or what is wrong with it.
    /// Nil when the lab takes no faults.
    public var faultParser: (@Sendable (String) -> (device: String?, kind: String?, problem: String?))?
    /// Folders besides the script's own from which `include:` may read (`--include-dir`).
    public var includeDirectories: [String] = []

    public init(registry: DriverRegistry, simulationSpecs: [PropertySpec] = []) {
        self.registry = registry
        self.simulationSpecs = simulationSpecs
    }

    /// Reads and compiles a script file. `overrides` are `--set name=value` pairs.
    public func compile(path: String, mock: Bool = false, overrides: [String: String] = [:]) throws -> CompiledScript {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ScriptErrors([
                ScriptDiagnostic(
                    "cannot read the script: \(error.localizedDescription)",
                    at: SourceLocation(file: path, line: 1, column: 1))
            ])
        }
        return try compile(text: text, file: path, mock: mock, overrides: overrides)
    }

    /// Compiles script text; `file` is used in diagnostics and to resolve includes.
    public func compile(text: String, file: String, mock: Bool = false, overrides: [String: String] = [:]) throws
        -> CompiledScript
    {
        var context = Context(file: file, registry: registry, simulationSpecs: simulationSpecs, mock: mock)
        let scriptFolder = (file as NSString).deletingLastPathComponent
        context.includeRoots = ([scriptFolder.isEmpty ? "." : scriptFolder] + includeDirectories).compactMap(Context.resolved)
        context.simulationCheck = simulationCheck
        context.faultParser = faultParser
        guard let root = context.parse(text: text, file: file) else { throw ScriptErrors(context.diagnostics) }
        let result = context.compileTop(root, text: text, overrides: overrides)
        if !context.diagnostics.isEmpty { throw ScriptErrors(context.diagnostics) }
        guard let result else { throw ScriptErrors([ScriptDiagnostic("empty script", at: context.location(root))]) }
        return result
    }
}

/// A compiled script: the plan and the simulation parameters used if devices are mocks.
public struct CompiledScript: Sendable {
    public var plan: Plan
    public var simulation: [String: Value]
    /// Faults to inject into simulated devices (`simulation.faults`), as written.
    public var faults: [String] = []
    public var description: String
}

/// A script parameter: its text (default or `--set` override) and where it was declared.
struct Parameter {
    var text: String
    var node: Node
    var file: String
    var overridden: Bool
}

struct Context {
    var file: String
    let registry: DriverRegistry
    let simulationSpecs: [PropertySpec]
    var simulationCheck: @Sendable (String, Value) -> String? = { _, _ in nil }
    var faultParser: (@Sendable (String) -> (device: String?, kind: String?, problem: String?))?
    let mock: Bool
    var diagnostics: [ScriptDiagnostic] = []
    /// Devices declared so far: name → the driver named in the script, with limits applied.
    var devices: [String: DriverDescriptor] = [:]
    /// Data sets (sweeps and named acquisitions) defined so far: name → kind.
    var datasets: [String: DatasetKind] = [:]
    /// How many sweeps each data set runs inside (0: top level).
    var datasetDepth: [String: Int] = [:]
    /// Sweeps whose body is being compiled, outermost first.
    var openSweeps: [String] = []
    var parameters: [String: Parameter] = [:]
    /// Named sub-sequences (from `sequences:` here or in included files), compiled on use.
    var sequences: [String: (file: String, node: Node)] = [:]
    /// Folders (resolved) that `include:` may read from: the script's own and `--include-dir`s.
    var includeRoots: [String] = []
    /// Every file included, with its text, for the run's record.
    var includedFiles: [IncludedFile] = []
    /// Sequences being expanded, to reject recursion.
    var expanding: [String] = []
    /// Counting spec already required of each data set by an analysis step.
    var countingByDataset: [String: (CountingSpec, Node)] = [:]

    enum DatasetKind: Equatable {
        case tomography, chsh, values, single
    }

    init(file: String, registry: DriverRegistry, simulationSpecs: [PropertySpec], mock: Bool) {
        self.file = file
        self.registry = registry
        self.simulationSpecs = simulationSpecs
        self.mock = mock
    }

    func location(_ node: Node?) -> SourceLocation {
        guard let mark = node?.mark else { return SourceLocation(file: file, line: 1, column: 1) }
        return SourceLocation(file: file, line: mark.line, column: mark.column)
    }

    mutating func error(_ message: String, at node: Node?) {
        diagnostics.append(ScriptDiagnostic(message, at: location(node)))
    }

    /// Parses YAML text into a node, reporting syntax errors at their place.
    mutating func parse(text: String, file: String) -> Node? {
        do {
            guard let root = try Yams.compose(yaml: text) else {
                diagnostics.append(ScriptDiagnostic("the file is empty", at: SourceLocation(file: file, line: 1, column: 1)))
                return nil
            }
            return root
        } catch let error as YamlError {
            diagnostics.append(diagnostic(for: error, file: file))
            return nil
        } catch {
            diagnostics.append(
                ScriptDiagnostic("cannot parse: \(error)", at: SourceLocation(file: file, line: 1, column: 1)))
            return nil
        }
    }

    func diagnostic(for error: YamlError, file: String) -> ScriptDiagnostic {
        func at(_ mark: Mark) -> SourceLocation { SourceLocation(file: file, line: mark.line, column: mark.column) }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let what = context.map { "\($0.text): " } ?? ""
            return ScriptDiagnostic("YAML syntax error: \(what)\(problem)", at: at(mark))
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ScriptDiagnostic(
                "duplicate key \(duplicates.joined(separator: ", ")) in a mapping", at: at(context.mark))
        case .reader(let problem, _, _, _):
            return ScriptDiagnostic(
                "cannot read the script as UTF-8 text: \(problem)", at: SourceLocation(file: file, line: 1, column: 1))
        default:
            return ScriptDiagnostic("YAML error: \(error)", at: SourceLocation(file: file, line: 1, column: 1))
        }
    }

    // MARK: Typed access

    /// The entries of a mapping, rejecting keys outside `allowed`.
    mutating func entries(_ node: Node, allowed: [String]?, what: String) -> [(key: String, keyNode: Node, value: Node)] {
        guard let mapping = node.mapping else {
            error("\(what) must be a mapping (key: value)", at: node)
            return []
        }
        var out: [(String, Node, Node)] = []
        for (k, v) in mapping {
            guard let key = k.scalar?.string else {
                error("\(what): keys must be plain names", at: k)
                continue
            }
            if let allowed, !allowed.contains(key) {
                error("unknown key '\(key)' in \(what); expected one of: \(allowed.joined(separator: ", "))", at: k)
                continue
            }
            out.append((key, k, v))
        }
        return out
    }

    mutating func fields(_ node: Node, allowed: [String], what: String) -> [String: Node] {
        Dictionary(entries(node, allowed: allowed, what: what).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    }

    /// The scalar text of a node, with `$name` parameters substituted. The returned
    /// suffix explains where a substituted value came from, for error messages.
    mutating func scalar(_ node: Node, what: String) -> (text: String, origin: String)? {
        guard let raw = node.scalar?.string else {
            error("\(what) must be a single value, not a list or mapping", at: node)
            return nil
        }
        guard raw.hasPrefix("$") else { return (raw, "") }
        let name = raw.dropFirst().trimmingCharacters(in: CharacterSet(charactersIn: "{}"))
        guard let p = parameters[name] else {
            let known = parameters.keys.sorted()
            error(
                "unknown parameter '\(name)'"
                    + (known.isEmpty ? "; declare it under 'parameters:'" : "; declared: \(known.joined(separator: ", "))"),
                at: node)
            return nil
        }
        let origin = p.overridden ? " (parameter '\(name)' = '\(p.text)' from --set)" : " (parameter '\(name)' = '\(p.text)')"
        return (p.text, origin)
    }

    mutating func string(_ node: Node?, what: String) -> String? {
        guard let node, let (s, _) = scalar(node, what: what) else { return nil }
        guard !s.isEmpty else {
            error("\(what) must not be empty", at: node)
            return nil
        }
        return s
    }

    mutating func quantity(_ node: Node?, _ dimension: PhysicalDimension, what: String) -> Quantity? {
        guard let node, let (text, origin) = scalar(node, what: what) else { return nil }
        guard let q = Quantity.parse(text) else {
            error("\(what) must be a \(dimension) with a unit (\(Unit.examples(for: dimension))), got '\(text)'\(origin)", at: node)
            return nil
        }
        guard q.dimension == dimension else {
            error(
                "\(what): expected a \(dimension) (\(Unit.examples(for: dimension))), got a \(q.dimension) ('\(text)')\(origin)",
                at: node)
            return nil
        }
        return q
    }

    mutating func duration(_ node: Node?, what: String, allowZero: Bool = true) -> Duration? {
        guard let q = quantity(node, .time, what: what) else { return nil }
        guard q.value >= 0, q.value < 1e7, allowZero || q.value > 0 else {
            error("\(what) must be \(allowZero ? "between 0 s" : "more than 0 s") and 10⁷ s, got \(q)", at: node)
            return nil
        }
        return .nanoseconds(Int64((q.value * 1e9).rounded()))
    }

    mutating func integer(_ node: Node?, what: String, range: ClosedRange<Int>) -> Int? {
        guard let node, let (text, origin) = scalar(node, what: what) else { return nil }
        guard let v = Int(text), range.contains(v) else {
            error("\(what) must be a whole number from \(range.lowerBound) to \(range.upperBound), got '\(text)'\(origin)", at: node)
            return nil
        }
        return v
    }

    /// Parses a value for a declared property; reports type, dimension and range problems.
    mutating func value(_ node: Node, for spec: PropertySpec, what: String) -> Value? {
        guard let (text, origin) = scalar(node, what: what) else { return nil }
        guard let parsed = Self.parseValue(text, as: spec.type) else {
            error("\(what): expected \(spec.type), got '\(text)'\(origin)", at: node)
            return nil
        }
        if let problem = spec.problem(with: parsed) {
            error("\(what): \(problem)\(origin)", at: node)
            return nil
        }
        return parsed
    }

    static func parseValue(_ text: String, as type: PropertyType) -> Value? {
        switch type {
        case .bool:
            switch text.lowercased() {
            case "true", "yes", "on": return .bool(true)
            case "false", "no", "off": return .bool(false)
            default: return nil
            }
        case .quantity: return Quantity.parse(text).map(Value.quantity)
        case .choice, .text: return .text(text)
        }
    }

    // MARK: Top level

    mutating func compileTop(_ root: Node, text: String, overrides: [String: String]) -> CompiledScript? {
        guard root.mapping != nil else {
            error("a script is a YAML mapping with 'devices:' and 'steps:'", at: root)
            return nil
        }
        let byKey = fields(
            root,
            allowed: [
                "herald", "name", "description", "parameters", "include", "sequences", "simulation", "devices",
                "interlocks", "steps",
            ], what: "the script")
        if let version = byKey["herald"], integer(version, what: "'herald' (script format version)", range: 1...1) == nil {
            error("this Herald reads script format version 1", at: version)
        }
        let name = byKey["name"].flatMap { string($0, what: "name") }
            ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        let description = byKey["description"]?.scalar?.string ?? ""

        if let node = byKey["parameters"] {
            for p in entries(node, allowed: nil, what: "parameters") {
                guard let text = p.value.scalar?.string else {
                    error("parameter '\(p.key)' must be a single value, e.g. 1 s or 10 mW", at: p.value)
                    continue
                }
                parameters[p.key] = Parameter(text: text, node: p.value, file: file, overridden: false)
            }
        }
        applyOverrides(overrides)

        if let node = byKey["include"] { compileIncludes(node) }
        if let node = byKey["sequences"] { registerSequences(node) }

        var simulation: [String: Value] = [:]
        var faults: [(text: String, device: String, kind: String?, node: Node)] = []
        if let sim = byKey["simulation"] {
            let allowed = simulationSpecs.map(\.name) + (faultParser == nil ? [] : ["faults"])
            for entry in entries(sim, allowed: allowed, what: "simulation") {
                if entry.key == "faults", let faultParser {
                    guard let items = entry.value.sequence else {
                        error("simulation.faults is a list of 'DEVICE KIND [at TIME]' entries", at: entry.value)
                        continue
                    }
                    for item in items {
                        guard let (text, origin) = scalar(item, what: "a fault") else { continue }
                        let parsed = faultParser(text)
                        if let problem = parsed.problem {
                            error(problem + origin, at: item)
                        } else if let device = parsed.device {
                            faults.append((text, device, parsed.kind, item))
                        }
                    }
                    continue
                }
                guard let spec = simulationSpecs.first(where: { $0.name == entry.key }) else { continue }
                if let v = value(entry.value, for: spec, what: "simulation.\(entry.key)") {
                    if let problem = simulationCheck(entry.key, v) {
                        error("simulation.\(entry.key): \(problem)", at: entry.value)
                    } else {
                        simulation[entry.key] = v
                    }
                }
            }
        }

        var configs: [DeviceConfig] = []
        if let devicesNode = byKey["devices"] {
            for entry in entries(devicesNode, allowed: nil, what: "devices") {
                if let config = compileDevice(entry.key, entry.value, keyNode: entry.keyNode) { configs.append(config) }
            }
        } else {
            error("the script declares no 'devices:'", at: root)
        }

        var interlocks: [Interlock] = []
        if let node = byKey["interlocks"] { interlocks = compileInterlocks(node) }

        var steps: [PlanStep] = []
        if let stepsNode = byKey["steps"] {
            steps = compileSteps(stepsNode)
        } else {
            error("the script has no 'steps:'", at: root)
        }
        for fault in faults {
            if let problem = registry.faultTargetProblem(device: fault.device, kind: fault.kind, in: configs) { error(problem, at: fault.node) }
        }
        var plan = Plan(name: name, scriptPath: file, scriptText: text, devices: configs, steps: steps)
        plan.parameters = parameters.mapValues(\.text)
        plan.interlocks = interlocks
        plan.includedFiles = includedFiles
        var compiled = CompiledScript(plan: plan, simulation: simulation, description: description)
        compiled.faults = faults.map(\.text)
        return compiled
    }

    /// `--set name=value`: only declared parameters, and only with the declared dimension.
    mutating func applyOverrides(_ overrides: [String: String]) {
        for (name, text) in overrides.sorted(by: { $0.key < $1.key }) {
            let here = SourceLocation(file: "--set \(name)=\(text)", line: 1, column: 1)
            guard var p = parameters[name] else {
                let known = parameters.keys.sorted()
                diagnostics.append(
                    ScriptDiagnostic(
                        "--set: the script has no parameter '\(name)'"
                            + (known.isEmpty ? "" : "; its parameters: \(known.joined(separator: ", "))"), at: here))
                continue
            }
            if let old = Quantity.parse(p.text) {
                guard let new = Quantity.parse(text) else {
                    diagnostics.append(
                        ScriptDiagnostic("--set \(name): '\(text)' is not a \(old.dimension) with a unit (\(Unit.examples(for: old.dimension)))", at: here))
                    continue
                }
                guard new.dimension == old.dimension else {
                    diagnostics.append(
                        ScriptDiagnostic(
                            "--set \(name): expected a \(old.dimension) like the script's default '\(p.text)', got a \(new.dimension) ('\(text)')",
                            at: here))
                    continue
                }
            }
            p.text = text
            p.overridden = true
            parameters[name] = p
        }
    }

    mutating func compileIncludes(_ node: Node) {
        let list = node.sequence.map(Array.init) ?? [node]
        for item in list {
            guard let relative = string(item, what: "include") else { continue }
            // Relative to the including file, keeping the user's relative style in messages.
            let dir = (file as NSString).deletingLastPathComponent
            let path = relative.hasPrefix("/") || dir.isEmpty ? relative : dir + "/" + relative
            // Confined before anything is read: an include must not turn error messages into
            // a way of printing arbitrary files (`include: /etc/shadow`).
            guard let real = Context.resolved(path) else {
                error("cannot read included file '\(path)': no such file", at: item)
                continue
            }
            guard includeRoots.contains(where: { real == $0 || real.hasPrefix($0 == "/" ? "/" : $0 + "/") }) else {
                error(
                    "include '\(relative)' is outside the script's folder (\(includeRoots.first ?? ".")); scripts include files "
                        + "from their own folder and below, or from a folder given with --include-dir", at: item)
                continue
            }
            guard let text = try? String(contentsOfFile: real, encoding: .utf8) else {
                error("cannot read included file '\(path)'", at: item)
                continue
            }
            includedFiles.append(IncludedFile(path: path, resolvedPath: real, text: text))
            guard let included = parse(text: text, file: path) else { continue }
            let saved = file
            file = path
            let byKey = fields(included, allowed: ["sequences"], what: "an included file (it holds only 'sequences:')")
            if let seqs = byKey["sequences"] { registerSequences(seqs) }
            file = saved
        }
    }

    /// The absolute path with symbolic links and `..` resolved, or nil if it does not exist.
    static func resolved(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    mutating func registerSequences(_ node: Node) {
        for s in entries(node, allowed: nil, what: "sequences") {
            if sequences[s.key] != nil { error("sequence '\(s.key)' is defined twice", at: s.keyNode) }
            sequences[s.key] = (file, s.value)
        }
    }

    mutating func compileDevice(_ name: String, _ node: Node, keyNode: Node) -> DeviceConfig? {
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
            error("device name '\(name)' may contain only letters, digits, '_' and '-'", at: keyNode)
            return nil
        }
        let byKey = fields(
            node, allowed: ["driver", "match", "settings", "limits", "safe", "timeout", "retries"], what: "device '\(name)'")
        guard let driverNode = byKey["driver"] else {
            error("device '\(name)' needs a 'driver:' (see `herald drivers`)", at: node)
            return nil
        }
        guard let driverID = string(driverNode, what: "driver") else { return nil }
        guard var entry = registry.entry(driverID) else {
            let known = registry.descriptors.map(\.id).joined(separator: ", ")
            error("unknown driver '\(driverID)' for device '\(name)'; known drivers: \(known)", at: driverNode)
            return nil
        }
        var descriptor = entry.descriptor
        var settings: [String: Value] = [:]
        if let settingsNode = byKey["settings"] {
            for s in entries(settingsNode, allowed: nil, what: "settings of '\(name)'") {
                guard let spec = descriptor.setting(s.key) else {
                    let known = descriptor.settings.map(\.name)
                    error(
                        "driver '\(driverID)' has no setting '\(s.key)'"
                            + (known.isEmpty ? "" : "; it accepts: \(known.joined(separator: ", "))"), at: s.keyNode)
                    continue
                }
                if let v = value(s.value, for: spec, what: "\(name).\(s.key)") { settings[s.key] = v }
            }
        }
        for spec in descriptor.settings where settings[spec.name] == nil {
            if case .choice = spec.type { error("device '\(name)' needs setting '\(spec.name)' (\(spec.type))", at: node) }
        }
        // limits: {power: {max: 20 mW}} narrows the driver's range; it never widens it.
        if let limitsNode = byKey["limits"] {
            for l in entries(limitsNode, allowed: nil, what: "limits of '\(name)'") {
                guard let index = descriptor.properties.firstIndex(where: { $0.name == l.key }),
                    case .quantity(let dim) = descriptor.properties[index].type
                else {
                    error("'\(l.key)' is not a numeric property of driver '\(driverID)'", at: l.keyNode)
                    continue
                }
                let bounds = fields(l.value, allowed: ["min", "max"], what: "limits of \(name).\(l.key)")
                let range = descriptor.properties[index].range ?? -Double.infinity...Double.infinity
                var lo = range.lowerBound, hi = range.upperBound
                if let q = quantity(bounds["min"], dim, what: "\(name).\(l.key) min") { lo = max(lo, q.value) }
                if let q = quantity(bounds["max"], dim, what: "\(name).\(l.key) max") { hi = min(hi, q.value) }
                if lo > hi {
                    error("limits of \(name).\(l.key) leave no allowed value (driver range \(range))", at: l.value)
                } else {
                    descriptor.properties[index].range = lo...hi
                }
            }
        }
        devices[name] = descriptor
        var safe: [Assignment] = []
        if let safeNode = byKey["safe"] {
            for s in entries(safeNode, allowed: nil, what: "safe state of '\(name)'") {
                if let a = assignment(target: "\(name).\(s.key)", keyNode: s.keyNode, valueNode: s.value) { safe.append(a) }
            }
        }
        let timeout = byKey["timeout"].flatMap { duration($0, what: "\(name).timeout", allowZero: false) }
            ?? DeviceConfig.defaultCallTimeout
        let retries = byKey["retries"].flatMap { integer($0, what: "\(name).retries", range: 0...10) }
            ?? DeviceConfig.defaultRetries
        // --mock swaps out hardware; drivers that touch none (replay) stay as they are.
        if mock && !entry.descriptor.isMock && entry.descriptor.usesHardware {
            guard let replacement = registry.mock(for: entry.descriptor.kind) else {
                error("--mock: no simulated driver stands in for a \(entry.descriptor.kind.rawValue)", at: driverNode)
                return nil
            }
            entry = replacement
        }
        var config = DeviceConfig(
            name: name, driver: entry.descriptor.id, settings: settings, location: location(keyNode),
            properties: descriptor.properties, safeState: safe, callTimeout: timeout, retries: retries)
        if let matchNode = byKey["match"] {
            config.match = match(matchNode, device: name) ?? .any
            // Simulated drivers ignore `match:` (a script written for hardware runs with --mock).
            if !entry.descriptor.isMock && !entry.descriptor.matchedBy.contains(config.match.kind) {
                error(
                    "driver \(entry.descriptor.id) finds its instrument by "
                        + entry.descriptor.matchedBy.sorted().map(\.rawValue).joined(separator: " or ")
                        + ", not by \(config.match.kind.rawValue)", at: matchNode)
            }
        }
        return config
    }

    /// `match: {usb: {vendor: 0x1313, product: 0x804a, serial: M001}}` or `match: {file: path}`.
    mutating func match(_ node: Node, device: String) -> DeviceMatch? {
        let byKey = fields(node, allowed: ["usb", "file"], what: "match of '\(device)'")
        if let usb = byKey["usb"] {
            let ids = fields(usb, allowed: ["vendor", "product", "serial"], what: "usb match of '\(device)'")
            func hex(_ key: String) -> UInt16? {
                guard let n = ids[key] else {
                    error("usb match of '\(device)' needs '\(key)' (hexadecimal, as lsusb prints it)", at: usb)
                    return nil
                }
                guard let text = string(n, what: key) else { return nil }
                let digits = text.lowercased().hasPrefix("0x") ? String(text.dropFirst(2)) : text
                guard let v = UInt16(digits, radix: 16) else {
                    error("\(key) must be a 4-digit hexadecimal USB id like 0x1313, got '\(text)'", at: n)
                    return nil
                }
                return v
            }
            let vendor = hex("vendor"), product = hex("product")
            let serial = ids["serial"].flatMap { string($0, what: "serial") }
            guard let vendor, let product else { return nil }
            return .usb(vendor: vendor, product: product, serial: serial)
        }
        if let f = byKey["file"], let path = string(f, what: "file") { return .file(path) }
        if byKey.isEmpty { error("match needs 'usb' or 'file'", at: node) }
        return nil
    }

    mutating func compileInterlocks(_ node: Node) -> [Interlock] {
        guard let list = node.sequence else {
            error("'interlocks' must be a list of {name, require, timeout}", at: node)
            return []
        }
        var out: [Interlock] = []
        for item in list {
            let byKey = fields(item, allowed: ["name", "require", "timeout"], what: "an interlock")
            guard let requireNode = byKey["require"] else {
                error("an interlock needs 'require: device.property OP value' (what must hold while acquiring)", at: item)
                continue
            }
            guard let condition = condition(requireNode) else { continue }
            let name = byKey["name"].flatMap { string($0, what: "interlock name") } ?? condition.description
            let timeout = byKey["timeout"].flatMap { duration($0, what: "interlock timeout", allowZero: false) } ?? .seconds(60)
            out.append(Interlock(name: name, condition: condition, timeout: timeout, location: location(requireNode)))
        }
        return out
    }

    /// `device.property OP value`, with the value parsed as the property's type.
    mutating func condition(_ node: Node) -> Condition? {
        guard let (text, origin) = scalar(node, what: "condition") else { return nil }
        guard let (target, comparison, rawValue) = Condition.split(text) else {
            error("a condition reads 'device.property OP value' with OP one of == != < <= > >=, got '\(text)'\(origin)", at: node)
            return nil
        }
        guard let (device, spec) = resolveProperty(target, at: node, needSettable: false) else { return nil }
        var valueText = rawValue
        if valueText.hasPrefix("$"), let p = parameters[String(valueText.dropFirst())] { valueText = p.text }
        guard let value = Self.parseValue(valueText, as: spec.type) else {
            error("condition '\(text)': expected \(spec.type) after \(comparison.rawValue), got '\(valueText)'", at: node)
            return nil
        }
        if case .quantity(let dim) = spec.type, value.quantity?.dimension != dim {
            error("condition '\(text)': \(target) is a \(dim), compared with '\(valueText)'", at: node)
            return nil
        }
        if case .quantity = spec.type {} else if comparison != .equal && comparison != .notEqual {
            error("condition '\(text)': \(target) can only be compared with == or !=", at: node)
            return nil
        }
        return Condition(device: device, property: spec.name, comparison: comparison, value: value)
    }

    // MARK: Steps

    static let stepKinds = ["set", "wait", "acquire", "sweep", "run", "tomography", "chsh", "g2", "rates", "coincidences"]

    mutating func compileSteps(_ node: Node) -> [PlanStep] {
        guard let sequence = node.sequence else {
            error("'steps' must be a list (each item starts with '- ')", at: node)
            return []
        }
        var out: [PlanStep] = []
        for item in sequence {
            let stepFields = entries(item, allowed: nil, what: "a step")
            guard stepFields.count == 1, let step = stepFields.first else {
                if !stepFields.isEmpty {
                    error("a step has exactly one kind (\(Self.stepKinds.joined(separator: ", ")))", at: item)
                }
                continue
            }
            out.append(contentsOf: compileStep(step.key, step.value, keyNode: step.keyNode))
        }
        return out
    }

    mutating func compileStep(_ kind: String, _ node: Node, keyNode: Node) -> [PlanStep] {
        switch kind {
        case "set":
            return [.set(compileAssignments(node))]
        case "wait":
            if node.mapping != nil {
                let byKey = fields(node, allowed: ["until", "timeout", "poll"], what: "wait")
                guard let untilNode = byKey["until"], let timeoutNode = byKey["timeout"] else {
                    error("a conditional wait needs 'until' and 'timeout' (a wait that cannot end is a hang)", at: node)
                    return []
                }
                let c = condition(untilNode)
                let timeout = duration(timeoutNode, what: "wait.timeout", allowZero: false)
                let poll = byKey["poll"].flatMap { duration($0, what: "wait.poll", allowZero: false) } ?? .milliseconds(100)
                guard let c, let timeout else { return [] }
                return [.waitUntil(c, timeout: timeout, poll: poll, location: location(keyNode))]
            }
            guard let d = duration(node, what: "wait") else { return [] }
            return [.wait(d, location: location(node))]
        case "acquire":
            let byKey = fields(node, allowed: ["device", "duration", "name"], what: "acquire")
            guard let deviceNode = byKey["device"], let durationNode = byKey["duration"] else {
                error("acquire needs 'device' and 'duration'", at: node)
                return []
            }
            let device = string(deviceNode, what: "acquire.device")
            let d = duration(durationNode, what: "acquire.duration", allowZero: false)
            let name = byKey["name"].flatMap { string($0, what: "acquire.name") }
            guard let device, let d else { return [] }
            guard let descriptor = devices[device] else {
                error("unknown device '\(device)'; declared devices: \(devices.keys.sorted().joined(separator: ", "))", at: deviceNode)
                return []
            }
            guard descriptor.kind == .timeTagger else {
                error("'\(device)' is a \(descriptor.kind.rawValue); acquire needs a time-tagger", at: deviceNode)
                return []
            }
            if let name, let n = byKey["name"] { defineDataset(name, .single, at: n) }
            return [.acquire(device: device, duration: d, name: name, location: location(keyNode))]
        case "sweep":
            return compileSweep(node).map { [$0] } ?? []
        case "run":
            guard let name = string(node, what: "run") else { return [] }
            guard let seq = sequences[name] else {
                let known = sequences.keys.sorted()
                error("unknown sequence '\(name)'" + (known.isEmpty ? "; define it under 'sequences:' or include a file that does" : "; known: \(known.joined(separator: ", "))"), at: node)
                return []
            }
            guard !expanding.contains(name) else {
                error("sequence '\(name)' runs itself (\((expanding + [name]).joined(separator: " → ")))", at: node)
                return []
            }
            expanding.append(name)
            let saved = file
            file = seq.file
            let steps = compileSteps(seq.node)
            file = saved
            expanding.removeLast()
            return steps
        case "tomography", "chsh", "g2", "rates", "coincidences":
            // `coincidences` is `rates` by its other name: singles and pair rates per point.
            return compileAnalysis(kind == "coincidences" ? "rates" : kind, node, keyNode: keyNode).map { [.analysis($0, location: location(keyNode))] } ?? []
        default:
            error("unknown step '\(kind)'; expected one of: \(Self.stepKinds.joined(separator: ", "))", at: keyNode)
            return []
        }
    }

    mutating func defineDataset(_ name: String, _ kind: DatasetKind, at node: Node) {
        if datasets[name] != nil { error("a sweep or acquisition named '\(name)' is already defined", at: node) }
        datasets[name] = kind
        datasetDepth[name] = openSweeps.count
    }

    /// `device.property: value` pairs.
    mutating func compileAssignments(_ node: Node) -> [Assignment] {
        var out: [Assignment] = []
        for entry in entries(node, allowed: nil, what: "set") {
            if let a = assignment(target: entry.key, keyNode: entry.keyNode, valueNode: entry.value) { out.append(a) }
        }
        return out
    }

    mutating func resolveProperty(_ target: String, at node: Node, needSettable: Bool = true) -> (String, PropertySpec)? {
        let parts = target.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else {
            error("'\(target)' must name a device and a property, like pump.power", at: node)
            return nil
        }
        guard let descriptor = devices[parts[0]] else {
            error("unknown device '\(parts[0])'; declared devices: \(devices.keys.sorted().joined(separator: ", "))", at: node)
            return nil
        }
        guard let spec = descriptor.property(parts[1]) else {
            let known = descriptor.properties.filter { $0.settable || !needSettable }.map(\.name)
            error(
                "unknown property '\(parts[1])' of device '\(parts[0])' (driver \(descriptor.id)); \(needSettable ? "settable " : "")properties: "
                    + (known.isEmpty ? "none" : known.joined(separator: ", ")), at: node)
            return nil
        }
        guard spec.settable || !needSettable else {
            error("property '\(parts[1])' of device '\(parts[0])' is read-only", at: node)
            return nil
        }
        return (parts[0], spec)
    }

    mutating func assignment(target: String, keyNode: Node, valueNode: Node) -> Assignment? {
        guard let (device, spec) = resolveProperty(target, at: keyNode) else { return nil }
        guard let v = value(valueNode, for: spec, what: target) else { return nil }
        return Assignment(device: device, property: spec.name, value: v, location: location(valueNode))
    }

    mutating func analyzerMounts(_ node: Node?, at sweepNode: Node) -> (a: (qwp: String, hwp: String), b: (qwp: String, hwp: String))? {
        guard let analyzersNode = node else {
            error("this sweep needs 'analyzers' (the qwp and hwp mount of arms a and b)", at: sweepNode)
            return nil
        }
        var mounts: [String: (qwp: String, hwp: String)] = [:]
        let before = diagnostics.count
        for arm in entries(analyzersNode, allowed: ["a", "b"], what: "analyzers") {
            let plates = entries(arm.value, allowed: ["qwp", "hwp"], what: "analyzer \(arm.key)")
            var qwp: String?, hwp: String?
            for p in plates {
                guard let device = string(p.value, what: "analyzer \(arm.key).\(p.key)") else { continue }
                guard resolveProperty(device + ".angle", at: p.value) != nil else { continue }
                if p.key == "qwp" { qwp = device } else { hwp = device }
            }
            if let qwp, let hwp { mounts[arm.key] = (qwp, hwp) } else if !plates.isEmpty {
                error("analyzer \(arm.key) needs both 'qwp' and 'hwp' mounts", at: arm.value)
            }
        }
        guard let a = mounts["a"], let b = mounts["b"] else {
            if diagnostics.count == before { error("analyzers needs arms 'a' and 'b'", at: analyzersNode) }
            return nil
        }
        return (a, b)
    }

    static func angles(_ mounts: (a: (qwp: String, hwp: String), b: (qwp: String, hwp: String)), qa: Double, ha: Double, qb: Double, hb: Double) -> [Assignment] {
        [
            Assignment(device: mounts.a.qwp, property: "angle", value: .quantity(.degrees(qa))),
            Assignment(device: mounts.a.hwp, property: "angle", value: .quantity(.degrees(ha))),
            Assignment(device: mounts.b.qwp, property: "angle", value: .quantity(.degrees(qb))),
            Assignment(device: mounts.b.hwp, property: "angle", value: .quantity(.degrees(hb))),
        ]
    }

    mutating func compileSweep(_ node: Node) -> PlanStep? {
        let byKey = fields(node, allowed: ["name", "basis", "analyzers", "set", "values", "range", "steps"], what: "sweep")
        guard let nameNode = byKey["name"], let name = string(nameNode, what: "sweep.name") else {
            error("a sweep needs a 'name' (it labels the sweep table in the output)", at: node)
            return nil
        }
        var points: [SweepPoint] = []
        var kind = DatasetKind.values
        if let basisNode = byKey["basis"] {
            guard let basisName = string(basisNode, what: "sweep.basis") else { return nil }
            if basisName == "chsh" {
                guard let mounts = analyzerMounts(byKey["analyzers"], at: node) else { return nil }
                // A linear analyzer at θ: HWP at θ/2 turns θ onto the PBS's H axis, and the QWP
                // in front, with its fast axis along θ, leaves that linear state unchanged.
                for (a, b) in CHSHSettings.angles {
                    points.append(
                        SweepPoint(label: "a\(a)_b\(b)", assignments: Self.angles(mounts, qa: a, ha: a / 2, qb: b, hb: b / 2)))
                }
                kind = .chsh
            } else {
                guard let basis = TomographyBasisSet(rawValue: basisName) else {
                    let known = (TomographyBasisSet.allCases.map(\.rawValue) + ["chsh"]).joined(separator: ", ")
                    error("unknown basis set '\(basisName)'; built-in sets: \(known)", at: basisNode)
                    return nil
                }
                guard let mounts = analyzerMounts(byKey["analyzers"], at: node) else { return nil }
                for (la, lb) in basis.settings {
                    let (qa, ha) = la.analyzerAngles, (qb, hb) = lb.analyzerAngles
                    points.append(
                        SweepPoint(
                            label: la.rawValue + lb.rawValue, assignments: Self.angles(mounts, qa: qa, ha: ha, qb: qb, hb: hb),
                            projection: (la, lb)))
                }
                kind = .tomography
            }
        } else if let setNode = byKey["set"] {
            guard let target = string(setNode, what: "sweep.set"),
                let (device, spec) = resolveProperty(target, at: setNode)
            else { return nil }
            var values: [(Value, Node)] = []
            if let valuesNode = byKey["values"] {
                guard let list = valuesNode.sequence, list.count > 0 else {
                    error("sweep.values must be a non-empty list", at: valuesNode)
                    return nil
                }
                for item in list {
                    if let v = value(item, for: spec, what: "sweep value of \(target)") { values.append((v, item)) }
                }
            } else if let rangeNode = byKey["range"] {
                guard case .quantity(let dim) = spec.type else {
                    error("range needs a numeric property; \(target) is \(spec.type)", at: rangeNode)
                    return nil
                }
                let r = fields(rangeNode, allowed: ["from", "to", "step", "points"], what: "sweep.range")
                guard let from = quantity(r["from"], dim, what: "range.from"), let to = quantity(r["to"], dim, what: "range.to") else {
                    if r["from"] == nil || r["to"] == nil { error("range needs 'from', 'to' and 'step' or 'points'", at: rangeNode) }
                    return nil
                }
                var grid: [Double] = []
                if let stepQ = quantity(r["step"], dim, what: "range.step") {
                    let span = to.value - from.value
                    guard stepQ.value != 0, span / stepQ.value >= 0, span / stepQ.value < 100_000 else {
                        error("range.step must be non-zero, point from 'from' towards 'to', and give at most 100 000 points", at: r["step"])
                        return nil
                    }
                    let n = Int((span / stepQ.value + 1e-9).rounded(.down))
                    grid = (0...n).map { from.value + Double($0) * stepQ.value }
                } else if let n = integer(r["points"], what: "range.points", range: 2...100_000) {
                    grid = (0..<n).map { from.value + (to.value - from.value) * Double($0) / Double(n - 1) }
                } else if r["step"] == nil && r["points"] == nil {
                    error("range needs 'step' or 'points'", at: rangeNode)
                }
                for x in grid {
                    let v = Value.quantity(Quantity(x, dim))
                    if let problem = spec.problem(with: v) {
                        error("range of \(target): \(problem)", at: rangeNode)
                        break
                    }
                    values.append((v, rangeNode))
                }
            } else {
                error("a sweep over \(target) needs 'values' or 'range'", at: node)
                return nil
            }
            for (v, item) in values {
                points.append(
                    SweepPoint(
                        label: v.description,
                        assignments: [Assignment(device: device, property: spec.name, value: v, location: location(item))],
                        value: v.quantity))
            }
        } else {
            error("a sweep needs either 'basis' + 'analyzers' or 'set' + 'values'/'range'", at: node)
            return nil
        }
        guard let bodyNode = byKey["steps"] else {
            error("a sweep needs 'steps' to run at each point", at: node)
            return nil
        }
        defineDataset(name, kind, at: nameNode)
        openSweeps.append(name)
        let body = compileSteps(bodyNode)
        openSweeps.removeLast()
        return .sweep(Sweep(name: name, points: points, body: body))
    }

    mutating func arms(_ node: Node?, at parent: Node, needReflect: Bool) -> (ArmChannels, ArmChannels)? {
        guard let node else {
            error("this analysis needs 'arms' (detector channels of arms a and b)", at: parent)
            return nil
        }
        var arms: [String: ArmChannels] = [:]
        for arm in entries(node, allowed: ["a", "b"], what: "arms") {
            let ports = fields(arm.value, allowed: ["pass", "reflect"], what: "arm \(arm.key)")
            let pass = integer(ports["pass"], what: "channel", range: 1...255)
            let reflect = integer(ports["reflect"], what: "channel", range: 1...255)
            guard let pass else {
                if ports["pass"] == nil { error("arm \(arm.key) needs the 'pass' channel (detector behind the transmitted port)", at: arm.value) }
                continue
            }
            if needReflect && reflect == nil {
                error("arm \(arm.key) needs the 'reflect' channel too: this analysis uses both PBS ports", at: arm.value)
                continue
            }
            arms[arm.key] = ArmChannels(pass: pass, reflect: reflect)
        }
        guard let a = arms["a"], let b = arms["b"] else {
            if arms.count == entries(node, allowed: nil, what: "arms").count { error("arms needs 'a' and 'b'", at: node) }
            return nil
        }
        return (a, b)
    }

    /// Per-channel delays in integer picoseconds, like the tags.
    mutating func delays(_ node: Node?) -> [Int: Int64] {
        guard let node else { return [:] }
        var out: [Int: Int64] = [:]
        for d in entries(node, allowed: nil, what: "delays") {
            guard let ch = Int(d.key), (1...255).contains(ch) else {
                error("delays are keyed by channel number (1–255)", at: d.keyNode)
                continue
            }
            guard let q = quantity(d.value, .time, what: "delay of channel \(ch)") else { continue }
            guard abs(q.value) < 1 else {
                error("a channel delay must be shorter than 1 s, got \(q)", at: d.value)
                continue
            }
            out[ch] = Int64(clampingRounded: q.value * 1e12)
        }
        return out
    }

    mutating func dataset(_ node: Node?, expect kinds: [DatasetKind], what: String, at parent: Node) -> String? {
        guard let node else {
            error("\(what) needs 'sweep' (the sweep or named acquisition it analyses)", at: parent)
            return nil
        }
        guard let name = string(node, what: "\(what).sweep") else { return nil }
        guard let kind = datasets[name] else {
            let known = datasets.keys.sorted()
            error("no sweep or named acquisition '\(name)' before this step" + (known.isEmpty ? "" : "; defined: \(known.joined(separator: ", "))"), at: node)
            return nil
        }
        guard kinds.contains(kind) else {
            let need: String
            switch kinds.first {
            case .tomography: need = "a tomography sweep (basis: tomography-16/36/9)"
            case .chsh: need = "a CHSH sweep (basis: chsh)"
            default: need = "a sweep or named acquisition"
            }
            error("\(what) needs \(need); '\(name)' is not one", at: node)
            return nil
        }
        // Analyses a run cannot compute are refused here, never left empty or pooled.
        if openSweeps.contains(name) {
            error(
                "'\(name)' is still running at this step, which is inside its own sweep; put the \(what) step after the sweep",
                at: node)
            return nil
        }
        if let depth = datasetDepth[name], depth > 1 {
            error(
                "'\(name)' runs inside \(depth) nested sweeps; an analysis is computed per point of the one sweep around its "
                    + "data set, so nest it at most one sweep deep", at: node)
            return nil
        }
        return name
    }

    /// One data set is counted once: every analysis of it must use the same window and delays.
    mutating func requireCounting(_ spec: CountingSpec, for dataset: String, at node: Node) {
        if let (existing, _) = countingByDataset[dataset] {
            if existing.windowPs != spec.windowPs || existing.delaysPs != spec.delaysPs {
                error("analyses of '\(dataset)' must share one coincidence window and delays (it is counted once)", at: node)
            }
            var merged = existing
            for p in spec.pairs where !merged.pairs.contains(p) { merged.pairs.append(p) }
            countingByDataset[dataset] = (merged, node)
        } else {
            countingByDataset[dataset] = (spec, node)
        }
    }

    mutating func compileAnalysis(_ kind: String, _ node: Node, keyNode: Node) -> AnalysisStep? {
        switch kind {
        case "tomography":
            let byKey = fields(
                node, allowed: ["sweep", "arms", "window", "delays", "target", "accidentals", "estimator", "errors"],
                what: "tomography")
            let sweep = dataset(byKey["sweep"], expect: [.tomography], what: "tomography", at: node)
            let arms = arms(byKey["arms"], at: node, needReflect: false)
            let window = windowValue(byKey["window"], at: node)
            let delays = delays(byKey["delays"])
            var target = BellState.phiPlus
            if let t = byKey["target"], let s = string(t, what: "target") {
                if let b = BellState(rawValue: s) { target = b } else {
                    error("target must be one of \(BellState.allCases.map(\.rawValue).joined(separator: ", "))", at: t)
                }
            }
            var subtract = false
            if let a = byKey["accidentals"], let s = string(a, what: "accidentals") {
                if ["keep", "subtract"].contains(s) { subtract = s == "subtract" } else { error("accidentals must be 'keep' or 'subtract'", at: a) }
            }
            guard let sweep, let (a, b) = arms, let window else { return nil }
            var spec = TomographySpec(sweep: sweep, armA: a, armB: b, windowPs: window, delaysPs: delays, target: target)
            spec.subtractAccidentals = subtract
            if let e = byKey["estimator"], let name = string(e, what: "estimator") {
                if let estimator = Estimator(rawValue: name) { spec.estimator = estimator } else {
                    error("estimator must be \(Estimator.allCases.map(\.rawValue).joined(separator: ", ")); got '\(name)'", at: e)
                }
            }
            if let e = byKey["errors"], let n = integer(e, what: "errors (Monte-Carlo resamples)", range: 0...100_000) {
                spec.monteCarlo = n
            }
            let step = AnalysisStep.tomography(spec)
            if let c = step.counting { requireCounting(c, for: sweep, at: keyNode) }
            return step
        case "chsh":
            let byKey = fields(node, allowed: ["sweep", "arms", "window", "delays"], what: "chsh")
            let sweep = dataset(byKey["sweep"], expect: [.chsh], what: "chsh", at: node)
            let arms = arms(byKey["arms"], at: node, needReflect: true)
            let window = windowValue(byKey["window"], at: node)
            let delays = delays(byKey["delays"])
            guard let sweep, let (a, b) = arms, let window, let ra = a.reflect, let rb = b.reflect else { return nil }
            let pairs = [ChannelPair(a.pass, b.pass), ChannelPair(a.pass, rb), ChannelPair(ra, b.pass), ChannelPair(ra, rb)]
            let counting = CountingSpec(pairs: pairs, windowPs: window, delaysPs: delays)
            requireCounting(counting, for: sweep, at: keyNode)
            return .chsh(dataset: sweep, armA: a, armB: b, counting: counting)
        case "g2":
            let byKey = fields(node, allowed: ["sweep", "herald", "signals", "window"], what: "g2")
            let data = dataset(byKey["sweep"], expect: [.single, .values, .tomography, .chsh], what: "g2", at: node)
            let herald = integer(byKey["herald"], what: "g2.herald", range: 1...255)
            var signals: (Int, Int)?
            if let s = byKey["signals"] {
                let list = s.sequence.map(Array.init) ?? []
                let channels = list.compactMap { integer($0, what: "signal channel", range: 1...255) }
                if channels.count == 2 && channels[0] != channels[1] { signals = (channels[0], channels[1]) } else {
                    error("g2.signals lists the two detectors behind the beam splitter, e.g. [3, 4]", at: s)
                }
            } else {
                error("g2 needs 'signals: [c1, c2]' (the two outputs of the beam splitter)", at: node)
            }
            if byKey["herald"] == nil { error("g2 needs 'herald' (the heralding detector's channel)", at: node) }
            let window = windowValue(byKey["window"], at: node)
            guard let data, let herald, let signals, let window else { return nil }
            let step = AnalysisStep.heraldedG2(dataset: data, herald: herald, signals: signals, windowPs: window)
            if let c = step.counting { requireCounting(c, for: data, at: keyNode) }
            return step
        case "rates":
            let byKey = fields(node, allowed: ["sweep", "pairs", "window", "delays"], what: "rates")
            let data = dataset(byKey["sweep"], expect: [.single, .values, .tomography, .chsh], what: "rates", at: node)
            var pairs: [ChannelPair] = []
            if let p = byKey["pairs"] {
                for item in p.sequence.map(Array.init) ?? [] {
                    let chans = (item.sequence.map(Array.init) ?? []).compactMap { integer($0, what: "channel", range: 1...255) }
                    if chans.count == 2 { pairs.append(ChannelPair(chans[0], chans[1])) } else {
                        error("each pair is two channels, e.g. [1, 3]", at: item)
                    }
                }
            }
            let window = byKey["window"].flatMap { windowValue($0, at: node) } ?? 1000  // 1 ns
            let delays = delays(byKey["delays"])
            guard let data else { return nil }
            let counting = CountingSpec(pairs: pairs, windowPs: window, delaysPs: delays)
            requireCounting(counting, for: data, at: keyNode)
            return .rates(dataset: data, counting: counting)
        default:
            return nil
        }
    }

    /// The full coincidence window in integer picoseconds, like the tags.
    mutating func windowValue(_ node: Node?, at parent: Node) -> Int64? {
        guard let node else {
            error("needs a coincidence 'window' (full width, e.g. 1 ns)", at: parent)
            return nil
        }
        guard let q = quantity(node, .time, what: "window") else { return nil }
        guard q.value >= 1e-12 && q.value < 1 else {
            error("the coincidence window must be between 1 ps and 1 s, got \(q)", at: node)
            return nil
        }
        return Int64(clampingRounded: q.value * 1e12)
    }
}
