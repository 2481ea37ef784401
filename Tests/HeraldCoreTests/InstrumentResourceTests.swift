import HeraldCore
import Testing

/// VISA resource strings as instrument manuals print them, read as matches; the kinds Herald
/// cannot reach are refused with what to write instead.
@Suite struct InstrumentResourceTests {
    @Test(arguments: [
        ("USB0::0x1313::0x804A::M00412345::INSTR", DeviceMatch.usb(vendor: 0x1313, product: 0x804A, serial: "M00412345")),
        ("usb::4883::32842::M00412345::0::INSTR", .usb(vendor: 4883, product: 32842, serial: "M00412345")),
        ("USB0::0x04D8::0x000A::TDC1-00141::RAW", .usb(vendor: 0x04D8, product: 0x000A, serial: "TDC1-00141")),
        ("ASRL/dev/ttyUSB0::INSTR", .serial(path: "/dev/ttyUSB0", baud: nil)),
        ("ASRL/dev/serial/by-id/usb-FTDI_FT232R-if00-port0::INSTR", .serial(path: "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0", baud: nil)),
        ("TCPIP0::192.168.1.20::5025::SOCKET", .tcp(host: "192.168.1.20", port: 5025)),
        ("  TCPIP::pm-lab.local::5025::socket ", .tcp(host: "pm-lab.local", port: 5025)),
    ])
    func accepted(text: String, match: DeviceMatch) throws {
        #expect(try InstrumentResource.parse(text).get() == match)
    }

    @Test(arguments: [
        ("USB0::0x1313::0x804A::M001::FOO", "unknown resource class 'FOO'"),
        ("USB0::0x1313::ZZZZ::M001::INSTR", "must be USB ids"),
        ("TCPIP0::host::inst0::INSTR", "VXI-11 or HiSLIP"),
        ("TCPIP0::host::99999::SOCKET", "port must be 1–65535"),
        ("TCPIP0::bad host!::5025::SOCKET", "not a host name"),
        ("ASRL3::INSTR", "names a serial port by number"),
        ("GPIB0::12::INSTR", "GPIB resources are not supported"),
        ("PXI0::1::INSTR", "PXI resources are not supported"),
        ("FOO0::1::INSTR", "unknown interface"),
        ("/dev/ttyUSB0", "not a VISA resource string"),
        ("USB0::0x1313::0x804A::M001::", "ends without a resource class"),
    ])
    func refused(text: String, message: String) {
        guard case .failure(let e) = InstrumentResource.parse(text) else {
            Issue.record("\(text) was accepted")
            return
        }
        #expect(e.description.contains(message), "\(e.description)")
    }
}
