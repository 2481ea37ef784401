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
    /// What `simulation.network` may contain (nil: the lab simulates no network).
    public var networkSchema: NetworkSchema?
    /// What each node of the script serves (fetched by the runner); nil when the nodes were not
    /// contacted (with `--mock`, or before they were).
    public var nodeCatalogue: NodeCatalogue?
    /// Why a node could not be described, by node name, for its `nodes:` entry's diagnostic.
    public var nodeProblems: [String: String] = [:]
    /// Top-level keys a caller reads itself (a node config's `node`, `listen`, `tls`, `audit`),
    /// accepted and ignored; with them a file may have no steps.
    public var extraTopLevelKeys: [String] = []

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
        context.networkSchema = networkSchema
        context.nodeCatalogue = nodeCatalogue
        context.nodeProblems = nodeProblems
        context.extraTopLevelKeys = extraTopLevelKeys
        guard let root = context.parse(text: text, file: file) else { throw ScriptErrors(context.diagnostics) }
        let result = context.compileTop(root, text: text, overrides: overrides)
        if !context.diagnostics.isEmpty { throw ScriptErrors(context.diagnostics) }
        guard let result else { throw ScriptErrors([ScriptDiagnostic("empty script", at: context.location(root))]) }
        return result
    }
}

extension ScriptCompiler {
    /// The `nodes:` of a script, read before it is compiled so the runner can describe them
    /// (what they serve decides how the devices on them compile). Problems are left to the
    /// compile, which reports them at their places.
    public static func nodeAddresses(path: String) -> [NodeAddress] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let root = try? Yams.compose(yaml: text),
            let nodes = root.mapping?["nodes"]?.mapping
        else { return [] }
        return nodes.compactMap { key, value in
            guard let name = key.scalar?.string, let address = value.mapping?["address"]?.scalar?.string else { return nil }
            return NodeAddress.parse(name: name, address)
        }
    }
}

/// A compiled script: the plan and the simulation parameters used if devices are mocks.
public struct CompiledScript: Sendable {
    public var plan: Plan
    public var simulation: [String: Value]
    /// Faults to inject into simulated devices (`simulation.faults`), as written.
    public var faults: [String] = []
    public var description: String
    /// The simulated network (`simulation.network`), empty when the script has none.
    public var network = NetworkDescription()
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
    /// How many sweeps each data set runs inside (0: top level), and the innermost one.
    var datasetDepth: [String: Int] = [:]
    var datasetOuter: [String: String] = [:]
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
    /// `meta:` of the script and its included lab files.
    var metadata = RunMetadata()
    /// Channel delays from an included file (`herald calibrate-delays --out`): the delays of
    /// every analysis that gives none of its own.
    var includedDelays: [Int: Int64] = [:]
    /// Sweeps refused for an error of their own (their analyses are not refused again).
    var failedDatasets: Set<String> = []
    /// The taggers whose acquisitions make each data set (for its channel check).
    var datasetTaggers: [String: Set<String>] = [:]
    /// Sweep variables bound while a lockstep sweep's points are compiled (`$theta`).
    var variables: [String: Quantity] = [:]
    /// Devices described by included lab files, compiled only when the script names them.
    var labDevices: [String: (file: String, keyNode: Node, value: Node)] = [:]
    /// Counting spec already required of each data set by an analysis step.
    var countingByDataset: [String: (CountingSpec, Node)] = [:]
    var networkSchema: NetworkSchema?
    var nodeCatalogue: NodeCatalogue?
    var nodeProblems: [String: String] = [:]
    var extraTopLevelKeys: [String] = []
    /// The script's nodes (`nodes:`), by name.
    var nodes: [String: NodeAddress] = [:]
    /// The `clocks:` section, compiled before the steps that acquire with several taggers.
    var clocks: ClocksSpec?
    var hasClocksSection = false
    /// The simulated network, once `simulation:` is compiled.
    var network: NetworkDescription?
    /// The script's links (`links:`) and its `entangle` steps by data set.
    var links: [String: LinkConfig] = [:]
    var entangleSpecs: [String: EntangleSpec] = [:]

    enum DatasetKind: Equatable {
        case tomography, chsh, values, single, entanglement
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

    /// An error `offset` characters into a scalar's text (past its opening quote, if quoted).
    mutating func error(_ message: String, at node: Node, offset: Int) {
        var l = location(node)
        let quoted = node.scalar.map { $0.style == .singleQuoted || $0.style == .doubleQuoted } ?? false
        l.column += offset + (quoted ? 1 : 0)
        diagnostics.append(ScriptDiagnostic(message, at: l))
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
        // `$p0 + 2 mW`: arithmetic, evaluated where a quantity is read (``quantityText``).
        if Expression.looksLikeExpression(raw) { return (raw, "") }
        let name = raw.dropFirst().trimmingCharacters(in: CharacterSet(charactersIn: "{}"))
        if let v = variables[name] { return (Self.text(v), " (at $\(name) = \(v))") }
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

    /// A quantity as text that `Quantity.parse` reads back exactly.
    static func text(_ q: Quantity) -> String {
        q.dimension.siUnit.isEmpty ? "\(q.value)" : "\(q.value) \(q.dimension.siUnit)"
    }

    /// Evaluates an expression value against the parameters and the sweep variable of the
    /// point being compiled; an error lands on the column of the part that is wrong.
    mutating func expression(_ raw: String, at node: Node, what: String) -> (text: String, origin: String)? {
        let parsed: Expression
        switch Expression.parse(raw) {
        case .success(let e): parsed = e
        case .failure(let e):
            error("\(what): \(e.message) in '\(raw)'", at: node, offset: e.offset)
            return nil
        }
        var unresolved: String?
        let result = parsed.evaluate { name in
            if let v = variables[name] { return v }
            guard let p = parameters[name] else { return nil }
            guard let q = Quantity.parse(p.text) else {
                unresolved = "parameter '\(name)' = '\(p.text)' is not a quantity"
                return nil
            }
            return q
        }
        switch result {
        case .success(let q):
            let bound = variables.map { "$\($0.key) = \($0.value)" }.sorted().joined(separator: ", ")
            return (Self.text(q), " (\(raw) = \(q)" + (bound.isEmpty ? ")" : " at \(bound))"))
        case .failure(let e):
            error("\(what): \(unresolved ?? e.message) in '\(raw)'", at: node, offset: e.offset)
            return nil
        }
    }

    mutating func string(_ node: Node?, what: String) -> String? {
        guard let node, let (s, _) = scalar(node, what: what) else { return nil }
        guard !s.isEmpty else {
            error("\(what) must not be empty", at: node)
            return nil
        }
        return s
    }

    /// A quantity's text: as written, or an expression's value (`$theta / 2`) as text.
    mutating func quantityText(_ node: Node, what: String) -> (text: String, origin: String)? {
        guard let (text, origin) = scalar(node, what: what) else { return nil }
        if Quantity.parse(text) == nil, Expression.looksLikeExpression(text) { return expression(text, at: node, what: what) }
        return (text, origin)
    }

    mutating func quantity(_ node: Node?, _ dimension: PhysicalDimension, what: String) -> Quantity? {
        guard let node, let (text, origin) = quantityText(node, what: what) else { return nil }
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
        let read: (text: String, origin: String)?
        if case .quantity = spec.type { read = quantityText(node, what: what) } else { read = scalar(node, what: what) }
        guard let (text, origin) = read else { return nil }
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

    /// `meta: {operator: …, affiliation: …, sample: …, tags: [a, b], excitation_wavelength: 405 nm, …}`.
    mutating func compileMeta(_ node: Node) {
        for e in entries(node, allowed: nil, what: "meta") {
            let text: String
            if e.key == "tags", let list = e.value.sequence {
                text = list.compactMap { $0.scalar?.string }.joined(separator: ",")
            } else {
                guard let (t, _) = scalar(e.value, what: "meta.\(e.key)") else { continue }
                text = t
            }
            if let problem = metadata.apply(e.key, text) { error("meta: \(problem)", at: e.value) }
        }
    }

    mutating func compileTop(_ root: Node, text: String, overrides: [String: String]) -> CompiledScript? {
        guard root.mapping != nil else {
            error("a script is a YAML mapping with 'devices:' and 'steps:'", at: root)
            return nil
        }
        let byKey = fields(
            root,
            allowed: [
                "herald", "name", "description", "parameters", "include", "sequences", "simulation", "nodes", "devices",
                "links", "interlocks", "clocks", "steps", "meta",
            ] + extraTopLevelKeys, what: "the script")
        if let version = byKey["herald"], integer(version, what: "'herald' (script format version)", range: 1...1) == nil {
            error("this Herald reads script format version 1", at: version)
        }
        let name = byKey["name"].flatMap { string($0, what: "name") }
            ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        let description = byKey["description"]?.scalar?.string ?? ""

        if let node = byKey["parameters"] {
            for p in entries(node, allowed: nil, what: "parameters") {
                // The name is written as `$name` in the script and names a dataset in the run file.
                guard Self.isName(p.key) else {
                    error("parameter name '\(p.key)' may contain only letters, digits, '_' and '-'", at: p.keyNode)
                    continue
                }
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
        // The script's own meta: after its includes', so a script's operator beats the lab's.
        if let node = byKey["meta"] { compileMeta(node) }

        var simulation: [String: Value] = [:]
        var faults: [(text: String, device: String, kind: String?, node: Node)] = []
        if let sim = byKey["simulation"] {
            let allowed = simulationSpecs.map(\.name) + (faultParser == nil ? [] : ["faults"]) + (networkSchema == nil ? [] : ["network"])
            for entry in entries(sim, allowed: allowed, what: "simulation") {
                if entry.key == "network" {
                    network = compileNetwork(entry.value)
                    continue
                }
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

        if let n = byKey["nodes"] { compileNodes(n) }
        var configs: [DeviceConfig] = []
        var configNodes: [Node] = []
        if let devicesNode = byKey["devices"] {
            if let names = devicesNode.sequence {
                // `devices: [pump, qwp_a]`: the lab file's devices, as it describes them.
                for item in names {
                    guard let name = string(item, what: "a device name") else { continue }
                    if let config = compileLabDevice(name, override: nil, at: item) {
                        configs.append(config)
                        configNodes.append(item)
                    }
                }
            } else {
                for entry in entries(devicesNode, allowed: nil, what: "devices") {
                    let config: DeviceConfig?
                    if labDevices[entry.key] != nil {
                        config = compileLabDevice(entry.key, override: entry.value, at: entry.keyNode)
                    } else {
                        config = compileDevice(entry.key, entry.value, keyNode: entry.keyNode)
                    }
                    if let config {
                        configs.append(config)
                        configNodes.append(entry.keyNode)
                    }
                }
            }
        } else if !labDevices.isEmpty {
            error(
                "the script names none of the lab's devices: list those it uses under 'devices:' (the lab describes "
                    + labDevices.keys.sorted().joined(separator: ", ") + ")", at: root)
        } else {
            error("the script declares no 'devices:'", at: root)
        }
        checkNetworkDevices(configs, nodes: configNodes)
        if let node = byKey["links"] { compileLinks(node) }

        var interlocks: [Interlock] = []
        if let node = byKey["interlocks"] { interlocks = compileInterlocks(node) }
        if let node = byKey["clocks"] {
            hasClocksSection = true
            clocks = compileClocks(node)
        }

        var steps: [PlanStep] = []
        if let stepsNode = byKey["steps"] {
            steps = compileSteps(stepsNode)
        } else if extraTopLevelKeys.isEmpty {
            error("the script has no 'steps:'", at: root)
        }
        if clocks != nil {
            // An entangle step's analyser tags and heralds are not merged, nor replayed in the
            // order a recount of a run with clocks needs.
            func entangles(_ steps: [PlanStep]) -> Bool {
                steps.contains { step in
                    switch step {
                    case .entangle: return true
                    case .sweep(let s): return entangles(s.body)
                    default: return false
                    }
                }
            }
            if entangles(steps) {
                error("a script with clocks: cannot have entangle steps yet: run the heralded link and the several-tagger acquisitions as two scripts", at: byKey["clocks"])
            }
        }
        if let c = clocks, c.calibrations.isEmpty,
            let t = c.taggers.first(where: { if case .correlation = $0.tracking { return true } else { return false } })
        {
            error("clocks.taggers.\(t.name) is tracked by correlation: add a calibrate_clocks step before the first point", at: byKey["clocks"])
        }
        for fault in faults {
            if let problem = registry.faultTargetProblem(device: fault.device, kind: fault.kind, in: configs) { error(problem, at: fault.node) }
        }
        var plan = Plan(name: name, scriptPath: file, scriptText: text, devices: configs, steps: steps)
        plan.parameters = parameters.mapValues { ScriptParameter(text: $0.text) }
        plan.interlocks = interlocks
        plan.clocks = clocks
        plan.includedFiles = includedFiles
        plan.metadata = metadata
        plan.description = description
        if let network, !network.isEmpty { plan.network = network }
        plan.nodes = nodes.values.sorted { $0.name < $1.name }
        var compiled = CompiledScript(plan: plan, simulation: simulation, description: description)
        compiled.network = network ?? NetworkDescription()
        compiled.faults = faults.map(\.text)
        return compiled
    }

}
