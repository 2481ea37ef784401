import HeraldCore
import HeraldHDF5

/// Every herald of every `entangle` step, in `/user/herald/heralds/<dataset>`, appended as it
/// happens (datasets created before SWMR starts, like the live progress), so a crash keeps
/// every herald already flushed and h5py can recompute rates and fidelities from them:
/// - `time_ps`, `pattern`, `attempts` (since the previous herald of the point), `outer_index`;
/// - per node `<node>/basis` (0 X, 1 Y, 2 Z), `<node>/outcome` (±1), `<node>/counts`;
/// - `points/{start_ps, stop_ps, attempts, heralds, timeouts, outer_index}` per point;
/// - attributes: the link, its nodes in order, cycle, window and timeout, and the patterns.
struct HeraldLog {
    struct Columns {
        let time, pattern, attempts, outer: H5AppendableDataset<Int64>
        let basis, outcome, counts: [H5AppendableDataset<Int64>]
        let pointStart, pointStop, pointAttempts, pointHeralds, pointTimeouts, pointOuter: H5AppendableDataset<Int64>

        var all: [H5Location] {
            [time, pattern, attempts, outer] + basis + outcome + counts
                + [pointStart, pointStop, pointAttempts, pointHeralds, pointTimeouts, pointOuter]
        }
    }

    static let chunk = 1024
    private(set) var columns: [String: Columns] = [:]

    init(in herald: H5Group, plan: Plan) throws {
        var specs: [EntangleSpec] = []
        func scan(_ steps: [PlanStep]) {
            for step in steps {
                switch step {
                case .sweep(let s): scan(s.body)
                case .entangle(let e, _): specs.append(e)
                default: break
                }
            }
        }
        scan(plan.steps)
        guard !specs.isEmpty else { return }
        let root = try herald.group("heralds")
        for spec in specs {
            let g = try root.group(spec.name)
            try g.setAttribute("link", spec.link.name)
            try g.setAttribute("nodes", spec.link.nodes.map(\.name).joined(separator: ","))
            try g.setAttribute("tagger", spec.link.tagger)
            try g.setAttribute("cycle_s", Double(spec.cyclePs) * 1e-12)
            try g.setAttribute("window_start_s", Double(spec.windowStartPs) * 1e-12)
            try g.setAttribute("window_length_s", Double(spec.windowLengthPs) * 1e-12)
            try g.setAttribute("timeout_s", Double(spec.timeoutPs) * 1e-12)
            try g.setAttribute("bases", spec.bases.rawValue)
            try g.setAttribute("basis_codes", "0 = X, 1 = Y, 2 = Z")
            try g.write("pattern_names", strings: spec.patterns.map(\.name))
            try g.write("pattern_detectors", strings: spec.patterns.map { $0.detectors.joined(separator: "+") })
            try g.write("pattern_channels", strings: spec.patterns.map { $0.channels.map(String.init).joined(separator: "+") })
            try g.write("pattern_states", strings: spec.patterns.map { $0.state?.rawValue ?? "none" })
            func int(_ group: H5Group, _ name: String, units: String) throws -> H5AppendableDataset<Int64> {
                let d = try group.appendable(name, of: Int64.self, chunk: Self.chunk)
                try d.setAttribute("units", units)
                return d
            }
            var basis: [H5AppendableDataset<Int64>] = [], outcome: [H5AppendableDataset<Int64>] = []
            var counts: [H5AppendableDataset<Int64>] = []
            for node in spec.link.nodes {
                let n = try g.group(node.name)
                try n.setAttribute("entangler", node.entangler)
                try n.setAttribute("readout", node.readout)
                basis.append(try int(n, "basis", units: "1"))
                outcome.append(try int(n, "outcome", units: "1"))
                counts.append(try int(n, "counts", units: "counts"))
            }
            let points = try g.group("points")
            columns[spec.name] = Columns(
                time: try int(g, "time_ps", units: "ps"), pattern: try int(g, "pattern", units: "1"),
                attempts: try int(g, "attempts", units: "1"), outer: try int(g, "outer_index", units: "1"),
                basis: basis, outcome: outcome, counts: counts,
                pointStart: try int(points, "start_ps", units: "ps"), pointStop: try int(points, "stop_ps", units: "ps"),
                pointAttempts: try int(points, "attempts", units: "1"), pointHeralds: try int(points, "heralds", units: "1"),
                pointTimeouts: try int(points, "timeouts", units: "1"), pointOuter: try int(points, "outer_index", units: "1"))
        }
    }

    func abandon() { columns.values.forEach { $0.all.forEach { $0.abandon() } } }

    func add(_ h: HeraldRecord) throws {
        guard let c = columns[h.dataset] else { return }
        for k in c.basis.indices where k < h.bases.count {
            try c.basis[k].append([Int64(h.bases[k].index)])
            try c.outcome[k].append([Int64(h.outcomes[k])])
            try c.counts[k].append([Int64(h.counts[k])])
        }
        try c.pattern.append([Int64(h.pattern)])
        try c.attempts.append([h.attempts])
        try c.outer.append([Int64(h.outer?.index ?? -1)])
        // Last: a reader takes the shortest column, so a herald cut short is not read in part.
        try c.time.append([h.timePs])
    }

    func add(_ r: EntanglementRecord) throws {
        guard let c = columns[r.dataset] else { return }
        try c.pointStart.append([r.startPs])
        try c.pointAttempts.append([r.attempts])
        try c.pointHeralds.append([Int64(r.heralds)])
        try c.pointTimeouts.append([Int64(r.timeouts)])
        try c.pointOuter.append([Int64(r.outer?.index ?? -1)])
        try c.pointStop.append([r.stopPs])
    }

    /// Writes the pending tails of every column (at each flush).
    func writeTails() throws {
        for c in columns.values { for d in c.all { try (d as? H5AppendableDataset<Int64>)?.writeTail() } }
    }
}

extension RunRecorder {
    /// The simulated network's parameters as the script set them: each node, fibre and
    /// analyser a group whose attributes are its settings (quantities as SI numbers with a
    /// `<key>_units` attribute beside them).
    static func writeNetwork(_ network: NetworkDescription, into herald: H5Group) throws {
        let g = try herald.group("network")
        func write(_ section: NetworkSection, _ group: H5Group) throws {
            for (k, v) in section.values.sorted(by: { $0.key < $1.key }) {
                if case .quantity(let q) = v {
                    try group.setAttribute(k, q.value)
                    try group.setAttribute(k + "_units", q.dimension == .dimensionless ? "1" : q.dimension.siUnit)
                } else {
                    try group.setAttribute(k, v.description)
                }
            }
        }
        let nodes = try g.group("nodes")
        for n in network.nodes { try write(n, try nodes.group(n.name)) }
        let links = try g.group("links")
        for l in network.links {
            let lg = try links.group(l.name)
            try lg.setAttribute("nodes", l.fibres.map(\.name).joined(separator: ","))
            for f in l.fibres { try write(f, try lg.group("fibre_" + f.name)) }
            try write(l.analyser, try lg.group("analyser"))
        }
    }
}
