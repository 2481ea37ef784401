import Foundation
import HeraldCore

/// The temporal shape of a node's single photon.
public enum WavepacketShape: String, Sendable, CaseIterable {
    /// Spontaneous emission (ions, atoms): intensity e^{−t/τ}/τ from the excitation; `wavepacket` is τ.
    case exponential
    /// A shaped (cavity or driven) photon: Gaussian intensity; `wavepacket` is its FWHM, and it
    /// peaks one FWHM (2.355 σ) after the excitation, so all but 0.9% of it comes after it.
    case gaussian
}

/// One quantum node of the simulated network: its qubit, photon emission and readout.
public struct QuantumNodeParameters: Sendable, Equatable {
    public var name: String
    /// What the node is (ion, neutral-atom, quantum-dot, superconducting): a label for the record.
    public var kind = "ion"
    /// Probability that an attempt's excitation emits a photon entangled with the qubit…
    public var emissionProbability = 0.5
    /// …and that the photon is coupled into the node's fibre.
    public var collectionEfficiency = 0.1
    /// The emitted photon's wavelength, in metres.
    public var wavelength = 422e-9
    public var shape = WavepacketShape.exponential
    /// Exponential: the intensity decay time τ. Gaussian: the intensity FWHM. Seconds.
    public var wavepacket = 10e-9
    /// Extra delay of this node's emission (the entangler's `emission_delay` sets it at run time).
    public var emissionDelay = 0.0
    /// Frequency conversion before the fibre: efficiency (nil: none), target wavelength, and
    /// the noise photons per second it adds at its output (Raman and pump leakage).
    public var conversionEfficiency: Double?
    public var convertedWavelength = 1550e-9
    public var conversionNoise = 0.0
    /// Probability that a preparation failed, leaving qubit and photon uncorrelated (I/4).
    public var preparationError = 0.0
    /// Readout: mean fluorescence counts of the bright (+1) and dark (−1) state; the qubit
    /// reads bright when counts ≥ threshold. Readout errors follow from the Poisson tails.
    public var brightCounts = 20.0
    public var darkCounts = 0.1
    public var threshold = 2
    /// Gaussian (quasi-static) dephasing: coherence e^{−(t/T2*)²} after waiting t.
    public var t2Star = Double.infinity
    /// Time from the herald reaching the node until it measures, in seconds.
    public var readoutDelay = 0.0

    public init(name: String) { self.name = name }

    /// The wavelength that travels the fibre and reaches the analyser.
    public var wavelengthInFibre: Double { conversionEfficiency == nil ? wavelength : convertedWavelength }

    /// Probability that an attempt puts a photon into the fibre.
    public var efficiencyIntoFibre: Double { emissionProbability * collectionEfficiency * (conversionEfficiency ?? 1) }

    /// P(bright reading | bright state) and P(bright reading | dark state).
    public var readoutBrightProbabilities: (bright: Double, dark: Double) {
        (Poisson.upperTail(mean: brightCounts, atLeast: threshold), Poisson.upperTail(mean: darkCounts, atLeast: threshold))
    }
}

/// A node's fibre to the analyser.
public struct FibreParameters: Sendable, Equatable {
    public var length = 0.0
    /// dB/km; nil takes the fibre model's value at the photon's wavelength.
    public var attenuation: Double?
    /// Polarisation rotation of the fibre (degrees), its drift (degrees per second), and the
    /// rotation a polarisation controller takes back out (set at run time).
    public var rotation = 0.0
    public var drift = 0.0
    public var compensation = 0.0
    /// Group index of the fibre: the photon's delay is length × index / c.
    public var groupIndex = 1.468

    public init() {}

    public var delay: Double { length * groupIndex / 299_792_458 }

    /// The attenuation at `wavelength`, from the setting or the fibre model.
    public func attenuation(at wavelength: Double) throws(FibreModelError) -> Double {
        if let attenuation { return attenuation }
        return try FibreModel.attenuation(at: wavelength)
    }

    /// The fraction of photons that reach the far end: 10^(−α·L/10), L in km.
    public func transmission(at wavelength: Double) throws(FibreModelError) -> Double {
        pow(10, -(try attenuation(at: wavelength)) * length / 1000 / 10)
    }

    /// The net polarisation rotation at lab time `t` (seconds).
    public func rotation(at t: Double) -> Double { rotation + drift * t - compensation }
}

/// The Bell-state analyser: a beam splitter, a PBS on each output, four detectors.
public struct AnalyserParameters: Sendable, Equatable {
    /// Intensity transmission of the beam splitter (0.5 for 50:50).
    public var transmission = 0.5
    public var efficiency = 0.8
    public var darkRate = 10.0
    public var deadTime = 0.0
    public var jitter = 30e-12

    public init() {}
}

/// A link: two nodes, a fibre from each to the analyser, and the analyser.
public struct QuantumLinkParameters: Sendable, Equatable {
    public var name: String
    public var nodes: [String]
    /// In the order of `nodes`.
    public var fibres: [FibreParameters]
    public var analyser: AnalyserParameters

    public init(name: String, nodes: [String], fibres: [FibreParameters], analyser: AnalyserParameters) {
        self.name = name
        self.nodes = nodes
        self.fibres = fibres
        self.analyser = analyser
    }
}

/// Typical attenuation of the single-mode fibre made for each band (405-HP, 630HP, 780HP,
/// SMF-28): Rayleigh scattering dominates in the visible, so short wavelengths lose far more.
public enum FibreModel {
    /// (wavelength in nm, dB/km); interpolated linearly in log-attenuation.
    public static let table: [(nm: Double, dBPerKm: Double)] = [
        (400, 30), (450, 20), (500, 12), (600, 7), (700, 4.5), (780, 3.5), (850, 2.5), (1000, 1.0),
        (1310, 0.33), (1383, 0.35), (1550, 0.19), (1625, 0.22), (1700, 0.3),
    ]

    public static var range: ClosedRange<Double> { (table.first?.nm ?? 400)...(table.last?.nm ?? 1700) }

    public static func attenuation(at wavelength: Double) throws(FibreModelError) -> Double {
        let nm = wavelength * 1e9
        guard range.contains(nm) else { throw FibreModelError(wavelength: wavelength) }
        for (lo, hi) in zip(table, table.dropFirst()) where nm <= hi.nm {
            let f = (nm - lo.nm) / (hi.nm - lo.nm)
            return exp(log(lo.dBPerKm) + f * (log(hi.dBPerKm) - log(lo.dBPerKm)))
        }
        return table.last?.dBPerKm ?? 0.3
    }
}

public struct FibreModelError: Error, Sendable, CustomStringConvertible {
    public var wavelength: Double
    public var description: String {
        let r = FibreModel.range
        return "the fibre model has no attenuation at \(String(format: "%.1f", wavelength * 1e9)) nm (it covers "
            + "\(Int(r.lowerBound))–\(Int(r.upperBound)) nm); give the fibre an explicit 'attenuation' in dB/km"
    }
}

/// Poisson tail probabilities for readout thresholds.
public enum Poisson {
    /// P(N ≥ k) for N ~ Poisson(mean).
    public static func upperTail(mean: Double, atLeast k: Int) -> Double {
        guard k > 0 else { return 1 }
        var term = exp(-mean), below = 0.0
        for n in 0..<k {
            if n > 0 { term *= mean / Double(n) }
            below += term
        }
        return max(0, 1 - below)
    }
}

/// The whole simulated network: nodes by name and links by name.
public struct NetworkParameters: Sendable, Equatable {
    public var nodes: [String: QuantumNodeParameters] = [:]
    public var links: [String: QuantumLinkParameters] = [:]

    public init() {}

    public var isEmpty: Bool { nodes.isEmpty && links.isEmpty }

    /// What `simulation.network` may contain, and its physical checks.
    public static let schema = NetworkSchema(
        node: [
            PropertySpec("kind", .choice(["ion", "neutral-atom", "quantum-dot", "superconducting", "nv-centre"]), summary: "what the node is"),
            PropertySpec("emission_probability", .quantity(.dimensionless), range: 0...1, summary: "photon emitted per excitation"),
            PropertySpec("collection_efficiency", .quantity(.dimensionless), range: 0...1, summary: "photon coupled into the fibre"),
            PropertySpec("wavelength", .quantity(.length), range: 100e-9...20e-6, summary: "emitted photon's wavelength"),
            PropertySpec("wavepacket_shape", .choice(WavepacketShape.allCases.map(\.rawValue)), summary: "photon temporal shape"),
            PropertySpec("wavepacket", .quantity(.time), range: 1e-12...1e-3, summary: "exponential: decay time; gaussian: FWHM"),
            PropertySpec("emission_delay", .quantity(.time), range: -1e-3...1e-3, summary: "extra emission delay"),
            PropertySpec("conversion_efficiency", .quantity(.dimensionless), range: 0...1, summary: "frequency converter (absent: none)"),
            PropertySpec("converted_wavelength", .quantity(.length), range: 100e-9...20e-6, summary: "converter output wavelength"),
            PropertySpec("conversion_noise", .quantity(.frequency), range: 0...1e9, summary: "noise photons/s at the converter output"),
            PropertySpec("preparation_error", .quantity(.dimensionless), range: 0...1, summary: "failed preparations (qubit–photon I/4)"),
            PropertySpec("readout_bright", .quantity(.dimensionless), range: 0...1e4, summary: "mean counts, bright state"),
            PropertySpec("readout_dark", .quantity(.dimensionless), range: 0...1e4, summary: "mean counts, dark state"),
            PropertySpec("readout_threshold", .quantity(.dimensionless), range: 1...1e4, summary: "bright when counts ≥ this"),
            PropertySpec("t2_star", .quantity(.time), range: 1e-9...1e6, summary: "qubit dephasing time (Gaussian)"),
            PropertySpec("readout_delay", .quantity(.time), range: 0...10, summary: "herald to measurement"),
        ],
        fibre: [
            PropertySpec("length", .quantity(.length), range: 0...1e6, summary: "fibre length to the analyser"),
            PropertySpec("attenuation", .quantity(.dimensionless), range: 0...1000, summary: "dB/km (default: fibre model)"),
            PropertySpec("rotation", .quantity(.angle), range: -360...360, summary: "polarisation rotation"),
            PropertySpec("drift", .quantity(.dimensionless), range: -1e3...1e3, summary: "rotation drift, degrees per second"),
            PropertySpec("group_index", .quantity(.dimensionless), range: 1...3, summary: "delay = length × index / c"),
        ],
        analyser: [
            PropertySpec("transmission", .quantity(.dimensionless), range: 0...1, summary: "beam-splitter transmission"),
            PropertySpec("efficiency", .quantity(.dimensionless), range: 0...1, summary: "detector efficiency"),
            PropertySpec("dark_rate", .quantity(.frequency), range: 0...1e8, summary: "dark counts per detector"),
            PropertySpec("dead_time", .quantity(.time), range: 0...1e-3, summary: "detector dead time"),
            PropertySpec("jitter", .quantity(.time), range: 0...1e-6, summary: "detector timing jitter (σ)"),
        ],
        check: { NetworkParameters.problems(in: $0) })

    /// Builds the network from a validated description (types and ranges already checked).
    /// Throws the first physical problem; ``problems(in:)`` lists them all with their places.
    public init(_ description: NetworkDescription) throws {
        if let first = Self.problems(in: description).first { throw first }
        for section in description.nodes {
            var node = QuantumNodeParameters(name: section.name)
            node.kind = section.text("kind") ?? node.kind
            node.emissionProbability = section.quantity("emission_probability") ?? node.emissionProbability
            node.collectionEfficiency = section.quantity("collection_efficiency") ?? node.collectionEfficiency
            node.wavelength = section.quantity("wavelength") ?? node.wavelength
            node.shape = section.text("wavepacket_shape").flatMap(WavepacketShape.init(rawValue:)) ?? node.shape
            node.wavepacket = section.quantity("wavepacket") ?? node.wavepacket
            node.emissionDelay = section.quantity("emission_delay") ?? node.emissionDelay
            node.conversionEfficiency = section.quantity("conversion_efficiency")
            node.convertedWavelength = section.quantity("converted_wavelength") ?? node.convertedWavelength
            node.conversionNoise = section.quantity("conversion_noise") ?? node.conversionNoise
            node.preparationError = section.quantity("preparation_error") ?? node.preparationError
            node.brightCounts = section.quantity("readout_bright") ?? node.brightCounts
            node.darkCounts = section.quantity("readout_dark") ?? node.darkCounts
            node.threshold = section.quantity("readout_threshold").map { Int($0.rounded()) } ?? node.threshold
            node.t2Star = section.quantity("t2_star") ?? node.t2Star
            node.readoutDelay = section.quantity("readout_delay") ?? node.readoutDelay
            nodes[node.name] = node
        }
        for section in description.links {
            var analyser = AnalyserParameters()
            let a = section.analyser
            analyser.transmission = a.quantity("transmission") ?? analyser.transmission
            analyser.efficiency = a.quantity("efficiency") ?? analyser.efficiency
            analyser.darkRate = a.quantity("dark_rate") ?? analyser.darkRate
            analyser.deadTime = a.quantity("dead_time") ?? analyser.deadTime
            analyser.jitter = a.quantity("jitter") ?? analyser.jitter
            let fibres = section.fibres.map { f -> FibreParameters in
                var fibre = FibreParameters()
                fibre.length = f.quantity("length") ?? 0
                fibre.attenuation = f.quantity("attenuation")
                fibre.rotation = f.quantity("rotation") ?? 0
                fibre.drift = f.quantity("drift") ?? 0
                fibre.groupIndex = f.quantity("group_index") ?? fibre.groupIndex
                return fibre
            }
            links[section.name] = QuantumLinkParameters(
                name: section.name, nodes: section.fibres.map(\.name), fibres: fibres, analyser: analyser)
        }
    }

    /// Every physical problem of a description, each at its place: a link joining nodes
    /// that are not declared or not two, a wavelength the fibre model lacks, photons of a
    /// link that cannot meet at one analyser.
    public static func problems(in description: NetworkDescription) -> [ScriptDiagnostic] {
        var problems: [ScriptDiagnostic] = []
        let declared = Dictionary(description.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for link in description.links {
            if link.fibres.count != 2 {
                problems.append(
                    ScriptDiagnostic(
                        "link '\(link.name)' must join exactly two nodes (one fibre each), it has \(link.fibres.count)",
                        at: link.location))
            }
            for fibre in link.fibres {
                guard let node = declared[fibre.name] else {
                    let known = declared.keys.sorted().joined(separator: ", ")
                    problems.append(
                        ScriptDiagnostic(
                            "link '\(link.name)' joins node '\(fibre.name)', which simulation.network.nodes does not declare"
                                + (known.isEmpty ? "" : " (declared: \(known))"), at: fibre.location))
                    continue
                }
                guard fibre.values["attenuation"] == nil else { continue }
                let wavelength = node.quantity(node.values["conversion_efficiency"] == nil ? "wavelength" : "converted_wavelength")
                    ?? (node.values["conversion_efficiency"] == nil ? 422e-9 : 1550e-9)
                do {
                    _ = try FibreModel.attenuation(at: wavelength)
                } catch {
                    problems.append(
                        ScriptDiagnostic("fibre of node '\(fibre.name)' on link '\(link.name)': \(error)", at: fibre.location))
                }
            }
        }
        return problems
    }
}
