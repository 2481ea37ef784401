import Foundation
import Testing

/// Real libusb and libudev code paths against an emulated device (umockdev), not a mock:
/// the testbed's sysfs and /dev are what the libraries see.
@Suite struct USBEnumerationTests {
    @Test func devicesListsAnEmulatedInstrumentThroughLibusbAndUdev() async throws {
        let fixture = Paths.root.appendingPathComponent("Tests/Fixtures/usb/itc4001.umockdev").path
        let r = try await runProcess("umockdev-run", ["-d", fixture, "--", Paths.herald.path, "devices"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 1, "exactly the emulated device: \(r.stdout)")
        // Vendor/product/bus/address from libusb's descriptor read; serial and names from udev's sysfs.
        #expect(lines.first?.hasPrefix("1313:804a bus 1 address 7 port 1-3") == true, "\(r.stdout)")
        #expect(lines.first?.contains("serial M00412345") == true)
        #expect(lines.first?.contains("Thorlabs ITC4001") == true)
    }
}
