import HeraldCore
import Testing

/// The one table of figure names: every figure's key reads back as that figure, so a name
/// written to HDF5 or JSON is always understood again, and units come with it.
@Suite struct FigureTableTests {
    static let figures: [Figure] =
        BellState.allCases.flatMap { [Figure.fidelity($0), .linearFidelity($0)] } + [
            .targetFidelity, .maxFidelity, .concurrence, .tangle, .purity, .entropy, .linearEntropy, .negativity,
            .logNegativity, .maxCHSH, .intensity, .linearMinEigenvalue, .chshS, .violationSigma, .correlation,
            .settingTotal, .g2Zero, .heralds, .heraldAnd1, .heraldAnd2, .heraldAnd1And2, .rate(channel: 3),
            .coincidenceRate(1, 4), .slope(2, 3), .intercept(2, 3), .sweptValue, .error(.rate(channel: 1)),
            .error(.coincidenceRate(1, 3)), .error(.correlation),
        ]

    @Test func everyKeyReadsBackAsItsFigure() {
        for f in Self.figures { #expect(Figure(key: f.key) == f, "\(f.key)") }
        #expect(Set(Self.figures.map(\.key)).count == Self.figures.count, "two figures share a key")
        #expect(Figure(key: "no_such_figure") == nil)
        #expect(Figure(key: "coincidence_rate_1_3_bogus") == nil)
    }

    @Test func unitsFollowTheFigure() {
        #expect(Figure.slope(1, 3).unit(swept: "W") == "s^-1 W^-1")
        #expect(Figure.error(.rate(channel: 2)).unit() == "s^-1")
        #expect(Figure.sweptValue.unit(swept: "deg") == "deg")
        #expect(Figure.concurrence.unit() == "1")
        #expect(Figure.entropy.unit() == "bit")
    }
}
