/// What the run reducer needs to know of a plan: its data sets (with their nesting and
/// each point's projection and swept value) and its analysis steps. It is Codable and stored
/// in the run file, so `herald analyze` rebuilds exactly the reducer the run used.
public struct ReductionPlan: Sendable, Codable, Equatable {
    public struct Point: Sendable, Codable, Equatable {
        public var label: String
        /// The analyzer setting of a tomography point, two letters of HVDARL.
        public var projection: String?
        /// The swept quantity, in SI units, for sweeps over one property.
        public var value: Double?
        public var unit: String?

        public init(label: String, projection: String? = nil, value: Double? = nil, unit: String? = nil) {
            self.label = label
            self.projection = projection
            self.value = value
            self.unit = unit
        }

        /// The analyzer setting as labels, when the point has one.
        public var setting: (a: PolarizationLabel, b: PolarizationLabel)? {
            guard let p = projection.map(Array.init), p.count == 2, let a = PolarizationLabel(rawValue: String(p[0])),
                let b = PolarizationLabel(rawValue: String(p[1]))
            else { return nil }
            return (a, b)
        }
    }

    /// A sweep or named acquisition (one point). `outer` is the sweep it runs inside.
    public struct Dataset: Sendable, Codable, Equatable {
        public var name: String
        public var outer: String?
        public var points: [Point]

        public init(name: String, outer: String?, points: [Point]) {
            self.name = name
            self.outer = outer
            self.points = points
        }
    }

    public var datasets: [Dataset]
    /// Every analysis step of the plan, in script order.
    public var analyses: [AnalysisStep]
    /// With interlocks, an acquisition's tags count only once its interlock check passed.
    public var hasInterlocks: Bool
    /// Several taggers: how their tags are merged into one time base before counting.
    public var clocks: ClocksSpec?

    public init(datasets: [Dataset], analyses: [AnalysisStep], hasInterlocks: Bool) {
        self.datasets = datasets
        self.analyses = analyses
        self.hasInterlocks = hasInterlocks
    }

    public init(plan: Plan) {
        var datasets: [Dataset] = []
        var analyses: [AnalysisStep] = []
        func scan(_ steps: [PlanStep], outer: String?) {
            for step in steps {
                switch step {
                case .sweep(let s):
                    datasets.append(Dataset(name: s.name, outer: outer, points: s.points.map(Point.init)))
                    scan(s.body, outer: s.name)
                case .acquire(_, _, let name?, _):
                    datasets.append(Dataset(name: name, outer: outer, points: [Point(label: name)]))
                case .entangle(let e, _):
                    datasets.append(Dataset(name: e.name, outer: outer, points: [Point(label: e.name)]))
                case .analysis(let a, _):
                    analyses.append(a)
                default: break
                }
            }
        }
        scan(plan.steps, outer: nil)
        self.init(datasets: datasets, analyses: analyses, hasInterlocks: !plan.interlocks.isEmpty)
        clocks = plan.clocks
    }

    public func dataset(_ name: String) -> Dataset? { datasets.first { $0.name == name } }

    /// The same plan counted with another window or other delays (channels not listed keep
    /// theirs), and fitted with another estimator: what `herald analyze --window` recounts with.
    public func recounted(windowPs: Int64?, delaysPs: [Int: Int64], estimator: Estimator?) -> ReductionPlan {
        var copy = self
        copy.analyses = analyses.map { $0.recounted(windowPs: windowPs, delaysPs: delaysPs, estimator: estimator) }
        return copy
    }
}

extension ReductionPlan.Point {
    init(_ p: SweepPoint) {
        self.init(
            label: p.label, projection: p.projection.map { $0.a.rawValue + $0.b.rawValue }, value: p.value?.value,
            unit: p.value.map { $0.dimension.siUnit })
    }
}

extension AnalysisStep {
    /// This step with its coincidence window and delays replaced (and, for tomography, its
    /// estimator). Windows and delays are integer picoseconds, like the tags.
    public func recounted(windowPs: Int64?, delaysPs: [Int: Int64], estimator: Estimator?) -> AnalysisStep {
        func delays(_ old: [Int: Int64]) -> [Int: Int64] { old.merging(delaysPs) { _, new in new } }
        switch self {
        case .tomography(var t):
            if let windowPs { t.windowPs = windowPs }
            t.delaysPs = delays(t.delaysPs)
            if let estimator { t.estimator = estimator }
            return .tomography(t)
        case .chsh(let d, let a, let b, var c):
            if let windowPs { c.windowPs = windowPs }
            c.delaysPs = delays(c.delaysPs)
            return .chsh(dataset: d, armA: a, armB: b, counting: c)
        case .heraldedG2(let d, let h, let s, let w):
            return .heraldedG2(dataset: d, herald: h, signals: s, windowPs: windowPs ?? w)
        case .rates(let d, var c, let f):
            if let windowPs { c.windowPs = windowPs }
            c.delaysPs = delays(c.delaysPs)
            return .rates(dataset: d, counting: c, fit: f)
        case .entanglement(var e):
            if let estimator { e.estimator = estimator }
            return .entanglement(e)
        case .correlation(var c):
            // The window is a coincidence window; a histogram's bins stay as the script set them.
            c.delaysPs = delays(c.delaysPs)
            return .correlation(c)
        }
    }
}

extension AnalysisStep: Equatable {
    public static func == (l: AnalysisStep, r: AnalysisStep) -> Bool { l.stored == r.stored }
}

extension AnalysisStep: Codable {
    /// One flat form for every kind, so the stored JSON reads plainly.
    private struct Stored: Codable, Equatable {
        var kind: String
        var dataset: String
        var tomography: TomographySpec?
        var armA: ArmChannels?
        var armB: ArmChannels?
        var counting: CountingSpec?
        var herald: Int?
        var signals: [Int]?
        var windowPs: Int64?
        var entanglement: EntanglementAnalysisSpec?
        /// A rates analysis's fit; absent (linear) in files written before fits were chosen.
        var fit: RateFit?
        var correlation: CorrelationAnalysisSpec?
    }

    private var stored: Stored {
        switch self {
        case .tomography(let t): return Stored(kind: "tomography", dataset: t.sweep, tomography: t)
        case .chsh(let d, let a, let b, let c): return Stored(kind: "chsh", dataset: d, armA: a, armB: b, counting: c)
        case .heraldedG2(let d, let h, let s, let w):
            return Stored(kind: "g2", dataset: d, herald: h, signals: [s.0, s.1], windowPs: w)
        case .rates(let d, let c, let f): return Stored(kind: "rates", dataset: d, counting: c, fit: f == .linear ? nil : f)
        case .entanglement(let e): return Stored(kind: "entanglement", dataset: e.dataset, entanglement: e)
        case .correlation(let c): return Stored(kind: "correlation", dataset: c.dataset, correlation: c)
        }
    }

    public func encode(to encoder: any Encoder) throws { try stored.encode(to: encoder) }

    public init(from decoder: any Decoder) throws {
        let s = try Stored(from: decoder)
        func missing(_ field: String) -> DecodingError {
            .dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(s.kind) analysis without '\(field)'"))
        }
        switch s.kind {
        case "tomography":
            guard let t = s.tomography else { throw missing("tomography") }
            self = .tomography(t)
        case "chsh":
            guard let a = s.armA, let b = s.armB, let c = s.counting else { throw missing("armA, armB, counting") }
            self = .chsh(dataset: s.dataset, armA: a, armB: b, counting: c)
        case "g2":
            guard let h = s.herald, let sig = s.signals, sig.count == 2, let w = s.windowPs else { throw missing("herald, signals, windowPs") }
            self = .heraldedG2(dataset: s.dataset, herald: h, signals: (sig[0], sig[1]), windowPs: w)
        case "rates":
            guard let c = s.counting else { throw missing("counting") }
            self = .rates(dataset: s.dataset, counting: c, fit: s.fit ?? .linear)
        case "entanglement":
            guard let e = s.entanglement else { throw missing("entanglement") }
            self = .entanglement(e)
        case "correlation":
            guard let c = s.correlation else { throw missing("correlation") }
            self = .correlation(c)
        default:
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown analysis kind '\(s.kind)'"))
        }
    }
}
