import Foundation
import HeraldCore
import Yams

// The quantum network: `simulation.network` (the simulated physics), `links:` (which devices
// form each link), the `entangle` step and the `entanglement` analysis.
extension Context {
    // MARK: simulation.network

    mutating func compileNetwork(_ node: Node) -> NetworkDescription {
        guard let schema = networkSchema else { return NetworkDescription() }
        var description = NetworkDescription()
        let byKey = fields(node, allowed: ["nodes", "links"], what: "simulation.network")
        if let nodes = byKey["nodes"] {
            for entry in entries(nodes, allowed: nil, what: "simulation.network.nodes") {
                if !Self.isName(entry.key) { error("node name '\(entry.key)' may contain only letters, digits, '_' and '-'", at: entry.keyNode) }
                description.nodes.append(section(entry.key, entry.value, specs: schema.node, what: "node '\(entry.key)'", at: entry.keyNode))
            }
        }
        if let links = byKey["links"] {
            for entry in entries(links, allowed: nil, what: "simulation.network.links") {
                let link = fields(entry.value, allowed: ["fibres", "analyser"], what: "simulated link '\(entry.key)'")
                var fibres: [NetworkSection] = []
                if let f = link["fibres"] {
                    for fibre in entries(f, allowed: nil, what: "fibres of link '\(entry.key)'") {
                        fibres.append(section(fibre.key, fibre.value, specs: schema.fibre, what: "fibre of '\(fibre.key)'", at: fibre.keyNode))
                    }
                } else {
                    error("simulated link '\(entry.key)' needs 'fibres' (one per node it joins, keyed by the node)", at: entry.value)
                }
                let analyser = link["analyser"].map { section("analyser", $0, specs: schema.analyser, what: "analyser of '\(entry.key)'", at: $0) }
                    ?? NetworkSection(name: "analyser", values: [:], location: location(entry.value))
                description.links.append(
                    NetworkLinkSection(name: entry.key, location: location(entry.keyNode), fibres: fibres, analyser: analyser))
            }
        }
        diagnostics.append(contentsOf: schema.check(description))
        return description
    }

    mutating func section(_ name: String, _ node: Node, specs: [PropertySpec], what: String, at keyNode: Node) -> NetworkSection {
        var values: [String: Value] = [:]
        var places: [String: SourceLocation] = [:]
        if node.mapping == nil, node.scalar?.string == "" || node.scalar == nil && node.sequence == nil {
            return NetworkSection(name: name, values: [:], location: location(keyNode))
        }
        for entry in entries(node, allowed: specs.map(\.name), what: what) {
            guard let spec = specs.first(where: { $0.name == entry.key }) else { continue }
            if let v = value(entry.value, for: spec, what: "\(what).\(entry.key)") {
                values[entry.key] = v
                places[entry.key] = location(entry.value)
            }
        }
        return NetworkSection(name: name, values: values, location: location(keyNode), valueLocations: places)
    }

    // MARK: links:

    mutating func compileLinks(_ node: Node) {
        for entry in entries(node, allowed: nil, what: "links") {
            if !Self.isName(entry.key) { error("link name '\(entry.key)' may contain only letters, digits, '_' and '-'", at: entry.keyNode) }
            let byKey = fields(entry.value, allowed: ["nodes", "analyser"], what: "link '\(entry.key)'")
            var nodes: [LinkNode] = []
            if let list = byKey["nodes"]?.sequence {
                for item in list {
                    let f = fields(item, allowed: ["name", "entangler", "readout"], what: "a node of link '\(entry.key)'")
                    let name = string(f["name"], what: "node name")
                    let entangler = deviceName(f["entangler"], kind: .entangler, what: "entangler", at: item)
                    let readout = deviceName(f["readout"], kind: .qubitReadout, what: "readout", at: item)
                    if let name, let entangler, let readout { nodes.append(LinkNode(name: name, entangler: entangler, readout: readout)) }
                }
                if list.count != 2 { error("link '\(entry.key)' joins two nodes (the first one's entangler runs the loop); it lists \(list.count)", at: byKey["nodes"]) }
            } else {
                error("link '\(entry.key)' needs 'nodes': a list of two {name, entangler, readout}", at: entry.value)
            }
            var tagger: String?
            var detectors: [String: Int] = [:]
            if let a = byKey["analyser"] {
                let f = fields(a, allowed: ["tagger", "detectors"], what: "analyser of link '\(entry.key)'")
                tagger = deviceName(f["tagger"], kind: .timeTagger, what: "tagger", at: a)
                if let d = f["detectors"] {
                    for det in entries(d, allowed: nil, what: "detectors") {
                        if let ch = integer(det.value, what: "channel of detector '\(det.key)'", range: 1...255) {
                            if detectors.values.contains(ch) { error("two detectors on channel \(ch)", at: det.value) }
                            detectors[det.key] = ch
                        }
                    }
                } else {
                    error("the analyser of link '\(entry.key)' needs 'detectors' (name: tagger channel)", at: a)
                }
            } else {
                error("link '\(entry.key)' needs 'analyser' (its tagger and detectors)", at: entry.value)
            }
            guard nodes.count == 2, let tagger else { continue }
            if Set(nodes.map(\.name)).count != 2 { error("link '\(entry.key)' joins a node to itself", at: byKey["nodes"]) }
            // With a simulated network, the link must be one of its links, between the same nodes.
            if let sim = network, !sim.isEmpty {
                if let simulated = sim.links.first(where: { $0.name == entry.key }) {
                    let simNodes = Set(simulated.fibres.map(\.name))
                    if simNodes != Set(nodes.map(\.name)) {
                        error(
                            "link '\(entry.key)' joins \(nodes.map(\.name).joined(separator: " and ")), but simulation.network.links.\(entry.key) "
                                + "joins \(simulated.fibres.map(\.name).joined(separator: " and "))", at: entry.keyNode)
                    }
                } else {
                    let known = sim.links.map(\.name).joined(separator: ", ")
                    error("link '\(entry.key)' is not simulated: simulation.network.links has \(known.isEmpty ? "none" : known)", at: entry.keyNode)
                }
            }
            links[entry.key] = LinkConfig(name: entry.key, nodes: nodes, tagger: tagger, detectors: detectors)
        }
    }

    mutating func deviceName(_ node: Node?, kind: DeviceKind, what: String, at parent: Node) -> String? {
        guard let node else {
            error("needs '\(what)' (a \(kind.rawValue) device)", at: parent)
            return nil
        }
        guard let name = string(node, what: what) else { return nil }
        guard let d = devices[name] else {
            error("unknown device '\(name)'; declared devices: \(devices.keys.sorted().joined(separator: ", "))", at: node)
            return nil
        }
        guard d.kind == kind else {
            error("'\(name)' is a \(d.kind.rawValue); \(what) must be a \(kind.rawValue)", at: node)
            return nil
        }
        return name
    }

    // MARK: entangle

    mutating func compileEntangle(_ node: Node, keyNode: Node) -> PlanStep? {
        let byKey = fields(
            node, allowed: ["name", "link", "cycle", "window", "patterns", "timeout", "until", "measure", "max_timeouts"],
            what: "entangle")
        guard let nameNode = byKey["name"], let name = string(nameNode, what: "entangle.name") else {
            error("entangle needs a 'name' (its heralds form a data set of that name)", at: node)
            return nil
        }
        var link: LinkConfig?
        if let l = byKey["link"], let linkName = string(l, what: "entangle.link") {
            link = links[linkName]
            if link == nil {
                let known = links.keys.sorted().joined(separator: ", ")
                error("unknown link '\(linkName)'; " + (known.isEmpty ? "declare it under 'links:'" : "declared links: \(known)"), at: l)
            }
        } else if byKey["link"] == nil {
            error("entangle needs 'link' (one of the script's 'links:')", at: node)
        }
        let cycle = byKey["cycle"].flatMap { quantity($0, .time, what: "entangle.cycle") }
        if byKey["cycle"] == nil { error("entangle needs 'cycle' (the length of one attempt, e.g. 1 us)", at: node) }
        if let c = cycle, !(1e-9...1).contains(c.value) { error("entangle.cycle must be between 1 ns and 1 s, got \(c)", at: byKey["cycle"]) }
        var windowStart: Quantity?, windowLength: Quantity?
        if let w = byKey["window"] {
            let f = fields(w, allowed: ["start", "length"], what: "entangle.window")
            windowStart = f["start"].flatMap { quantity($0, .time, what: "window.start") } ?? Quantity(0, .time)
            windowLength = quantity(f["length"], .time, what: "window.length")
            if f["length"] == nil { error("the detection window needs 'length'", at: w) }
            if let len = windowLength, !(len.value > 0 && len.value <= 1) { error("window.length must be more than 0 s and at most 1 s, got \(len)", at: f["length"]) }
            if let st = windowStart, !(st.value >= 0 && st.value <= 1) { error("window.start must be between 0 s and 1 s, got \(st)", at: f["start"]) }
            if let s = windowStart, let len = windowLength, let c = cycle, s.value < 0 || s.value + len.value > c.value {
                error("the detection window [\(s), \(s.value + len.value) s] must lie inside one cycle of \(c)", at: w)
            }
        } else {
            error("entangle needs 'window: {start, length}' (the detection window after each excitation)", at: node)
        }
        let timeout = byKey["timeout"].flatMap { quantity($0, .time, what: "entangle.timeout") }
        if byKey["timeout"] == nil { error("entangle needs 'timeout' (how long one attempt loop runs without a herald, e.g. 10 ms)", at: node) }
        if let t = timeout, !(t.value <= 3600 && t.value >= (cycle?.value ?? 0) && t.value > 0) {
            error("entangle.timeout must be between one cycle\(cycle.map { " (\($0))" } ?? "") and 1 h, got \(t)", at: byKey["timeout"])
        }
        var stop = EntangleStop()
        if let u = byKey["until"] {
            let f = fields(u, allowed: ["heralds", "time"], what: "entangle.until")
            stop.heralds = f["heralds"].flatMap { integer($0, what: "until.heralds", range: 1...1_000_000_000) }
            if let t = f["time"].flatMap({ duration($0, what: "until.time", allowZero: false) }) {
                // Lab time is Int64 picoseconds (106 days); a budget past 10⁶ s would overflow it.
                if t > .seconds(1_000_000) { error("until.time must be at most 10⁶ s (11.6 days of lab time), got \(t)", at: f["time"]) } else {
                    stop.timePs = picoseconds(t)
                }
            }
            if f.isEmpty { error("until needs 'heralds' (a count), 'time' (a budget of lab time) or both", at: u) }
        } else {
            error("entangle needs 'until: {heralds: N}' or 'until: {time: T}' (when to stop)", at: node)
        }
        var bases = BasisSet.parity
        if let m = byKey["measure"], let s = string(m, what: "entangle.measure") {
            if let b = BasisSet(rawValue: s) { bases = b } else {
                error("measure must be \(BasisSet.allCases.map(\.rawValue).joined(separator: " or ")): ZZ, XX, YY, or all nine Pauli pairs", at: m)
            }
        }
        let maxTimeouts = byKey["max_timeouts"].flatMap { integer($0, what: "entangle.max_timeouts", range: 1...1_000_000) } ?? 100
        var patterns: [HeraldPattern] = []
        if let p = byKey["patterns"] {
            guard let list = p.sequence, !list.isEmpty else {
                error("entangle.patterns is a list of {name, detectors, heralds}", at: p)
                return nil
            }
            for item in list {
                let f = fields(item, allowed: ["name", "detectors", "heralds"], what: "a herald pattern")
                guard let pname = string(f["name"], what: "pattern name") else {
                    if f["name"] == nil { error("a herald pattern needs a 'name'", at: item) }
                    continue
                }
                if !Self.isName(pname) { error("pattern name '\(pname)' may contain only letters, digits, '_' and '-'", at: f["name"]) }
                if patterns.contains(where: { $0.name == pname }) { error("two patterns named '\(pname)'", at: f["name"]) }
                var state: BellState?
                if let h = f["heralds"], let s = string(h, what: "heralds") {
                    state = BellState(rawValue: s)
                    if state == nil { error("heralds must be one of \(BellState.allCases.map(\.rawValue).joined(separator: ", "))", at: h) }
                }
                var names: [String] = [], channels: [Int] = []
                for d in f["detectors"]?.sequence.map(Array.init) ?? [] {
                    guard let det = string(d, what: "detector") else { continue }
                    guard let link else { continue }
                    guard let ch = link.detectors[det] else {
                        error(
                            "pattern '\(pname)' names detector '\(det)', which link '\(link.name)' does not have "
                                + "(detectors: \(link.detectors.keys.sorted().joined(separator: ", ")))", at: d)
                        continue
                    }
                    if names.contains(det) { error("pattern '\(pname)' names detector '\(det)' twice", at: d) }
                    names.append(det)
                    channels.append(ch)
                }
                if f["detectors"]?.sequence == nil { error("pattern '\(pname)' needs 'detectors': a list of the link's detector names", at: item) }
                if !channels.isEmpty { patterns.append(HeraldPattern(name: pname, detectors: names, channels: channels, state: state)) }
            }
            let masks = patterns.map { Set($0.channels) }
            if Set(masks).count != masks.count { error("two patterns name the same detectors", at: p) }
        } else {
            error("entangle needs 'patterns' (which detector coincidences herald which state)", at: node)
        }
        defineDataset(name, .entanglement, at: nameNode)
        guard let link, let cycle, let windowStart, let windowLength, let timeout, !patterns.isEmpty,
            stop.heralds != nil || stop.timePs != nil
        else { return nil }
        // Clamped: the values were range-checked above, but a diagnostic must never be a crash.
        func ps(_ q: Quantity) -> Int64 { Int64(clampingRounded: q.value * 1e12) }
        let spec = EntangleSpec(
            name: name, link: link, cyclePs: ps(cycle), windowStartPs: ps(windowStart), windowLengthPs: ps(windowLength),
            patterns: patterns, timeoutPs: ps(timeout), stop: stop, bases: bases, maxConsecutiveTimeouts: maxTimeouts)
        entangleSpecs[name] = spec
        return .entangle(spec, location: location(keyNode))
    }

    // MARK: entanglement analysis

    mutating func compileEntanglementAnalysis(_ node: Node) -> AnalysisStep? {
        let byKey = fields(node, allowed: ["sweep", "estimator", "drift_bins", "fit"], what: "entanglement")
        let name = dataset(byKey["sweep"], expect: [.entanglement], what: "entanglement", at: node)
        var estimator = Estimator.mle
        if let e = byKey["estimator"], let s = string(e, what: "estimator") {
            if let v = Estimator(rawValue: s) { estimator = v } else {
                error("estimator must be \(Estimator.allCases.map(\.rawValue).joined(separator: ", ")); got '\(s)'", at: e)
            }
        }
        let bins = byKey["drift_bins"].flatMap { integer($0, what: "drift_bins", range: 0...1000) } ?? 10
        var fit: EntanglementFit?
        if let f = byKey["fit"], let s = string(f, what: "fit") {
            fit = EntanglementFit(rawValue: s)
            if fit == nil { error("fit must be one of \(EntanglementFit.allCases.map(\.rawValue).joined(separator: ", "))", at: f) }
            if fit != nil, let name, datasetDepth[name] != 1 {
                error("a fit runs across the points of the sweep around '\(name)'; put the entangle step inside a sweep", at: f)
            } else if fit != nil, let name, let outer = datasetOuter[name], openSweeps.contains(outer) {
                error("a fit needs every point of sweep '\(outer)': put this step after the sweep, not inside it", at: f)
            }
        }
        guard let name, let spec = entangleSpecs[name] else { return nil }
        return .entanglement(
            EntanglementAnalysisSpec(
                dataset: name, nodes: spec.link.nodes.map(\.name), patterns: spec.patterns, bases: spec.bases, estimator: estimator,
                driftBins: bins, fit: fit))
    }

    /// A mock device placed on a network node must name a node the network simulates.
    mutating func checkNetworkDevices(_ configs: [DeviceConfig], nodes: [Node]) {
        guard let sim = network, !sim.isEmpty else { return }
        let known = Set(sim.nodes.map(\.name))
        for (config, node) in zip(configs, nodes) {
            guard registry.entry(config.driver)?.descriptor.isMock == true, let n = config.settings["node"]?.text else { continue }
            if !known.contains(n) {
                error("'\(config.name)' is on node '\(n)', which simulation.network.nodes does not declare (nodes: \(known.sorted().joined(separator: ", ")))", at: node)
            }
        }
    }
}
