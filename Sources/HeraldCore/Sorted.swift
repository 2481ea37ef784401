extension Array where Element == Int64 {
    /// The index of the first element ≥ `x` in an array in ascending order (a binary search:
    /// `count` when every element is below `x`).
    public func firstIndex(notBelow x: Int64) -> Int {
        var lo = 0, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if self[mid] < x { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
