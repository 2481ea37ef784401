import Foundation
import HeraldCore
import Yams

// Steps: the step list, each step kind, and the data sets (sweeps, named acquisitions) they define.
extension Context {
    static let stepKinds = [
        "set", "wait", "acquire", "record", "calibrate_clocks", "sweep", "run", "entangle", "tomography", "chsh", "g2", "rates", "coincidences", "correlation",
        "entanglement",
    ]

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
            let byKey = fields(node, allowed: ["device", "devices", "duration", "name"], what: "acquire")
            guard byKey["device"] != nil || byKey["devices"] != nil, let durationNode = byKey["duration"] else {
                error("acquire needs 'device' (or 'devices', taggers acquiring together) and 'duration'", at: node)
                return []
            }
            if byKey["device"] != nil, let both = byKey["devices"] {
                error("acquire takes 'device' or 'devices', not both", at: both)
                return []
            }
            // One tagger, or several started together (a list; the first is the points' time base).
            var deviceNodes: [Node] = []
            if let one = byKey["device"] {
                deviceNodes = [one]
            } else if let list = byKey["devices"] {
                guard let items = list.sequence.map(Array.init), !items.isEmpty else {
                    error("acquire.devices must be a list of time-taggers, e.g. [analyser, remote]", at: list)
                    return []
                }
                deviceNodes = items
            }
            let d = duration(durationNode, what: "acquire.duration", allowZero: false)
            let name = byKey["name"].flatMap { string($0, what: "acquire.name") }
            var names: [String] = []
            for deviceNode in deviceNodes {
                guard let device = string(deviceNode, what: "acquire.device") else { continue }
                guard let descriptor = devices[device] else {
                    error("unknown device '\(device)'; declared devices: \(devices.keys.sorted().joined(separator: ", "))", at: deviceNode)
                    continue
                }
                guard descriptor.kind == .timeTagger else {
                    error("'\(device)' is a \(descriptor.kind.rawValue); acquire needs a time-tagger", at: deviceNode)
                    continue
                }
                guard !names.contains(device) else {
                    error("'\(device)' is named twice in acquire.devices", at: deviceNode)
                    continue
                }
                names.append(device)
            }
            guard let d, names.count == deviceNodes.count else { return [] }
            if let clocks {
                // Every tagger of a run with clocks is placed in its time base; the reference
                // goes first, the time base of the points.
                for (device, n) in zip(names, deviceNodes) where !clocks.members.contains(device) {
                    error("'\(device)' is not in clocks: (reference '\(clocks.reference)', taggers \(clocks.taggers.map(\.name).joined(separator: ", "))): add it under clocks.taggers", at: n)
                    return []
                }
                names.sort { (clocks.members.firstIndex(of: $0) ?? 0) < (clocks.members.firstIndex(of: $1) ?? 0) }
                // Every tagger of clocks: acquires each stretch: the merged stream settles a tag
                // only once every tagger has delivered past it, and the reference is the time
                // base of the points and their live time.
                let missing = clocks.members.filter { !names.contains($0) }
                if !missing.isEmpty {
                    error(
                        "with clocks:, every acquisition takes all its taggers together; this one leaves out \(missing.map { "'\($0)'" }.joined(separator: ", ")): "
                            + "acquire: {devices: [\(clocks.members.joined(separator: ", "))], …}",
                        at: byKey["devices"] ?? byKey["device"] ?? node)
                    return []
                }
            } else if names.count > 1 && !hasClocksSection {
                error(
                    "acquiring several taggers together needs a 'clocks:' section: which one is the time base, and how the others' clocks follow it (docs/clocks.md)",
                    at: byKey["devices"] ?? node)
                return []
            }
            if let name, let n = byKey["name"] { defineDataset(name, .single, at: n) }
            for dataset in openSweeps + (name.map { [$0] } ?? []) { datasetTaggers[dataset, default: []].formUnion(names) }
            return [.acquire(devices: names, duration: d, name: name, location: location(keyNode))]
        case "record":
            // `record: [meter.power, oven.temperature]` (or one name): read at every point.
            let items = node.sequence.map(Array.init) ?? [node]
            var targets: [Assignment] = []
            for item in items {
                guard let target = string(item, what: "record") else { continue }
                guard let (device, spec) = resolveProperty(target, at: item, needSettable: false) else { continue }
                targets.append(Assignment(device: device, property: spec.name, value: .bool(false), location: location(item)))
            }
            if targets.isEmpty && items.isEmpty { error("record names the properties to read, e.g. [meter.power, oven.temperature]", at: node) }
            return targets.isEmpty ? [] : [.record(targets, location: location(keyNode))]
        case "calibrate_clocks":
            return compileClockCalibration(node, keyNode: keyNode)
        case "sweep":
            guard let sweep = compileSweep(node) else {
                // Its error is reported; the analyses that read it are not refused again for it.
                if let n = node.mapping?["name"]?.scalar?.string { failedDatasets.insert(n) }
                return []
            }
            return [sweep]
        case "run":
            // `run: name`, or `run: {sequence: name, with: {angle: 22.5 deg}}`: the sequence's
            // body sees each argument as $angle (in values and expressions).
            var arguments: [String: Quantity] = [:]
            var nameNode = node
            if node.mapping != nil {
                let f = fields(node, allowed: ["sequence", "with"], what: "run")
                guard let s = f["sequence"] else {
                    error("run needs 'sequence: NAME' (and 'with: {ARG: VALUE}' for its arguments)", at: node)
                    return []
                }
                nameNode = s
                for a in f["with"].map({ entries($0, allowed: nil, what: "run.with") }) ?? [] {
                    guard Self.isName(a.key), !a.key.contains("-") else {
                        error("an argument name is letters, digits and '_' (used as $\(a.key))", at: a.keyNode)
                        continue
                    }
                    if parameters[a.key] != nil { error("argument '\(a.key)' is also a parameter: give one of them another name", at: a.keyNode) }
                    guard let (text, _) = quantityText(a.value, what: "argument \(a.key)"), let q = Quantity.parse(text) else {
                        error("argument \(a.key) is a quantity with its unit, like 22.5 deg", at: a.value)
                        continue
                    }
                    arguments[a.key] = q
                }
            }
            guard let name = string(nameNode, what: "run") else { return [] }
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
            let saved = file, savedVariables = variables
            file = seq.file
            variables.merge(arguments) { _, new in new }
            let steps = compileSteps(seq.node)
            file = saved
            variables = savedVariables
            expanding.removeLast()
            return steps
        case "entangle":
            return compileEntangle(node, keyNode: keyNode).map { [$0] } ?? []
        case "entanglement":
            return compileEntanglementAnalysis(node).map { [.analysis($0, location: location(keyNode))] } ?? []
        case "tomography", "chsh", "g2", "rates", "coincidences", "correlation":
            // `coincidences` is `rates` by its other name: singles and pair rates per point.
            return compileAnalysis(kind == "coincidences" ? "rates" : kind, node, keyNode: keyNode).map { [.analysis($0, location: location(keyNode))] } ?? []
        default:
            error("unknown step '\(kind)'; expected one of: \(Self.stepKinds.joined(separator: ", "))", at: keyNode)
            return []
        }
    }

    /// Letters, digits, `_` and `-`: what may name a device, parameter, sweep or acquisition,
    /// each of which becomes an HDF5 group or dataset name.
    static func isName(_ name: String) -> Bool {
        !name.isEmpty && name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
    }

    mutating func defineDataset(_ name: String, _ kind: DatasetKind, at node: Node) {
        if !Self.isName(name) { error("'\(name)' may contain only letters, digits, '_' and '-' (it names a table in the run file)", at: node) }
        if datasets[name] != nil { error("a sweep or acquisition named '\(name)' is already defined", at: node) }
        datasets[name] = kind
        datasetDepth[name] = openSweeps.count
        if let outer = openSweeps.last { datasetOuter[name] = outer }
    }
}
