import Foundation
import HeraldCore
import Yams

/// Turns a YAML experiment script into a validated `Plan`, with no device I/O.
///
/// Every problem is collected with its file:line:column and all of them are
/// reported together, so a user fixes a script in one pass, not one error at a time.
public struct ScriptCompiler: Sendable {
    public var registry: DriverRegistry
    /// What the `simulation:` block may contain (from the simulated lab).
    public var simulationSpecs: [PropertySpec]

    public init(registry: DriverRegistry, simulationSpecs: [PropertySpec] = []) {
        self.registry = registry
        self.simulationSpecs = simulationSpecs
    }

    /// Reads and compiles a script file.
    public func compile(path: String, mock: Bool = false) throws -> CompiledScript {
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
        return try compile(text: text, file: path, mock: mock)
    }

    /// Compiles script text; `file` is used in diagnostics only.
    public func compile(text: String, file: String, mock: Bool = false) throws -> CompiledScript {
        var context = Context(file: file, registry: registry, simulationSpecs: simulationSpecs, mock: mock)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ScriptErrors([context.diagnostic(for: error)])
        }
        guard let root, let top = root.mapping else {
            throw ScriptErrors([
                ScriptDiagnostic(
                    "a script is a YAML mapping with 'devices:' and 'steps:'",
                    at: context.location(root))
            ])
        }
        let result = context.compileTop(top, node: root, text: text)
        if !context.diagnostics.isEmpty { throw ScriptErrors(context.diagnostics) }
        guard let result else { throw ScriptErrors([ScriptDiagnostic("empty script", at: context.location(root))]) }
        return result
    }
}

/// A compiled script: the plan and the simulation parameters used if devices are mocks.
public struct CompiledScript: Sendable {
    public var plan: Plan
    public var simulation: [String: Value]
    public var description: String
}

struct Context {
    let file: String
    let registry: DriverRegistry
    let simulationSpecs: [PropertySpec]
    let mock: Bool
    var diagnostics: [ScriptDiagnostic] = []
    /// Devices declared so far, name → descriptor of the driver named in the script.
    var devices: [String: DriverDescriptor] = [:]
    /// Tomography sweeps defined so far, name → their points.
    var tomographySweeps: Set<String> = []

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

    func diagnostic(for error: YamlError) -> ScriptDiagnostic {
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

    // MARK: Helpers for typed access

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

    mutating func string(_ node: Node?, what: String) -> String? {
        guard let node else { return nil }
        guard let s = node.scalar?.string, !s.isEmpty else {
            error("\(what) must be a single word or text", at: node)
            return nil
        }
        return s
    }

    mutating func quantity(_ node: Node?, _ dimension: PhysicalDimension, what: String) -> Quantity? {
        guard let node else { return nil }
        guard let text = node.scalar?.string, let q = Quantity.parse(text) else {
            error("\(what) must be a \(dimension) with a unit (\(Unit.examples(for: dimension)))", at: node)
            return nil
        }
        guard q.dimension == dimension else {
            error("\(what): expected a \(dimension) (\(Unit.examples(for: dimension))), got a \(q.dimension) ('\(text)')", at: node)
            return nil
        }
        return q
    }

    mutating func duration(_ node: Node?, what: String) -> Duration? {
        guard let q = quantity(node, .time, what: what) else { return nil }
        guard q.value >= 0, q.value < 1e7 else {
            error("\(what) must be between 0 s and 10⁷ s, got \(q)", at: node)
            return nil
        }
        return .nanoseconds(Int64((q.value * 1e9).rounded()))
    }

    mutating func integer(_ node: Node?, what: String) -> Int? {
        guard let node else { return nil }
        guard let text = node.scalar?.string, let v = Int(text) else {
            error("\(what) must be a whole number", at: node)
            return nil
        }
        return v
    }

    /// Parses a value for a declared property; reports type, dimension and range problems.
    mutating func value(_ node: Node, for spec: PropertySpec, what: String) -> Value? {
        guard let text = node.scalar?.string else {
            error("\(what) must be a single value (\(spec.type))", at: node)
            return nil
        }
        let parsed: Value?
        switch spec.type {
        case .bool:
            switch text.lowercased() {
            case "true", "yes", "on": parsed = .bool(true)
            case "false", "no", "off": parsed = .bool(false)
            default: parsed = nil
            }
        case .quantity:
            parsed = Quantity.parse(text).map(Value.quantity)
        case .choice, .text:
            parsed = .text(text)
        }
        guard let parsed else {
            error("\(what): expected \(spec.type), got '\(text)'", at: node)
            return nil
        }
        if let problem = spec.problem(with: parsed) {
            error("\(what): \(problem)", at: node)
            return nil
        }
        return parsed
    }

    // MARK: Top level

    mutating func compileTop(_ top: Node.Mapping, node: Node, text: String) -> CompiledScript? {
        let fields = entries(
            node, allowed: ["herald", "name", "description", "simulation", "devices", "steps"], what: "the script")
        let byKey = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        if let version = byKey["herald"] {
            if integer(version, what: "'herald' (script format version)") != 1 {
                error("this Herald reads script format version 1", at: version)
            }
        }
        let name = byKey["name"].flatMap { string($0, what: "name") }
            ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        let description = byKey["description"]?.scalar?.string ?? ""

        var simulation: [String: Value] = [:]
        if let sim = byKey["simulation"] {
            for entry in entries(sim, allowed: simulationSpecs.map(\.name), what: "simulation") {
                guard let spec = simulationSpecs.first(where: { $0.name == entry.key }) else { continue }
                if let v = value(entry.value, for: spec, what: "simulation.\(entry.key)") { simulation[entry.key] = v }
            }
        }

        var configs: [DeviceConfig] = []
        if let devicesNode = byKey["devices"] {
            for entry in entries(devicesNode, allowed: nil, what: "devices") {
                if let config = compileDevice(entry.key, entry.value, keyNode: entry.keyNode) { configs.append(config) }
            }
        } else {
            error("the script declares no 'devices:'", at: node)
        }

        var steps: [PlanStep] = []
        if let stepsNode = byKey["steps"] {
            steps = compileSteps(stepsNode)
        } else {
            error("the script has no 'steps:'", at: node)
        }
        let plan = Plan(name: name, scriptPath: file, scriptText: text, devices: configs, steps: steps)
        return CompiledScript(plan: plan, simulation: simulation, description: description)
    }

    mutating func compileDevice(_ name: String, _ node: Node, keyNode: Node) -> DeviceConfig? {
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
            error("device name '\(name)' may contain only letters, digits, '_' and '-'", at: keyNode)
            return nil
        }
        let fields = entries(node, allowed: ["driver", "settings"], what: "device '\(name)'")
        let byKey = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
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
        var settings: [String: Value] = [:]
        if let settingsNode = byKey["settings"] {
            for s in entries(settingsNode, allowed: nil, what: "settings of '\(name)'") {
                guard let spec = entry.descriptor.setting(s.key) else {
                    let known = entry.descriptor.settings.map(\.name)
                    error(
                        "driver '\(driverID)' has no setting '\(s.key)'"
                            + (known.isEmpty ? "" : "; it accepts: \(known.joined(separator: ", "))"), at: s.keyNode)
                    continue
                }
                if let v = value(s.value, for: spec, what: "\(name).\(s.key)") { settings[s.key] = v }
            }
        }
        for spec in entry.descriptor.settings where settings[spec.name] == nil {
            if case .choice = spec.type {
                error("device '\(name)' needs setting '\(spec.name)' (\(spec.type))", at: node)
            }
        }
        devices[name] = entry.descriptor
        if mock && !entry.descriptor.isMock {
            guard let replacement = registry.mock(for: entry.descriptor.kind) else {
                error("--mock: no simulated driver stands in for a \(entry.descriptor.kind.rawValue)", at: driverNode)
                return nil
            }
            entry = replacement
        }
        return DeviceConfig(name: name, driver: entry.descriptor.id, settings: settings, location: location(keyNode))
    }

    // MARK: Steps

    mutating func compileSteps(_ node: Node) -> [PlanStep] {
        guard let sequence = node.sequence else {
            error("'steps' must be a list (each item starts with '- ')", at: node)
            return []
        }
        var out: [PlanStep] = []
        for item in sequence {
            let fields = entries(item, allowed: nil, what: "a step")
            guard fields.count == 1, let step = fields.first else {
                if !fields.isEmpty {
                    error("a step has exactly one kind (set, wait, acquire, sweep, tomography)", at: item)
                }
                continue
            }
            if let compiled = compileStep(step.key, step.value, keyNode: step.keyNode) { out.append(compiled) }
        }
        return out
    }

    mutating func compileStep(_ kind: String, _ node: Node, keyNode: Node) -> PlanStep? {
        switch kind {
        case "set":
            return .set(compileAssignments(node))
        case "wait":
            guard let d = duration(node, what: "wait") else { return nil }
            return .wait(d, location: location(node))
        case "acquire":
            let fields = entries(node, allowed: ["device", "duration"], what: "acquire")
            let byKey = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let deviceNode = byKey["device"], let durationNode = byKey["duration"] else {
                error("acquire needs 'device' and 'duration'", at: node)
                return nil
            }
            let device = string(deviceNode, what: "acquire.device")
            let d = duration(durationNode, what: "acquire.duration")
            guard let device, let d else { return nil }
            guard let descriptor = devices[device] else {
                error("unknown device '\(device)'; declared devices: \(devices.keys.sorted().joined(separator: ", "))", at: deviceNode)
                return nil
            }
            guard descriptor.kind == .timeTagger else {
                error("'\(device)' is a \(descriptor.kind.rawValue); acquire needs a time-tagger", at: deviceNode)
                return nil
            }
            return .acquire(device: device, duration: d, location: location(keyNode))
        case "sweep":
            return compileSweep(node)
        case "tomography":
            return compileTomography(node, keyNode: keyNode)
        default:
            error("unknown step '\(kind)'; expected one of: set, wait, acquire, sweep, tomography", at: keyNode)
            return nil
        }
    }

    /// `device.property: value` pairs.
    mutating func compileAssignments(_ node: Node) -> [Assignment] {
        var out: [Assignment] = []
        for entry in entries(node, allowed: nil, what: "set") {
            if let a = assignment(target: entry.key, keyNode: entry.keyNode, valueNode: entry.value) { out.append(a) }
        }
        return out
    }

    mutating func resolveProperty(_ target: String, at node: Node) -> (String, PropertySpec)? {
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
            let known = descriptor.properties.filter(\.settable).map(\.name)
            error(
                "unknown property '\(parts[1])' of device '\(parts[0])' (driver \(descriptor.id)); settable properties: "
                    + (known.isEmpty ? "none" : known.joined(separator: ", ")), at: node)
            return nil
        }
        guard spec.settable else {
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

    mutating func compileSweep(_ node: Node) -> PlanStep? {
        let fields = entries(node, allowed: ["name", "basis", "analyzers", "set", "values", "steps"], what: "sweep")
        let byKey = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let nameNode = byKey["name"], let name = string(nameNode, what: "sweep.name") else {
            error("a sweep needs a 'name' (it labels the sweep table in the output)", at: node)
            return nil
        }
        var points: [SweepPoint] = []
        if let basisNode = byKey["basis"] {
            guard let basisName = string(basisNode, what: "sweep.basis") else { return nil }
            guard let basis = TomographyBasisSet(rawValue: basisName) else {
                let known = TomographyBasisSet.allCases.map(\.rawValue).joined(separator: ", ")
                error("unknown basis set '\(basisName)'; built-in sets: \(known)", at: basisNode)
                return nil
            }
            guard let analyzersNode = byKey["analyzers"] else {
                error("a tomography sweep needs 'analyzers' (the qwp and hwp mount of arms a and b)", at: node)
                return nil
            }
            var mounts: [String: (qwp: String, hwp: String)] = [:]
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
                if diagnostics.isEmpty { error("analyzers needs arms 'a' and 'b'", at: analyzersNode) }
                return nil
            }
            for (la, lb) in basis.settings {
                let (qa, ha) = la.analyzerAngles, (qb, hb) = lb.analyzerAngles
                points.append(
                    SweepPoint(
                        label: la.rawValue + lb.rawValue,
                        assignments: [
                            Assignment(device: a.qwp, property: "angle", value: .quantity(.degrees(qa))),
                            Assignment(device: a.hwp, property: "angle", value: .quantity(.degrees(ha))),
                            Assignment(device: b.qwp, property: "angle", value: .quantity(.degrees(qb))),
                            Assignment(device: b.hwp, property: "angle", value: .quantity(.degrees(hb))),
                        ], projection: (la, lb)))
            }
            tomographySweeps.insert(name)
        } else if let setNode = byKey["set"], let valuesNode = byKey["values"] {
            guard let target = string(setNode, what: "sweep.set"),
                let (device, spec) = resolveProperty(target, at: setNode)
            else { return nil }
            guard let list = valuesNode.sequence, list.count > 0 else {
                error("sweep.values must be a non-empty list", at: valuesNode)
                return nil
            }
            for item in list {
                guard let v = value(item, for: spec, what: "sweep value of \(target)") else { continue }
                points.append(
                    SweepPoint(
                        label: v.description,
                        assignments: [Assignment(device: device, property: spec.name, value: v, location: location(item))]))
            }
        } else {
            error("a sweep needs either 'basis' + 'analyzers' (tomography) or 'set' + 'values'", at: node)
            return nil
        }
        guard let bodyNode = byKey["steps"] else {
            error("a sweep needs 'steps' to run at each point", at: node)
            return nil
        }
        let body = compileSteps(bodyNode)
        return .sweep(Sweep(name: name, points: points, body: body))
    }

    mutating func compileTomography(_ node: Node, keyNode: Node) -> PlanStep? {
        let fields = entries(
            node, allowed: ["sweep", "arms", "window", "delays", "target", "accidentals"], what: "tomography")
        let byKey = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let sweepNode = byKey["sweep"], let armsNode = byKey["arms"], let windowNode = byKey["window"] else {
            error("tomography needs 'sweep', 'arms' and 'window'", at: node)
            return nil
        }
        guard let sweep = string(sweepNode, what: "tomography.sweep") else { return nil }
        if !tomographySweeps.contains(sweep) {
            error("'\(sweep)' is not a tomography sweep defined earlier in the script", at: sweepNode)
        }
        var arms: [String: ArmChannels] = [:]
        for arm in entries(armsNode, allowed: ["a", "b"], what: "arms") {
            var pass: Int?, reflect: Int?
            for port in entries(arm.value, allowed: ["pass", "reflect"], what: "arm \(arm.key)") {
                guard let ch = integer(port.value, what: "channel"), (1...255).contains(ch) else {
                    error("a channel is a number from 1 to 255", at: port.value)
                    continue
                }
                if port.key == "pass" { pass = ch } else { reflect = ch }
            }
            if let pass { arms[arm.key] = ArmChannels(pass: pass, reflect: reflect) } else {
                error("arm \(arm.key) needs the 'pass' channel (detector behind the transmitted port)", at: arm.value)
            }
        }
        guard let window = quantity(windowNode, .time, what: "tomography.window") else { return nil }
        if window.value <= 0 { error("the coincidence window must be positive", at: windowNode) }
        var delays: [Int: Double] = [:]
        if let delaysNode = byKey["delays"] {
            for d in entries(delaysNode, allowed: nil, what: "delays") {
                guard let ch = Int(d.key) else {
                    error("delays are keyed by channel number", at: d.keyNode)
                    continue
                }
                if let q = quantity(d.value, .time, what: "delay of channel \(ch)") { delays[ch] = q.value }
            }
        }
        var target = "phi+"
        if let t = byKey["target"], let s = string(t, what: "target") {
            if ["phi+", "phi-", "psi+", "psi-"].contains(s) { target = s } else {
                error("target must be one of phi+, phi-, psi+, psi-", at: t)
            }
        }
        var accidentals = "keep"
        if let a = byKey["accidentals"], let s = string(a, what: "accidentals") {
            if ["keep", "subtract"].contains(s) { accidentals = s } else {
                error("accidentals must be 'keep' or 'subtract'", at: a)
            }
        }
        guard let a = arms["a"], let b = arms["b"] else {
            if !arms.isEmpty || diagnostics.isEmpty { error("tomography needs arms 'a' and 'b'", at: armsNode) }
            return nil
        }
        var spec = TomographySpec(sweep: sweep, armA: a, armB: b, window: window.value, delays: delays, target: target)
        spec.subtractAccidentals = accidentals == "subtract"
        return .tomography(spec, location: location(keyNode))
    }
}
