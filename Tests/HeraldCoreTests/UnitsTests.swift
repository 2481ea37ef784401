import ComplexModule
import Foundation
import HeraldCore
import Testing

@Suite struct UnitsTests {
    @Test(arguments: [
        ("10 s", 10.0, PhysicalDimension.time), ("1.5ns", 1.5e-9, .time), ("45 mA", 0.045, .current),
        ("780 nm", 780e-9, .length), ("22.5 deg", 22.5, .angle), ("100 kHz", 1e5, .frequency),
        ("2e-3 W", 2e-3, .power), ("-45 deg", -45, .angle), ("0.9", 0.9, .dimensionless),
        // Milli- and micro- on a power, the prefix every pump setting uses.
        ("18 mW", 0.018, .power), ("18mW", 0.018, .power), ("250 µW", 250e-6, .power), ("1.5 W", 1.5, .power),
    ])
    func parsesQuantities(text: String, value: Double, dimension: PhysicalDimension) throws {
        let q = try #require(Quantity.parse(text))
        #expect(q.dimension == dimension)
        #expect(abs(q.value - value) <= 1e-12 * max(1, abs(value)))
    }

    @Test(arguments: ["10 parsecs", "mA", "", "1.2.3 s", "ten s", "nan s", "1e400 s"])
    func rejectsNonsense(text: String) {
        #expect(Quantity.parse(text) == nil)
    }

    @Test func rangeAndDimensionProblemsAreReported() {
        let spec = PropertySpec("power", .quantity(.power), range: 0...0.5)
        #expect(spec.problem(with: .quantity(Quantity(0.1, .power))) == nil)
        #expect(spec.problem(with: .quantity(Quantity(1, .power)))?.contains("outside the allowed range") == true)
        #expect(spec.problem(with: .quantity(Quantity(0.1, .current)))?.contains("expected a power") == true)
        #expect(spec.problem(with: .bool(true)) != nil)
    }
}

@Suite struct PolarizationTests {
    /// The analyzer table must project the transmitted port onto exactly the labelled
    /// state (R = (H − iV)/√2): this pins the R/L sign convention end to end.
    @Test(arguments: PolarizationLabel.allCases)
    func analyzerAnglesProjectOntoTheLabelledState(label: PolarizationLabel) {
        let (q, h) = label.analyzerAngles
        let states = JonesMatrix.analyzerStates(qwp: q, hwp: h)
        #expect(abs(label.jones.inner(states.pass).lengthSquared - 1) < 1e-12)
        #expect(abs(label.orthogonal.jones.inner(states.reflect).lengthSquared - 1) < 1e-12)
        #expect(label.jones.inner(states.reflect).lengthSquared < 1e-12)
    }

    /// A linear analyzer at θ (the CHSH settings) passes the linear state cos θ H + sin θ V,
    /// through the same Jones physics the simulated lab measures with.
    @Test(arguments: [0.0, 22.5, 45, 67.5, -30])
    func linearAnalyzerSettingPassesTheLinearStateAtItsAngle(theta: Double) {
        let radians = theta * .pi / 180
        let linear = JonesVector(Complex(cos(radians)), Complex(sin(radians)))
        let states = AnalyzerSetting.linear(degrees: theta).projectedStates
        #expect(abs(linear.inner(states.pass).lengthSquared - 1) < 1e-12)
        #expect(linear.inner(states.reflect).lengthSquared < 1e-12)
    }

    @Test func labelledStatesAreNotConfused() {
        // R and L are orthogonal, and D is unbiased with respect to R.
        #expect(PolarizationLabel.R.jones.inner(PolarizationLabel.L.jones).lengthSquared < 1e-15)
        #expect(abs(PolarizationLabel.D.jones.inner(PolarizationLabel.R.jones).lengthSquared - 0.5) < 1e-12)
    }

    @Test func basisSetsHaveTheDocumentedSizes() {
        #expect(TomographyBasisSet.standard16.settings.count == 16)
        #expect(TomographyBasisSet.full36.settings.count == 36)
        #expect(TomographyBasisSet.bases9.settings.count == 9)
    }
}
