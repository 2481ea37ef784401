import HeraldAnalysis
import HeraldCore
import Testing

@Suite struct CoincidenceTests {
    /// The two-pointer counter must agree with the O(n²) definition, boundaries included.
    @Test func agreesWithBruteForce() {
        var rng = SeededGenerator(seed: 7)
        for trial in 0..<20 {
            let a = (0..<300).map { _ in Int64.random(in: 0..<200_000, using: &rng) }.sorted()
            let b = (0..<300).map { _ in Int64.random(in: 0..<200_000, using: &rng) }.sorted()
            let window = Double(trial * 100 + 1) * 1e-12
            let counter = CoincidenceCounter(window: window)
            var brute = 0
            for x in a { for y in b where 2 * abs(x - y) <= counter.windowPs { brute += 1 } }
            #expect(counter.count(a, b) == brute)
        }
    }

    @Test func windowIsFullWidthAndInclusive() {
        let counter = CoincidenceCounter(window: 1e-9)  // ±500 ps
        #expect(counter.count([1000], [1500]) == 1)
        #expect(counter.count([1000], [501]) == 1)
        #expect(counter.count([1000], [1501]) == 0)
        #expect(counter.count([1000], [499]) == 0)
    }

    @Test func delaysShiftAChannel() {
        let block = TagBlock(timestamps: [100, 2000, 3000], channels: [1, 3, 1])
        let counter = CoincidenceCounter(window: 1e-10, delays: [3: -1.9e-9])
        #expect(counter.channel(3, of: block) == [100])
        #expect(counter.count(counter.channel(1, of: block), counter.channel(3, of: block)) == 1)
    }

    @Test func accidentalsFollowFromSinglesAndWindow() {
        let counter = CoincidenceCounter(window: 2e-9)
        // 10⁵ and 2·10⁵ singles in 1 s with a 2 ns window: 10⁵·2·10⁵·2·10⁻⁹ = 40.
        #expect(abs(counter.accidentals(100_000, 200_000, seconds: 1) - 40) < 1e-9)
    }
}
