import ComplexModule
import RealModule
import Foundation

/// A polarization state label used in tomography settings.
///
/// Convention (documented in docs/tomography.md): D = (H+V)/√2, A = (H−V)/√2,
/// R = (H−iV)/√2, L = (H+iV)/√2, with H = (1, 0) and V = (0, 1).
public enum PolarizationLabel: String, Sendable, Hashable, CaseIterable {
    case H, V, D, A, R, L

    /// The Jones vector (H and V amplitudes).
    public var jones: JonesVector {
        let r = 1 / 2.0.squareRoot()
        switch self {
        case .H: return JonesVector(Complex(1), Complex(0))
        case .V: return JonesVector(Complex(0), Complex(1))
        case .D: return JonesVector(Complex(r), Complex(r))
        case .A: return JonesVector(Complex(r), Complex(-r))
        case .R: return JonesVector(Complex(r), Complex(0, -r))
        case .L: return JonesVector(Complex(r), Complex(0, r))
        }
    }

    /// The state a polarizing beam splitter's reflected port projects onto
    /// when its transmitted port projects onto `self`.
    public var orthogonal: PolarizationLabel {
        switch self {
        case .H: return .V
        case .V: return .H
        case .D: return .A
        case .A: return .D
        case .R: return .L
        case .L: return .R
        }
    }

    /// Waveplate angles (degrees, fast axis from horizontal) that make an analyzer
    /// made of a quarter-wave plate, then a half-wave plate, then a PBS transmitting H,
    /// project its transmitted port onto this state.
    public var analyzerAngles: (qwp: Double, hwp: Double) {
        switch self {
        case .H: return (0, 0)
        case .V: return (0, 45)
        case .D: return (45, 22.5)
        case .A: return (45, -22.5)
        case .R: return (0, 22.5)
        case .L: return (0, -22.5)
        }
    }
}

/// A two-component complex polarization amplitude.
public struct JonesVector: Sendable, Hashable {
    public var h: Complex<Double>
    public var v: Complex<Double>
    public init(_ h: Complex<Double>, _ v: Complex<Double>) {
        self.h = h
        self.v = v
    }

    /// The state orthogonal to this one, (−v*, h*).
    public var orthogonal: JonesVector { JonesVector(-v.conjugate, h.conjugate) }

    /// ⟨self|other⟩
    public func inner(_ other: JonesVector) -> Complex<Double> {
        h.conjugate * other.h + v.conjugate * other.v
    }
}

/// A 2×2 Jones matrix, row-major.
public struct JonesMatrix: Sendable, Hashable {
    public var a, b, c, d: Complex<Double>

    public init(_ a: Complex<Double>, _ b: Complex<Double>, _ c: Complex<Double>, _ d: Complex<Double>) {
        (self.a, self.b, self.c, self.d) = (a, b, c, d)
    }

    /// A half-wave plate with its fast axis at `degrees` from horizontal (global phase dropped).
    public static func halfWave(degrees: Double) -> JonesMatrix {
        let t = 2 * degrees * .pi / 180
        return JonesMatrix(Complex(cos(t)), Complex(sin(t)), Complex(sin(t)), Complex(-cos(t)))
    }

    /// A quarter-wave plate with its fast axis at `degrees` from horizontal (global phase dropped).
    public static func quarterWave(degrees: Double) -> JonesMatrix {
        let t = degrees * .pi / 180
        let c = cos(t), s = sin(t)
        let off = Complex(s * c, -s * c)
        return JonesMatrix(Complex(c * c, s * s), off, off, Complex(s * s, c * c))
    }

    public var adjoint: JonesMatrix {
        JonesMatrix(a.conjugate, c.conjugate, b.conjugate, d.conjugate)
    }

    public static func * (m: JonesMatrix, n: JonesMatrix) -> JonesMatrix {
        JonesMatrix(
            m.a * n.a + m.b * n.c, m.a * n.b + m.b * n.d,
            m.c * n.a + m.d * n.c, m.c * n.b + m.d * n.d)
    }

    public static func * (m: JonesMatrix, x: JonesVector) -> JonesVector {
        JonesVector(m.a * x.h + m.b * x.v, m.c * x.h + m.d * x.v)
    }

    /// The states projected onto by the transmitted (H) and reflected (V) ports of a PBS
    /// placed after a QWP at `qwp` degrees followed by a HWP at `hwp` degrees.
    public static func analyzerStates(qwp: Double, hwp: Double) -> (pass: JonesVector, reflect: JonesVector) {
        analyzerStates(qwp: Optional(qwp), hwp: Optional(hwp))
    }

    /// The same with either plate absent (nil): an arm without a QWP has none in its path,
    /// which is not the same as one at 0° (that turns D into R).
    public static func analyzerStates(qwp: Double?, hwp: Double?) -> (pass: JonesVector, reflect: JonesVector) {
        let one = Complex<Double>(1), zero = Complex<Double>.zero
        let identity = JonesMatrix(one, zero, zero, one)
        let q = qwp.map { quarterWave(degrees: $0) } ?? identity
        let h = hwp.map { halfWave(degrees: $0) } ?? identity
        let back = (h * q).adjoint
        return (back * PolarizationLabel.H.jones, back * PolarizationLabel.V.jones)
    }
}

/// The waveplate angles of one analyzer arm (a QWP, then an HWP, then a PBS transmitting H),
/// in degrees. The one place a measurement basis becomes angles: the compiler sets them and
/// the simulated lab's physics (``JonesMatrix/analyzerStates(qwp:hwp:)``) measures with them.
public struct AnalyzerSetting: Sendable, Hashable {
    public var qwp: Double
    public var hwp: Double

    public init(qwp: Double, hwp: Double) {
        self.qwp = qwp
        self.hwp = hwp
    }

    /// The setting whose transmitted port projects onto `label`.
    public init(projectingOnto label: PolarizationLabel) {
        (qwp, hwp) = label.analyzerAngles
    }

    /// A linear analyzer at θ from horizontal: the HWP at θ/2 turns θ onto the PBS's H axis,
    /// and the QWP in front, with its fast axis along θ, leaves that linear state unchanged.
    public static func linear(degrees theta: Double) -> AnalyzerSetting { AnalyzerSetting(qwp: theta, hwp: theta / 2) }

    /// The states the transmitted and reflected ports project onto.
    public var projectedStates: (pass: JonesVector, reflect: JonesVector) { JonesMatrix.analyzerStates(qwp: qwp, hwp: hwp) }
}

/// The built-in tomography setting sets.
public enum TomographyBasisSet: String, Sendable, CaseIterable {
    /// The 16 settings of James et al. (2001) with one detector per photon.
    case standard16 = "tomography-16"
    /// All 36 pairs of H, V, D, A, R, L.
    case full36 = "tomography-36"
    /// The 9 basis pairs (HV, DA, RL per photon); with both PBS ports detected, 36 projections.
    case bases9 = "tomography-9"

    /// Each setting names the state projected on by the transmitted port of each arm.
    public var settings: [(PolarizationLabel, PolarizationLabel)] {
        switch self {
        case .standard16:
            let order: [PolarizationLabel] = [.H, .V, .D, .R]
            return order.flatMap { a in order.map { b in (a, b) } }
        case .full36:
            let all = PolarizationLabel.allCases
            return all.flatMap { a in all.map { b in (a, b) } }
        case .bases9:
            let bases: [PolarizationLabel] = [.H, .D, .R]
            return bases.flatMap { a in bases.map { b in (a, b) } }
        }
    }
}
