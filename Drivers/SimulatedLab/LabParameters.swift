import ComplexModule
import RealModule
import Foundation
import HeraldCore

/// Physical parameters of the simulated lab, set from a script's `simulation:` block.
public struct LabParameters: Sendable, Equatable {
    /// Pair generation rate at `nominalPower` (SPDC rate is linear in pump power).
    public var pairRate: Double = 100e3
    public var nominalPower: Double = 10e-3
    /// Werner-state visibility: ρ = V|ψ(φ)⟩⟨ψ(φ)| + (1−V)·I/4, |ψ(φ)⟩ = (|HH⟩ + e^{iφ}|VV⟩)/√2.
    public var visibility: Double = 0.9 { didSet { state = Self.werner(visibility: visibility, phaseDegrees: phase) } }
    /// φ of the Werner state, in degrees.
    public var phase: Double = 0 { didSet { state = Self.werner(visibility: visibility, phaseDegrees: phase) } }
    /// The two-photon density matrix in the basis HH, HV, VH, VV (Werner unless a
    /// `density_matrix` is given).
    public var state: [[Complex<Double>]] = LabParameters.werner(visibility: 0.9, phaseDegrees: 0)
    /// Probability that a photon leaving the source is detected (coupling × detector efficiency).
    public var efficiency: Double = 0.2
    /// Dark-count rate of every detector, per second.
    public var darkRate: Double = 200
    /// Gaussian timing jitter (standard deviation) of every detector, in seconds.
    public var jitter: Double = 50e-12
    /// Non-paralyzable dead time of every detector, in seconds.
    public var deadTime: Double = 0
    /// Probability that a click is followed by an afterpulse…
    public var afterpulseProbability: Double = 0
    /// …released an exponentially distributed time (this mean) after the dead time.
    public var afterpulseDelay: Double = 100e-9
    /// Time from enabling the pump until it reports `locked` (no pairs before that).
    public var lockTime: Double = 0
    /// Injected fault: the pump loses lock at this lab time (seconds since the run began)…
    public var unlockAt: Double?
    /// …for this long; no pairs are produced while unlocked.
    public var unlockDuration: Double = 0
    /// A laser-diode pump (a current-driven controller under `--mock`): no light below the
    /// threshold current, `nominalPower` at the nominal current, linear in between.
    public var laserThresholdCurrent: Double = 0.010
    public var laserNominalCurrent: Double = 0.050
    /// Where the two photons meet: the polarisation analyzers (one per arm, detectors 1–4), or
    /// a 50:50 beam splitter whose outputs go to detectors 1 and 3 (a Hong–Ou–Mandel set-up).
    public var homInterferometer = false
    /// The photons' indistinguishability: at zero delay, coincidences fall by this fraction.
    public var homVisibility: Double = 0.95
    /// Coherence time τc of the photons: coincidences go as 1 − V·e^{−(τ/τc)²} in the delay τ.
    public var coherenceTime: Double = 1e-12
    /// Stage position at which both photons' paths are equal (a delay stage's zero).
    public var zeroDelayPosition: Double = 0
    /// The crystal's phase matching: the pair rate goes as sinc²(π(T − T₀)/ΔT), zero first at
    /// T₀ ± ΔT, once a temperature controller holds the crystal.
    public var phaseMatchingTemperature: Double = 308.15
    public var phaseMatchingWidth: Double = 2
    /// Relative (1σ) noise of a power meter's reading.
    public var powerMeterNoise: Double = 0.01

    public init() {}

    /// What a `simulation:` block may contain; validated like any device setting.
    /// (`faults:` is a list and is checked by ``FaultSpec/parse(_:)``.)
    public static let specs: [PropertySpec] = [
        PropertySpec("pair_rate", .quantity(.frequency), range: 0...1e9, summary: "pairs/s at nominal_power"),
        PropertySpec("nominal_power", .quantity(.power), range: 1e-9...10, summary: "pump power of pair_rate"),
        PropertySpec("visibility", .quantity(.dimensionless), range: 0...1, summary: "Werner visibility"),
        PropertySpec("phase", .quantity(.angle), range: -360...360, summary: "Werner phase φ of |HH⟩ + e^{iφ}|VV⟩"),
        PropertySpec(
            "density_matrix", .text,
            summary: "instead of a Werner state: 16 real parts then 16 imaginary parts (HH, HV, VH, VV), row by row"),
        PropertySpec("efficiency", .quantity(.dimensionless), range: 0...1, summary: "per-photon detection probability"),
        PropertySpec("dark_rate", .quantity(.frequency), range: 0...1e8, summary: "dark counts per detector"),
        PropertySpec("jitter", .quantity(.time), range: 0...1e-6, summary: "detector timing jitter (σ)"),
        PropertySpec("dead_time", .quantity(.time), range: 0...1e-3, summary: "detector dead time (non-paralyzable)"),
        PropertySpec(
            "afterpulse_probability", .quantity(.dimensionless), range: 0...0.5, summary: "afterpulses per click"),
        PropertySpec("afterpulse_delay", .quantity(.time), range: 1e-12...1e-3, summary: "mean afterpulse delay after dead time"),
        PropertySpec("lock_time", .quantity(.time), range: 0...3600, summary: "pump lock acquisition time"),
        PropertySpec("unlock_at", .quantity(.time), range: 0...1e7, summary: "fault: pump unlocks at this lab time"),
        PropertySpec("unlock_duration", .quantity(.time), range: 0...1e7, summary: "fault: how long the unlock lasts"),
        PropertySpec("laser_threshold_current", .quantity(.current), range: 0...10, summary: "diode pump: lasing threshold"),
        PropertySpec("laser_nominal_current", .quantity(.current), range: 1e-6...10, summary: "diode pump: current giving nominal_power"),
        PropertySpec(
            "interferometer", .choice(["analyzers", "hom"]),
            summary: "where the photons meet: polarisation analyzers (detectors 1–4) or a 50:50 beam splitter to detectors 1 and 3"),
        PropertySpec("hom_visibility", .quantity(.dimensionless), range: 0...1, summary: "HOM: photons' indistinguishability"),
        PropertySpec("coherence_time", .quantity(.time), range: 1e-15...1e-6, summary: "HOM: dip 1 − V·exp(−(τ/τc)²)"),
        PropertySpec("zero_delay_position", .quantity(.length), range: -1...1, summary: "HOM: stage position of equal paths"),
        PropertySpec("phase_matching_temperature", .quantity(.temperature), range: 0...1000, summary: "crystal temperature of peak pair rate"),
        PropertySpec("phase_matching_width", .quantity(.temperature), range: 1e-3...100, summary: "pair rate ∝ sinc²(π(T−T₀)/ΔT)"),
        PropertySpec("power_meter_noise", .quantity(.dimensionless), range: 0...1, summary: "relative noise of power-meter readings"),
    ]

    /// Applies validated values; unknown keys were already rejected by validation.
    /// Throws only for a `density_matrix` that is not a density matrix.
    public init(_ values: [String: Value]) throws {
        self.init()
        for (key, value) in values {
            if key == "density_matrix", let text = value.text {
                state = try Self.densityMatrix(parsing: text)
                continue
            }
            if key == "interferometer" {
                homInterferometer = value.text == "hom"
                continue
            }
            guard let q = value.quantity?.value else { continue }
            switch key {
            case "pair_rate": pairRate = q
            case "nominal_power": nominalPower = q
            case "efficiency": efficiency = q
            case "dark_rate": darkRate = q
            case "jitter": jitter = q
            case "dead_time": deadTime = q
            case "afterpulse_probability": afterpulseProbability = q
            case "afterpulse_delay": afterpulseDelay = q
            case "lock_time": lockTime = q
            case "unlock_at": unlockAt = q
            case "unlock_duration": unlockDuration = q
            case "laser_threshold_current": laserThresholdCurrent = q
            case "laser_nominal_current": laserNominalCurrent = q
            case "hom_visibility": homVisibility = q
            case "coherence_time": coherenceTime = q
            case "zero_delay_position": zeroDelayPosition = q
            case "phase_matching_temperature": phaseMatchingTemperature = q
            case "phase_matching_width": phaseMatchingWidth = q
            case "power_meter_noise": powerMeterNoise = q
            default: break
            }
        }
        // Set after the loop so a density matrix, if given, is not replaced by a Werner state.
        if values["density_matrix"] == nil {
            visibility = values["visibility"]?.quantity?.value ?? visibility
            phase = values["phase"]?.quantity?.value ?? phase
            state = Self.werner(visibility: visibility, phaseDegrees: phase)
        }
    }

    /// V|ψ(φ)⟩⟨ψ(φ)| + (1−V)·I/4 with |ψ(φ)⟩ = (|HH⟩ + e^{iφ}|VV⟩)/√2.
    public static func werner(visibility v: Double, phaseDegrees: Double) -> [[Complex<Double>]] {
        var rho = [[Complex<Double>]](repeating: [Complex<Double>](repeating: .zero, count: 4), count: 4)
        let phi = phaseDegrees * .pi / 180
        for i in 0..<4 { rho[i][i] = Complex((1 - v) / 4) }
        rho[0][0] = rho[0][0] + Complex(v / 2)
        rho[3][3] = rho[3][3] + Complex(v / 2)
        rho[0][3] = Complex(v / 2 * cos(phi), -v / 2 * sin(phi))
        rho[3][0] = rho[0][3].conjugate
        return rho
    }

    /// Parses 32 numbers (real parts, then imaginary parts, row-major) and checks that they
    /// form a density matrix: Hermitian, trace 1, positive semidefinite.
    public static func densityMatrix(parsing text: String) throws -> [[Complex<Double>]] {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" || $0 == ";" })
        let numbers = words.compactMap { Double($0) }
        guard numbers.count == 32, words.count == 32 else {
            throw LabParameterError("density_matrix needs 32 numbers (16 real parts, then 16 imaginary parts); got \(words.count)")
        }
        var rho = [[Complex<Double>]](repeating: [Complex<Double>](repeating: .zero, count: 4), count: 4)
        for i in 0..<4 { for j in 0..<4 { rho[i][j] = Complex(numbers[4 * i + j], numbers[16 + 4 * i + j]) } }
        let tolerance = 1e-6
        for i in 0..<4 {
            for j in 0..<4 where (rho[i][j] - rho[j][i].conjugate).length > tolerance {
                throw LabParameterError("density_matrix is not Hermitian: element (\(i + 1),\(j + 1)) ≠ conjugate of (\(j + 1),\(i + 1))")
            }
        }
        let trace = (0..<4).reduce(0.0) { $0 + rho[$1][$1].real }
        guard abs(trace - 1) < tolerance else { throw LabParameterError("density_matrix has trace \(trace), not 1") }
        guard isPositiveSemidefinite(rho, tolerance: tolerance) else {
            throw LabParameterError("density_matrix has a negative eigenvalue: it is not a physical state")
        }
        return rho
    }

    /// Cholesky factorisation that tolerates zero pivots (semidefinite matrices).
    static func isPositiveSemidefinite(_ a: [[Complex<Double>]], tolerance: Double) -> Bool {
        let n = a.count
        var l = [[Complex<Double>]](repeating: [Complex<Double>](repeating: .zero, count: n), count: n)
        for j in 0..<n {
            var d = a[j][j].real
            for k in 0..<j { d -= l[j][k].lengthSquared }
            if d < -tolerance { return false }
            if d <= tolerance {
                // A zero pivot: the rest of the column must vanish too.
                for i in (j + 1)..<max(j + 1, n) {
                    var s = a[i][j]
                    for k in 0..<j { s = s - l[i][k] * l[j][k].conjugate }
                    if s.length > 1e-4 { return false }
                }
                continue
            }
            let root = d.squareRoot()
            l[j][j] = Complex(root)
            for i in (j + 1)..<max(j + 1, n) {
                var s = a[i][j]
                for k in 0..<j { s = s - l[i][k] * l[j][k].conjugate }
                l[i][j] = s / Complex(root)
            }
        }
        return true
    }
}

/// A `simulation:` value that is well-typed but not physical.
public struct LabParameterError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
