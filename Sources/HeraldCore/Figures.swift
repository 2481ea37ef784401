/// The four Bell states, the targets a tomography reports its fidelity against.
public enum BellState: String, Sendable, Hashable, Codable, CaseIterable {
    case phiPlus = "phi+"
    case phiMinus = "phi-"
    case psiPlus = "psi+"
    case psiMinus = "psi-"

    /// As people write them: Φ+, Ψ−.
    public var symbol: String {
        switch self {
        case .phiPlus: return "Φ+"
        case .phiMinus: return "Φ−"
        case .psiPlus: return "Ψ+"
        case .psiMinus: return "Ψ−"
        }
    }
}

/// How a tomography reconstructs the state.
public enum Estimator: String, Sendable, Hashable, Codable, CaseIterable {
    /// Least-squares linear inversion, then the closest physical state for the figures.
    case linear
    /// Maximum likelihood with the exact Poisson likelihood.
    case mle
    /// Hedged maximum likelihood (β = 1/2).
    case hedged
}

/// Every figure Herald reports. This is the one table of their names: `key` is the name in
/// HDF5 (`analysis/*/values/<key>`, `series/<key>`) and in JSON, `unit` its `units`
/// attribute, `title` what the CLI prints. Nothing else spells these names out.
public enum Figure: Hashable, Sendable {
    case fidelity(BellState)
    /// The fidelity of the unconstrained linear-inversion estimate.
    case linearFidelity(BellState)
    /// The fidelity to the script's target state.
    case targetFidelity
    case maxFidelity
    case concurrence, tangle, purity, entropy, linearEntropy, negativity, logNegativity
    /// The largest CHSH S the state allows (Horodecki).
    case maxCHSH
    /// Fitted pairs per unit-trace projector pair.
    case intensity
    case linearMinEigenvalue
    case chshS
    case violationSigma
    /// CHSH per-setting correlation E and its total pair count.
    case correlation, settingTotal
    case g2Zero
    case heralds, heraldAnd1, heraldAnd2, heraldAnd1And2
    /// Singles rate of a channel.
    case rate(channel: Int)
    case coincidenceRate(Int, Int)
    /// Straight-line fit of a pair rate against the swept quantity.
    case slope(Int, Int)
    case intercept(Int, Int)
    /// The swept quantity at each point.
    case sweptValue
    /// A per-point uncertainty series of another figure (`<key>_error`).
    indirect case error(Figure)
    // Heralded entanglement (the `entanglement` analysis).
    case attempts, attemptRate, successProbability, heraldRate
    /// The lab time the attempts took (the entangle points' spans).
    case liveTime
    /// Lab time since the data set began (the drift series' bins).
    case elapsed
    /// The 95% interval of the parity fidelity, from the bases' binomial (Wilson) intervals.
    case fidelityLow, fidelityHigh
    /// The fidelity of the maximum-likelihood state of the nine-setting data.
    case mleFidelity
    /// Fits across the outer sweep: attenuation (dB/km) and rate at zero length; HOM dip.
    case attenuation, rateAtZero, homVisibility, homWidth, homCentre
    /// A correlation histogram: each bin's lower edge τ, its counts, g2(τ) normalised by the
    /// singles, g2 in the bin holding τ = 0, and the uncorrelated level per bin.
    case delay, histogramCounts, g2Tau, g2AtZero, accidentalsPerBin
    /// The correlation peak: centre, RMS width, height in background σ, the delay that centres it.
    case peakPosition, peakWidth, peakSignificance, delayCorrection
    /// A figure of one herald pattern.
    indirect case pattern(String, Figure)

    public var key: String {
        switch self {
        case .fidelity(let b): return "fidelity_" + b.rawValue
        case .linearFidelity(let b): return "fidelity_" + b.rawValue + "_linear"
        case .targetFidelity: return "fidelity"
        case .maxFidelity: return "fidelity_max"
        case .concurrence: return "concurrence"
        case .tangle: return "tangle"
        case .purity: return "purity"
        case .entropy: return "entropy"
        case .linearEntropy: return "linear_entropy"
        case .negativity: return "negativity"
        case .logNegativity: return "log_negativity"
        case .maxCHSH: return "chsh_max"
        case .intensity: return "intensity"
        case .linearMinEigenvalue: return "linear_min_eigenvalue"
        case .chshS: return "S"
        case .violationSigma: return "violation_sigma"
        case .correlation: return "E"
        case .settingTotal: return "total"
        case .g2Zero: return "g2_0"
        case .heralds: return "heralds"
        case .heraldAnd1: return "herald_and_1"
        case .heraldAnd2: return "herald_and_2"
        case .heraldAnd1And2: return "herald_and_1_and_2"
        case .rate(let c): return "rate_\(c)"
        case .coincidenceRate(let a, let b): return "coincidence_rate_\(a)_\(b)"
        case .slope(let a, let b): return "coincidence_rate_\(a)_\(b)_slope"
        case .intercept(let a, let b): return "coincidence_rate_\(a)_\(b)_intercept"
        case .sweptValue: return "swept_value"
        case .error(let f): return f.key + "_error"
        case .attempts: return "attempts"
        case .liveTime: return "duration"
        case .elapsed: return "time"
        case .attemptRate: return "attempt_rate"
        case .successProbability: return "success_probability"
        case .heraldRate: return "herald_rate"
        case .fidelityLow: return "fidelity_low"
        case .fidelityHigh: return "fidelity_high"
        case .mleFidelity: return "fidelity_mle"
        case .attenuation: return "attenuation"
        case .rateAtZero: return "herald_rate_at_zero"
        case .homVisibility: return "hom_visibility"
        case .homWidth: return "hom_width"
        case .homCentre: return "hom_centre"
        case .delay: return "tau"
        case .histogramCounts: return "counts"
        case .g2Tau: return "g2"
        case .g2AtZero: return "g2_at_zero"
        case .accidentalsPerBin: return "accidentals_per_bin"
        case .peakPosition: return "peak_position"
        case .peakWidth: return "peak_width"
        case .peakSignificance: return "peak_significance"
        case .delayCorrection: return "delay_correction"
        case .pattern(let p, let f): return f.key + "." + p
        }
    }

    /// The figure a stored key names, if it is one of Herald's.
    public init?(key: String) {
        if key.hasSuffix("_error"), let base = Figure(key: String(key.dropLast(6))) {
            self = .error(base)
            return
        }
        if let f = Self.fixed[key] {
            self = f
            return
        }
        if let dot = key.firstIndex(of: "."), let base = Figure(key: String(key[..<dot])) {
            self = .pattern(String(key[key.index(after: dot)...]), base)
            return
        }
        for b in BellState.allCases {
            if key == "fidelity_" + b.rawValue { self = .fidelity(b); return }
            if key == "fidelity_" + b.rawValue + "_linear" { self = .linearFidelity(b); return }
        }
        let parts = key.split(separator: "_").map(String.init)
        if parts.count == 2, parts[0] == "rate", let c = Int(parts[1]) {
            self = .rate(channel: c)
            return
        }
        if parts.count >= 4, parts[0] == "coincidence", parts[1] == "rate", let a = Int(parts[2]), let b = Int(parts[3]) {
            switch parts.count == 5 ? parts[4] : "" {
            case "": self = .coincidenceRate(a, b)
            case "slope" where parts.count == 5: self = .slope(a, b)
            case "intercept" where parts.count == 5: self = .intercept(a, b)
            default: return nil
            }
            return
        }
        return nil
    }

    private static let fixed: [String: Figure] = Dictionary(
        uniqueKeysWithValues: ([
            .targetFidelity, .maxFidelity, .concurrence, .tangle, .purity, .entropy, .linearEntropy, .negativity,
            .logNegativity, .maxCHSH, .intensity, .linearMinEigenvalue, .chshS, .violationSigma, .correlation, .settingTotal,
            .g2Zero, .heralds, .heraldAnd1, .heraldAnd2, .heraldAnd1And2, .sweptValue, .attempts, .attemptRate,
            .successProbability, .heraldRate, .liveTime, .elapsed, .fidelityLow, .fidelityHigh, .mleFidelity, .attenuation, .rateAtZero,
            .homVisibility, .homWidth, .homCentre, .delay, .histogramCounts, .g2Tau, .g2AtZero, .accidentalsPerBin,
            .peakPosition, .peakWidth, .peakSignificance, .delayCorrection,
        ] as [Figure]).map { ($0.key, $0) })

    /// The unit, as the `units` attribute spells it ("1" for a pure number). `swept` is the SI
    /// unit of the swept quantity, for the fit against it.
    public func unit(swept: String = "") -> String {
        switch self {
        case .entropy: return "bit"
        case .logNegativity: return "bit"
        case .intensity, .heralds, .heraldAnd1, .heraldAnd2, .heraldAnd1And2, .settingTotal, .attempts: return "counts"
        case .attemptRate, .heraldRate, .rateAtZero: return "s^-1"
        case .attenuation: return "dB km^-1"
        case .homWidth, .homCentre, .liveTime, .elapsed, .delay, .peakPosition, .peakWidth, .delayCorrection: return "s"
        case .histogramCounts, .accidentalsPerBin: return "counts"
        case .peakSignificance: return "standard deviations"
        case .pattern(_, let f): return f.unit(swept: swept)
        case .violationSigma: return "standard deviations"
        case .rate, .coincidenceRate, .intercept: return "s^-1"
        case .slope: return swept.isEmpty ? "s^-1" : "s^-1 " + swept + "^-1"
        case .sweptValue: return swept.isEmpty ? "1" : swept
        case .error(let f): return f.unit(swept: swept)
        default: return "1"
        }
    }

    /// What the CLI calls it.
    public var title: String {
        switch self {
        case .fidelity(let b): return "fidelity to \(b.symbol)"
        case .linearFidelity(let b): return "fidelity to \(b.symbol) (linear inversion)"
        case .targetFidelity: return "fidelity to target Bell state"
        case .maxFidelity: return "fully entangled fraction"
        case .maxCHSH: return "largest CHSH S of the state"
        case .chshS: return "CHSH S"
        case .violationSigma: return "violation of |S| ≤ 2"
        case .g2Zero: return "heralded g2(0)"
        case .rate(let c): return "singles rate, channel \(c)"
        case .coincidenceRate(let a, let b): return "pair rate \(a)–\(b)"
        case .slope(let a, let b): return "pair rate \(a)–\(b) per unit of the swept quantity"
        case .intercept(let a, let b): return "pair rate \(a)–\(b) at zero"
        case .error(let f): return f.title + " (error)"
        case .attemptRate: return "attempt rate"
        case .successProbability: return "success probability per attempt"
        case .heraldRate: return "heralded entanglement rate"
        case .fidelityLow: return "fidelity, 95% interval low"
        case .fidelityHigh: return "fidelity, 95% interval high"
        case .mleFidelity: return "fidelity of the MLE state"
        case .attenuation: return "fitted fibre attenuation"
        case .rateAtZero: return "herald rate at zero length"
        case .homVisibility: return "HOM visibility"
        case .homWidth: return "HOM dip width"
        case .homCentre: return "HOM dip centre"
        case .g2AtZero: return "g2(0), normalised by the singles"
        case .peakPosition: return "correlation peak at"
        case .peakWidth: return "correlation peak RMS width"
        case .peakSignificance: return "correlation peak height"
        case .delayCorrection: return "delay that centres the peak"
        case .pattern(let p, let f): return f.title + " (pattern \(p))"
        default: return key.replacingOccurrences(of: "_", with: " ")
        }
    }
}

extension Dictionary where Key == String, Value == Double {
    /// The value of a figure in a record's `values` or `uncertainties`.
    public subscript(figure figure: Figure) -> Double? {
        get { self[figure.key] }
        set { self[figure.key] = newValue }
    }
}

extension Dictionary where Key == String, Value == [Double] {
    /// A per-point series of a figure.
    public subscript(figure figure: Figure) -> [Double]? {
        get { self[figure.key] }
        set { self[figure.key] = newValue }
    }
}
