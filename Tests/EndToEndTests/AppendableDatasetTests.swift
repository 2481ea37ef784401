import Foundation
import HeraldHDF5
import Testing

/// Growable datasets take appends of any size (single rows, partial chunks, blocks spanning
/// many chunks) and hold exactly what was appended, in order: uncompressed through direct
/// chunk writes, compressed through the parallel deflate path. Every uncompressed element is
/// on disk as soon as it is appended (the live tables rely on it, with no tail to write).
@Suite struct AppendableDatasetTests {
    @Test(arguments: [false, true])
    func appendsOfEverySizeReadBackInOrder(compressed: Bool) throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("a.h5").path
        var rng = SystemRandomNumberGenerator()
        var expected: [Int64] = []
        let file = try H5File.create(path, swmr: true)
        let d = try file.group("g").appendable(
            "x", of: Int64.self, chunk: 7, compression: compressed ? DeflateSettings(level: 1) : nil)
        try file.startSWMRWrite()
        for round in 0..<200 {
            let n = [0, 1, 2, 6, 7, 8, 13, 14, 50][Int.random(in: 0..<9, using: &rng)]
            let block = (0..<n).map { _ in Int64.random(in: .min ... .max, using: &rng) }
            try d.append(block)
            expected += block
            #expect(d.count == expected.count)
            if round % 5 == 0 {
                try d.writeTail()
                try file.flush()
                if !compressed {
                    // Uncompressed, what was appended is already in the dataset, with no tail to write.
                    #expect(try d.extent == expected.count)
                }
            }
        }
        try d.writeTail()
        file.close()
        let read = try H5File.open(path)
        defer { read.close() }
        #expect(try read.openGroup("g").dataset("x").read(Int64.self) == expected)
    }
}

/// libhdf5's descriptors are closed on exec: a child process started while a run file is
/// open must not inherit it (and its lock), or this process could not open the file again.
@Test func hdf5FilesAreNotInheritedByChildProcesses() throws {
    let dir = try Paths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("cloexec.h5").path
    func descriptors() throws -> [Int32] {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap { name in
            guard let fd = Int32(name), let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)") else { return nil }
            return target == path ? fd : nil
        }
    }
    let created = try H5File.create(path)
    let writing = try descriptors()
    #expect(!writing.isEmpty && writing.allSatisfy { fcntl($0, F_GETFD) & FD_CLOEXEC != 0 })
    created.close()
    let opened = try H5File.open(path)
    let reading = try descriptors()
    #expect(!reading.isEmpty && reading.allSatisfy { fcntl($0, F_GETFD) & FD_CLOEXEC != 0 })
    opened.close()
}
