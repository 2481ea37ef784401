import Foundation
import HeraldCore
import Yams

// Sweeps: over a property, or over a measurement basis (tomography, CHSH) whose waveplate angles come from `AnalyzerSetting`.
extension Context {
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

    /// The four waveplate moves that put both arms' analyzers at their settings.
    static func angles(
        _ mounts: (a: (qwp: String, hwp: String), b: (qwp: String, hwp: String)), _ a: AnalyzerSetting, _ b: AnalyzerSetting
    ) -> [Assignment] {
        [
            Assignment(device: mounts.a.qwp, property: "angle", value: .quantity(.degrees(a.qwp))),
            Assignment(device: mounts.a.hwp, property: "angle", value: .quantity(.degrees(a.hwp))),
            Assignment(device: mounts.b.qwp, property: "angle", value: .quantity(.degrees(b.qwp))),
            Assignment(device: mounts.b.hwp, property: "angle", value: .quantity(.degrees(b.hwp))),
        ]
    }

    /// The values of a `range:`: `step` from `from` towards `to` (which must land on `to`, or
    /// `include_end: true` adds it), or `points` evenly spaced including both ends.
    mutating func rangeGrid(_ r: [String: Node], from: Quantity, to: Quantity, _ dim: PhysicalDimension, at rangeNode: Node) -> [Double] {
        if let stepQ = quantity(r["step"], dim, what: "range.step") {
            let span = to.value - from.value
            guard stepQ.value != 0, span / stepQ.value >= 0, span / stepQ.value < 100_000 else {
                error("range.step must be non-zero, point from 'from' towards 'to', and give at most 100 000 points", at: r["step"])
                return []
            }
            let n = Int((span / stepQ.value + 1e-9).rounded(.down))
            var grid = (0...n).map { from.value + Double($0) * stepQ.value }
            let last = grid.last ?? from.value
            if abs(last - to.value) > 1e-9 * max(abs(stepQ.value), abs(to.value)) {
                let includeEnd = r["include_end"].map { $0.scalar?.string == "true" } ?? false
                if includeEnd {
                    grid.append(to.value)
                } else {
                    error(
                        "range from \(from) to \(to) in steps of \(stepQ) stops at \(Quantity(last, dim)), not at \(to): "
                            + "write 'to: \(Quantity(last, dim))', a step that divides the span, or 'include_end: true' to add \(to) as a last point",
                        at: r["step"] ?? rangeNode)
                    return []
                }
            }
            return grid
        }
        if let n = integer(r["points"], what: "range.points", range: 2...100_000) {
            return (0..<n).map { from.value + (to.value - from.value) * Double($0) / Double(n - 1) }
        }
        if r["step"] == nil && r["points"] == nil { error("range needs 'step' or 'points'", at: rangeNode) }
        return []
    }

    /// A lockstep sweep: one variable over `values` or `range`, and several properties set from
    /// it at every point (`set: {qwp_b.angle: $theta, hwp_b.angle: $theta / 2}`). Every point's
    /// values are computed and limit-checked here, so a limit exceeded at one point only stops
    /// the script before it runs, naming that point.
    mutating func compileLockstep(_ variableNode: Node, _ byKey: [String: Node], at node: Node) -> [SweepPoint]? {
        guard let variable = string(variableNode, what: "sweep.variable") else { return nil }
        guard Self.isName(variable), !variable.contains("-") else {
            error("sweep.variable is a name of letters, digits and '_' (used as $\(variable))", at: variableNode)
            return nil
        }
        if parameters[variable] != nil { error("sweep.variable '\(variable)' is also a parameter: give one of them another name", at: variableNode) }
        guard let setNode = byKey["set"], setNode.mapping != nil else {
            error("a sweep with 'variable' needs 'set: {device.property: expression, …}' (the properties that move with $\(variable))", at: node)
            return nil
        }
        var xs: [Quantity] = []
        if let valuesNode = byKey["values"] {
            for item in valuesNode.sequence.map(Array.init) ?? [] {
                guard let (text, _) = quantityText(item, what: "sweep value"), let q = Quantity.parse(text) else {
                    error("each value of $\(variable) is a quantity with its unit, like 10 deg", at: item)
                    return nil
                }
                xs.append(q)
            }
            if xs.isEmpty { error("sweep.values must be a non-empty list", at: valuesNode) }
        } else if let rangeNode = byKey["range"] {
            let r = fields(rangeNode, allowed: ["from", "to", "step", "points", "include_end"], what: "sweep.range")
            guard let fromNode = r["from"], let (fromText, _) = quantityText(fromNode, what: "range.from"), let from = Quantity.parse(fromText) else {
                error("range needs 'from' with a unit (it sets the dimension of $\(variable))", at: rangeNode)
                return nil
            }
            guard let to = quantity(r["to"], from.dimension, what: "range.to") else {
                if r["to"] == nil { error("range needs 'to'", at: rangeNode) }
                return nil
            }
            xs = rangeGrid(r, from: from, to: to, from.dimension, at: rangeNode).map { Quantity($0, from.dimension) }
        } else {
            error("a sweep over $\(variable) needs 'values' or 'range'", at: node)
            return nil
        }
        let targets = entries(setNode, allowed: nil, what: "sweep.set")
        var points: [SweepPoint] = []
        let before = diagnostics.count
        for x in xs {
            variables[variable] = x
            var assignments: [Assignment] = []
            for t in targets {
                if let a = assignment(target: t.key, keyNode: t.keyNode, valueNode: t.value) { assignments.append(a) }
            }
            // One point's error is enough: the same expression would fail the same way at the next.
            if diagnostics.count > before { break }
            points.append(SweepPoint(label: "\(variable)=\(x)", assignments: assignments, value: x))
        }
        variables[variable] = nil
        return diagnostics.count > before ? nil : points
    }

    mutating func compileSweep(_ node: Node) -> PlanStep? {
        let byKey = fields(node, allowed: ["name", "basis", "analyzers", "set", "values", "range", "steps", "variable"], what: "sweep")
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
                for (a, b) in CHSHSettings.angles {
                    points.append(
                        SweepPoint(
                            label: "a\(a)_b\(b)", assignments: Self.angles(mounts, .linear(degrees: a), .linear(degrees: b))))
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
                    points.append(
                        SweepPoint(
                            label: la.rawValue + lb.rawValue,
                            assignments: Self.angles(mounts, AnalyzerSetting(projectingOnto: la), AnalyzerSetting(projectingOnto: lb)),
                            projection: (la, lb)))
                }
                kind = .tomography
            }
        } else if let variableNode = byKey["variable"] {
            guard let lockstep = compileLockstep(variableNode, byKey, at: node) else { return nil }
            points = lockstep
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
                let r = fields(rangeNode, allowed: ["from", "to", "step", "points", "include_end"], what: "sweep.range")
                guard let from = quantity(r["from"], dim, what: "range.from"), let to = quantity(r["to"], dim, what: "range.to") else {
                    if r["from"] == nil || r["to"] == nil { error("range needs 'from', 'to' and 'step' or 'points'", at: rangeNode) }
                    return nil
                }
                let grid = rangeGrid(r, from: from, to: to, dim, at: rangeNode)
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
}
