import HeraldCore
import Testing

/// The CLI's numbers: rounded to their uncertainty, with units a person reads.
@Suite struct DisplayTests {
    @Test func valuesAreRoundedToTheirUncertainty() {
        #expect(Display.measured(1_187_868.4, 7_512, unit: "s^-1 W^-1") == "1187868 ± 7500 s⁻¹ W⁻¹")
        #expect(Display.measured(0.925331, 0.00703) == "0.9253 ± 0.0070")
        #expect(Display.measured(2.5453, 0.0098) == "2.5453 ± 0.0098")
        #expect(Display.measured(55152.3, 110.9, unit: "s^-1") == "55152 ± 110 s⁻¹")
        #expect(Display.measured(0.0073651, 0.00142) == "0.0074 ± 0.0014")
        #expect(Display.measured(3, nil, unit: "counts") == "3 counts")
        // Bare SI units take a prefix: a HOM dip's centre and width in ns.
        #expect(Display.measured(30.0001e-9, 0.0057e-9, unit: "s") == "30.0001 ± 0.0057 ns")
        #expect(Display.measured(6.5e-9, 0.52e-9, unit: "s") == "6.50 ± 0.52 ns")
        #expect(Display.measured(22.9447, nil, unit: "s") == "22.9447 s")
        #expect(Display.measured(22_944_729, nil, unit: "counts") == "22944729 counts")
    }

    @Test func quantitiesTakeThePrefixOfTheirScale() {
        #expect(Display.quantity(0.018000000000000002, unit: "W") == "18 mW")
        #expect(Display.quantity(0.002, unit: "W", scale: 0.02) == "2 mW")
        #expect(Display.quantity(1e-9, unit: "s") == "1 ns")
        #expect(Display.quantity(22.5, unit: "deg") == "22.5 deg")
        #expect(Display.unitText("s^-1") == "s⁻¹")
    }
}
