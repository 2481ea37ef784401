"""Instrument models for the emulated USB lab: each follows its instrument's protocol (not a
replay of one conversation) and applies the fault switches. They share a Lab, so an
experiment script sees physics: the laser current sets the pair rate, the waveplate
angles set which detectors click together.
"""
import cmath
import math
import random
import re
import struct
import time

from usbdevfs import Stall, config_descriptor, device_descriptor, later

# ----------------------------------------------------------------------------------------
# The shared lab: a polarization-entangled pair source (Werner state around Φ+), two
# analyzers (QWP, HWP, PBS), four detectors (1, 2 = arm a pass/reflect; 3, 4 = arm b).


def hwp(deg):
    t = math.radians(2 * deg)
    return [[math.cos(t), math.sin(t)], [math.sin(t), -math.cos(t)]]


def qwp(deg):
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    off = complex(s * c, -s * c)
    return [[complex(c * c, s * s), off], [off, complex(s * s, c * c)]]


def matmul(m, n):
    return [[m[0][0] * n[0][0] + m[0][1] * n[1][0], m[0][0] * n[0][1] + m[0][1] * n[1][1]],
            [m[1][0] * n[0][0] + m[1][1] * n[1][0], m[1][0] * n[0][1] + m[1][1] * n[1][1]]]


def analyzer_states(q, h):
    """States projected on by the PBS's pass and reflect ports behind QWP(q) then HWP(h)
    (Herald's convention, Sources/HeraldCore/Polarization.swift)."""
    m = matmul(hwp(h), qwp(q))
    back = [[complex(m[0][0]).conjugate(), complex(m[1][0]).conjugate()],
            [complex(m[0][1]).conjugate(), complex(m[1][1]).conjugate()]]
    return (back[0][0], back[1][0]), (back[0][1], back[1][1])


class Lab:
    def __init__(self, seed=1, pair_rate=20000.0, nominal_current=0.05, threshold_current=0.01,
                 visibility=0.95, efficiency=0.3, dark_rate=50.0):
        self.random = random.Random(seed)
        self.pair_rate, self.nominal, self.threshold = pair_rate, nominal_current, threshold_current
        self.visibility, self.efficiency, self.dark_rate = visibility, efficiency, dark_rate
        self.laser = None
        self.rotators = {}  # "a-qwp" -> Elliptec

    def angle(self, role):
        r = self.rotators.get(role)
        return r.degrees() if r else 0.0

    def rate(self):
        laser = self.laser
        if laser is None or not laser.emitting():
            return 0.0
        return self.pair_rate * max(0.0, laser.current - self.threshold) / (self.nominal - self.threshold)

    def joint_probabilities(self):
        a = analyzer_states(self.angle("a-qwp"), self.angle("a-hwp"))
        b = analyzer_states(self.angle("b-qwp"), self.angle("b-hwp"))
        probs = []
        for pa in a:
            for pb in b:
                amp = (pa[0].conjugate() * pb[0].conjugate() + pa[1].conjugate() * pb[1].conjugate()) / math.sqrt(2)
                probs.append(self.visibility * abs(amp) ** 2 + (1 - self.visibility) / 4)
        total = sum(probs)
        return [p / total for p in probs]

    def events(self, gate_units):
        """Detections in [0, gate) in 2 ns units: (time, channel pattern), sorted."""
        rnd, seconds = self.random, gate_units * 2e-9
        out = []
        n = self.poisson(self.rate() * seconds)
        probs = self.joint_probabilities()
        for _ in range(n):
            t = rnd.randrange(gate_units)
            x, k = rnd.random(), 0
            while k < 3 and x > probs[k]:
                x -= probs[k]
                k += 1
            if rnd.random() < self.efficiency:
                out.append((t, 1 << (k // 2)))          # arm a: channel 1 pass, 2 reflect
            if rnd.random() < self.efficiency:
                out.append((t, 1 << (2 + k % 2)))       # arm b: channel 3 pass, 4 reflect
        for ch in range(4):
            for _ in range(self.poisson(self.dark_rate * seconds)):
                out.append((rnd.randrange(gate_units), 1 << ch))
        out.sort()
        merged = []  # one word per time stamp: simultaneous channels share a pattern
        for t, p in out:
            if merged and merged[-1][0] == t:
                merged[-1] = (t, merged[-1][1] | p)
            else:
                merged.append((t, p))
        return merged

    def poisson(self, mean):
        if mean <= 0:
            return 0
        if mean > 50:
            return max(0, int(round(self.random.gauss(mean, math.sqrt(mean)))))
        limit, k, p = math.exp(-mean), 0, 1.0
        while True:
            p *= self.random.random()
            if p <= limit:
                return k
            k += 1


class Instrument:
    """Base: the USB identity, one-shot fault switches, and a command log."""
    vid = pid = 0
    manufacturer = product = ""

    def __init__(self, lab, serial):
        self.lab, self.serial = lab, serial
        self.device = None
        self.log = []
        self.faults = set()  # one-shot faults armed for the next reply

    def attach(self, device):
        self.device = device

    def arm(self, fault):
        if fault == "stall":
            self.device.stall_next = True
        elif fault == "timeout":
            self.device.silent = True
        else:
            self.faults.add(fault)

    def take(self, fault):
        if fault in self.faults:
            self.faults.discard(fault)
            return True
        return False

    def state(self):
        return {}


# ----------------------------------------------------------------------------------------
# Thorlabs ITC4001 over USBTMC / USB488 with SCPI


class USBTMCInstrument(Instrument):
    """A USBTMC/USB488 instrument: bulk framing, the abort/clear requests, an error queue;
    subclasses answer their SCPI commands in `execute`."""
    BULK_OUT, BULK_IN, INTR_IN = 0x01, 0x81, 0x82

    def __init__(self, lab, serial):
        super().__init__(lab, serial)
        self.errors, self.replies, self.requests = [], [], []
        self.partial = b""

    def descriptors(self):
        return device_descriptor(self.vid, self.pid) + config_descriptor(
            [(0xFE, 3, 1, [(self.BULK_OUT, 2, 64), (self.BULK_IN, 2, 64), (self.INTR_IN, 3, 2)])])

    # USBTMC bulk-OUT: DEV_DEP_MSG_OUT carries commands, REQUEST_DEV_DEP_MSG_IN asks for a reply.
    def bulk_out(self, endpoint, data):
        if len(data) < 12 or data[2] != (~data[1] & 0xFF):
            raise Stall()  # a real device halts the pipe on a bad header
        msg, tag = data[0], data[1]
        size = struct.unpack_from("<I", data, 4)[0]
        if msg == 1:
            self.partial += data[12:12 + size]
            if data[8] & 1:  # EOM
                text, self.partial = self.partial.decode("ascii", "replace"), b""
                for command in text.replace("\n", ";").split(";"):
                    if command.strip():
                        self.execute(command.strip())
        elif msg == 2:
            self.requests.append((tag, size))

    def bulk_in(self, endpoint, max_length):
        if not self.requests or not self.replies:
            return None
        tag, size = self.requests.pop(0)
        payload = self.replies.pop(0)
        if self.take("garbage"):
            payload = bytes([0xFF, 0xFE, 0x80, 0x81]) + payload
        out_tag = (((tag + 1) & 0xFF) or 1) if self.take("wrong-btag") else tag
        header = struct.pack("<BBBBIBBBB", 2, out_tag, ~tag & 0xFF, 0, len(payload), 1, 0, 0, 0)
        if self.take("malformed"):
            header = b"\x07" + header[1:]
        message = header + payload + b"\0" * ((4 - len(payload) % 4) % 4)
        if self.take("short"):
            message = message[:6]
        return message[:max_length]

    def control(self, request_type, request, value, index, length, data):
        if request == 7:  # GET_CAPABILITIES
            return bytes([1, 0, 0x00, 0x01, 0x04, 0x01, 0, 0, 0, 0, 0, 0, 0x00, 0x01, 0x06, 0x0F]) + bytes(8)
        if request in (1, 3):  # INITIATE_ABORT_BULK_OUT / _IN: drop the exchange with that bTag
            self.log.append(f"<abort bulk {'in' if request == 3 else 'out'} tag {value}>")
            self.requests, self.replies, self.partial = [], [], b""
            self.device.silent = False
            return bytes([1, value & 0xFF])
        if request in (2, 4):  # CHECK_ABORT_*_STATUS
            return bytes([1, 0, 0, 0, 0, 0, 0, 0])
        if request == 5:  # INITIATE_CLEAR
            self.log.append("<clear>")
            self.requests, self.replies, self.partial = [], [], b""
            self.device.silent = False
            return bytes([1])
        if request == 6:  # CHECK_CLEAR_STATUS
            return bytes([1, 0])
        if request == 128:  # USB488 READ_STATUS_BYTE
            return bytes([1, value & 0xFF, (0x10 if self.replies else 0) | (0x04 if self.errors else 0)])
        return b""

    NUMBER = r"\s+([-+0-9.eE]+)"

    def reply(self, text):
        self.replies.append((text + "\n").encode())

    def number(self, m):
        try:
            return float(m.group(m.lastindex))
        except ValueError:
            self.errors.append('-104,"Data type error"')
            return None

    def in_range(self, m, low, high):
        """The command's number if within [low, high]; else queues the SCPI error and gives None."""
        v = self.number(m)
        if v is not None and not low <= v <= high:
            self.errors.append('-222,"Data out of range"')
            return None
        return v

    def execute(self, command):
        """IEEE 488.2's common commands here; the instrument's own in `answer`."""
        self.log.append(command)
        c = command.upper()
        if re.fullmatch(r"\*CLS", c):
            self.errors = []
        elif re.fullmatch(r"SYST(EM)?:ERR(OR)?(:NEXT)?\?", c):
            self.reply(self.errors.pop(0) if self.errors else '+0,"No error"')
        elif re.fullmatch(r"\*IDN\?", c):
            self.reply(f"{self.manufacturer},{self.product},{self.serial},{self.firmware}")
        elif not self.answer(c):
            self.errors.append('-113,"Undefined header"')

    def answer(self, c):
        return False


class ITC4001(USBTMCInstrument):
    vid, pid, manufacturer, product = 0x1313, 0x804A, "Thorlabs", "ITC4001"

    def __init__(self, lab, serial, keylock_tripped=False):
        super().__init__(lab, serial)
        lab.laser = self
        self.output, self.current, self.limit = False, 0.0, 1.0
        self.tec, self.temp_setpoint = True, 298.15
        self.keylock, self.interlock = keylock_tripped, False

    def emitting(self):
        return self.output and not self.keylock and not self.interlock

    def state(self):
        return {"output": self.output, "current": self.current, "tec": self.tec}

    def execute(self, command):
        self.log.append(command)
        c = command.upper()

        def match(pattern):
            return re.fullmatch(pattern, c)

        reply, number = self.reply, self.number

        if match(r"\*IDN\?"):
            reply(f"Thorlabs,ITC4001,{self.serial},1.8.0/1.5.0/2.3.0")
        elif match(r"\*CLS"):
            self.errors = []
        elif match(r"\*RST"):
            self.output, self.current = False, 0.0
        elif match(r"UNIT:TEMP(ERATURE)?\s+(K|KEL)"):
            pass
        elif m := match(r"OUTP(UT)?1?(:STAT(E)?)?\s+(ON|OFF|1|0)"):
            on = m.group(4) in ("ON", "1")
            if on and (self.keylock or self.interlock):
                self.errors.append('-221,"Settings conflict; key lock or interlock open"')
            else:
                self.output = on
        elif match(r"OUTP(UT)?1?(:STAT(E)?)?\?"):
            reply("1" if self.output else "0")
        elif m := match(r"OUTP(UT)?2(:STAT(E)?)?\s+(ON|OFF|1|0)"):
            self.tec = m.group(4) in ("ON", "1")
        elif match(r"OUTP(UT)?2(:STAT(E)?)?\?"):
            reply("1" if self.tec else "0")
        elif m := match(r"SOUR(CE)?1?:CURR(ENT)?:LIM(IT)?(:AMPL(ITUDE)?)?" + self.NUMBER):
            v = number(m)
            if v is not None:
                self.limit = v
                self.current = min(self.current, v)
        elif match(r"SOUR(CE)?1?:CURR(ENT)?:LIM(IT)?(:AMPL(ITUDE)?)?\?"):
            reply(f"{self.limit:.6E}")
        elif m := match(r"SOUR(CE)?1?:CURR(ENT)?(:LEV(EL)?)?" + self.NUMBER):
            v = number(m)
            if v is not None:
                if v > self.limit or v < 0:
                    self.errors.append('-222,"Data out of range"')
                else:
                    self.current = v
        elif match(r"SOUR(CE)?1?:CURR(ENT)?(:LEV(EL)?)?\?"):
            reply(f"{self.current:.6E}")
        elif m := match(r"SOUR(CE)?2:TEMP(ERATURE)?(:SPO(INT)?)?" + self.NUMBER):
            v = number(m)
            if v is not None:
                self.temp_setpoint = v
        elif match(r"SOUR(CE)?2:TEMP(ERATURE)?(:SPO(INT)?)?\?"):
            reply(f"{self.temp_setpoint:.6E}")
        elif match(r"MEAS(URE)?1?:CURR(ENT)?\?"):
            reply(f"{self.current if self.emitting() else 0.0:.6E}")
        elif match(r"MEAS(URE)?:TEMP(ERATURE)?\?"):
            reply(f"{self.temp_setpoint if self.tec else 298.15:.6E}")
        elif match(r"OUTP(UT)?1?:PROT(ECTION)?:KEYL(OCK)?:TRIP(PED)?\?"):
            reply("1" if self.keylock else "0")
        elif match(r"OUTP(UT)?1?:PROT(ECTION)?:INTL(OCK)?:TRIP(PED)?\?"):
            reply("1" if self.interlock else "0")
        elif match(r"SYST(EM)?:ERR(OR)?(:NEXT)?\?"):
            reply(self.errors.pop(0) if self.errors else '+0,"No error"')
        else:
            self.errors.append('-113,"Undefined header"')


class PM100(USBTMCInstrument):
    """A PM100D console reading the pump through a pick-off: 10 mW at the nominal current,
    linear above threshold, 0 with the output off; 1% noise."""
    vid, pid, manufacturer, product, firmware = 0x1313, 0x8078, "Thorlabs", "PM100D", "2.5.0"

    def __init__(self, lab, serial):
        super().__init__(lab, serial)
        self.wavelength = 633.0
        self.readings = 0

    def state(self):
        return {"wavelength_nm": self.wavelength, "readings": self.readings}

    def answer(self, c):
        if re.fullmatch(r"CONF(IGURE)?(:SCAL(AR)?)?:POW(ER)?", c) or re.fullmatch(r"SENS(E)?:POW(ER)?(:DC)?:RANG(E)?:AUTO\s+(ON|1)", c):
            pass
        elif m := re.fullmatch(r"SENS(E)?:CORR(ECTION)?:WAV(ELENGTH)?" + self.NUMBER, c):
            v = self.in_range(m, 400, 1100)
            if v is not None:
                self.wavelength = v
        elif re.fullmatch(r"SENS(E)?:CORR(ECTION)?:WAV(ELENGTH)?\?\s+MIN(IMUM)?", c):
            self.reply(f"{400.0:.6E}")  # an S120C photodiode sensor
        elif re.fullmatch(r"SENS(E)?:CORR(ECTION)?:WAV(ELENGTH)?\?\s+MAX(IMUM)?", c):
            self.reply(f"{1100.0:.6E}")
        elif re.fullmatch(r"SENS(E)?:CORR(ECTION)?:WAV(ELENGTH)?\?", c):
            self.reply(f"{self.wavelength:.6E}")
        elif re.fullmatch(r"MEAS(URE)?(:SCAL(AR)?)?:POW(ER)?\?", c):
            self.readings += 1
            laser, lab = self.lab.laser, self.lab
            watts = 0.0
            if laser is not None and laser.emitting():
                watts = 0.010 * max(0.0, laser.current - lab.threshold) / (lab.nominal - lab.threshold)
            self.reply(f"{watts * (1 + 0.01 * lab.random.gauss(0, 1)):.6E}")
        else:
            return False
        return True


class TED4015(USBTMCInstrument):
    """A TED4015 holding the crystal: output and setpoint set its temperature at once."""
    vid, pid, manufacturer, product, firmware = 0x1313, 0x8048, "Thorlabs", "TED4015", "1.6.0"

    def __init__(self, lab, serial):
        super().__init__(lab, serial)
        self.output, self.setpoint = False, 298.15

    def state(self):
        return {"output": self.output, "setpoint": self.setpoint}

    def answer(self, c):
        if re.fullmatch(r"UNIT:TEMP(ERATURE)?\s+(K|KEL)", c):
            pass
        elif m := re.fullmatch(r"OUTP(UT)?(:STAT(E)?)?\s+(ON|OFF|1|0)", c):
            self.output = m.group(4) in ("ON", "1")
        elif re.fullmatch(r"OUTP(UT)?(:STAT(E)?)?\?", c):
            self.reply("1" if self.output else "0")
        elif m := re.fullmatch(r"SOUR(CE)?:TEMP(ERATURE)?(:SPO(INT)?)?" + self.NUMBER, c):
            v = self.in_range(m, 223, 423)
            if v is not None:
                self.setpoint = v
        elif re.fullmatch(r"SOUR(CE)?:TEMP(ERATURE)?(:SPO(INT)?)?\?", c):
            self.reply(f"{self.setpoint:.6E}")
        elif re.fullmatch(r"MEAS(URE)?:TEMP(ERATURE)?\?", c):
            self.reply(f"{self.setpoint if self.output else 295.0:.6E}")
        else:
            return False
        return True


# ----------------------------------------------------------------------------------------
# FTDI bridge carrying an Elliptec ELL14 (ELLx protocol, 9600 Bd)


class FTDIBridge(Instrument):
    vid, pid = 0x0403, 0x6015
    BULK_IN, BULK_OUT, PACKET = 0x81, 0x02, 64

    def __init__(self, lab, serial):
        super().__init__(lab, serial)
        self.rx, self.tx = b"", b""
        self.baud = None

    def descriptors(self):
        return device_descriptor(self.vid, self.pid) + config_descriptor(
            [(0xFF, 0xFF, 0xFF, [(self.BULK_IN, 2, self.PACKET), (self.BULK_OUT, 2, self.PACKET)])])

    def control(self, request_type, request, value, index, length, data):
        if request == 0:  # reset / purge RX / purge TX
            if value in (0, 1):
                self.tx = b""
            if value in (0, 2):
                self.rx = b""
        elif request == 3:  # baud divisor (AN232B-05)
            code = {0: 0, 3: 1, 2: 2, 4: 3, 1: 4, 5: 5, 6: 6, 7: 7}[(value >> 14) | ((index & 1) << 2)]
            eighths = (value & 0x3FFF) * 8 + code
            self.baud = round(3_000_000 * 8 / eighths) if eighths else 3_000_000
        elif request == 5:  # poll modem status
            return bytes([0x01, 0x60])
        elif request == 10:
            return bytes([2])
        return b""

    def bulk_out(self, endpoint, data):
        if self.baud is not None and abs(self.baud - 9600) > 200:
            return  # a wrong baud rate: the device hears noise
        self.rx += data
        self.parse()

    def bulk_in(self, endpoint, max_length):
        if not self.tx:
            return None
        out = b""
        while self.tx and len(out) + 2 < max_length:
            chunk, self.tx = self.tx[:self.PACKET - 2], self.tx[self.PACKET - 2:]
            out += bytes([0x01, 0x60]) + chunk  # modem status, line status, then data
        return out

    def send(self, text):
        if self.take("garbage"):
            text = "\x8f\x01#" + text[3:]
        elif self.take("malformed"):
            text = text[:1] + "PX" + text[3:]
        elif self.take("short"):
            self.tx += text[:4].encode("latin-1")  # cut off, no CR LF
            self.device.pump()
            return
        self.tx += (text + "\r\n").encode("latin-1")
        self.device.pump()


class ELL14(FTDIBridge):
    manufacturer, product = "Thorlabs", "Elliptec ELL14"
    PPR = 143360  # pulses per revolution, as the ELL14's `in` reply gives it
    LENGTHS = {"ma": 8, "mr": 8, "ho": 1, "in": 0, "gs": 0, "gp": 0, "gj": 0, "sj": 8, "st": 0}

    def __init__(self, lab, serial, role, address="0"):
        super().__init__(lab, serial)
        self.role, self.address, self.pulses = role, address, 0
        lab.rotators[role] = self

    def degrees(self):
        return self.pulses * 360.0 / self.PPR

    def state(self):
        return {"degrees": self.degrees()}

    def parse(self):
        while len(self.rx) >= 3:
            addr, command = chr(self.rx[0]), self.rx[1:3].decode("latin-1")
            need = self.LENGTHS.get(command)
            if need is None:
                self.log.append(self.rx[:3].decode("latin-1"))
                self.rx = self.rx[3:]
                if addr == self.address:
                    self.send(f"{self.address}GS03")  # command error
                continue
            if len(self.rx) < 3 + need:
                return
            data, self.rx = self.rx[3:3 + need].decode("latin-1"), self.rx[3 + need:]
            self.log.append(addr + command + data)
            if addr == self.address:
                self.execute(command, data)

    def position(self):
        return f"{self.address}PO{self.pulses & 0xFFFFFFFF:08X}"

    def execute(self, command, data):
        if self.device.silent:
            self.device.silent = False  # the reply to this command is lost
            return
        if command == "in":
            self.send(f"{self.address}IN0E{self.serial[-8:]:0>8}20231701016800{self.PPR:06X}")
        elif command == "gs":
            self.send(f"{self.address}GS00")
        elif command == "gp":
            self.send(self.position())
        elif command in ("ma", "ho"):
            try:
                target = 0 if command == "ho" else struct.unpack("<i", struct.pack("<I", int(data, 16)))[0]
            except ValueError:
                self.send(f"{self.address}GS04")
                return
            if not 0 <= target <= self.PPR:
                self.send(f"{self.address}GS04")  # value out of range
                return
            distance = abs(target - self.pulses) * 360.0 / self.PPR
            self.pulses = target
            later(0.005 + distance / 3600.0, lambda: self.send(self.position()))  # moves take time
        else:
            self.send(f"{self.address}GS03")


# ----------------------------------------------------------------------------------------
# S-Fifteen TDC1 over CDC-ACM


class TDC1(Instrument):
    vid, pid, manufacturer, product = 0x04D8, 0x000A, "S-Fifteen Instruments", "TDC1"
    NOTIFY, BULK_OUT, BULK_IN = 0x83, 0x02, 0x81
    PERIOD = 1 << 27

    def __init__(self, lab, serial, bench_rate=None):
        super().__init__(lab, serial)
        self.level, self.gate_ms, self.mode = "NIM", 1000, 0
        self.rx, self.tx = b"", b""
        self.stream = None  # bytes still to stream in timestamp mode
        self.bench_rate = bench_rate
        self.streamed_words = 0

    def descriptors(self):
        return device_descriptor(self.vid, self.pid, dev_class=2) + config_descriptor([
            (0x02, 0x02, 0x01, [(self.NOTIFY, 3, 8)]),
            (0x0A, 0x00, 0x00, [(self.BULK_OUT, 2, 64), (self.BULK_IN, 2, 64)])])

    def state(self):
        return {"streamed_words": self.streamed_words, "level": self.level}

    def control(self, request_type, request, value, index, length, data):
        return b""  # SET_LINE_CODING, SET_CONTROL_LINE_STATE: a virtual port accepts anything

    def bulk_out(self, endpoint, data):
        self.rx += data
        while True:
            cut = min([i for i in (self.rx.find(b"\r"), self.rx.find(b"\n"), self.rx.find(b";")) if i >= 0], default=-1)
            if cut < 0:
                return
            command, self.rx = self.rx[:cut].decode("latin-1").strip(), self.rx[cut + 1:]
            if command:
                self.execute(command)

    def reply(self, text):
        if self.take("garbage"):
            text = "\x8f\x01" + text
        self.tx += (text + "\r\n").encode("latin-1")
        self.device.pump()

    def execute(self, command):
        self.log.append(command)
        c = command.upper()
        if self.device.silent and c.endswith("?"):
            self.device.silent = False  # the reply to this query is lost
            return
        if c == "*IDN?":
            self.reply(f"S-Fifteen Instruments,TDC1,{self.serial},1.3")
        elif c in ("NIM", "TTL"):
            self.level = c
        elif c == "LEVEL?":
            self.reply(self.level)
        elif c.startswith("TIME ") and c[5:].strip().isdigit():
            self.gate_ms = int(c[5:])
        elif c == "TIME?":
            self.reply(str(self.gate_ms))
        elif c in ("SINGLES", "PAIRS", "TIMESTAMP"):
            self.mode = {"SINGLES": 0, "PAIRS": 1, "TIMESTAMP": 3}[c]
        elif c == "MODE?":
            self.reply(str(self.mode))
        elif c == "COUNTS?" and self.mode == 3:
            self.start_stream()
        elif c == "COUNTS?":
            events = self.lab.events(self.gate_ms * 500_000)
            counts = [sum(1 for _, p in events if p & (1 << ch)) for ch in range(4)]
            self.reply(" ".join(map(str, counts)))
        elif c == "ABORT":
            self.stream, self.tx = None, b""
        # unknown commands are ignored, as the TDC1 firmware does

    def start_stream(self):
        gate = (self.gate_ms or 1000) * 500_000  # 2 ns units
        if self.bench_rate:
            self.stream = self.bench_stream(gate)
        else:
            words = []
            last = 0
            for t, pattern in self.lab.events(gate):
                while t - last > self.PERIOD // 4:  # idle words keep the wrap count
                    last += self.PERIOD // 4
                    words.append(((last % self.PERIOD) << 5) | 0x10)
                words.append(((t % self.PERIOD) << 5) | pattern)
                last = t
            while gate - last > self.PERIOD // 4:
                last += self.PERIOD // 4
                words.append(((last % self.PERIOD) << 5) | 0x10)
            words.append(((gate % self.PERIOD) << 5) | 0x10)  # the gate has passed
            self.streamed_words += len(words)
            self.stream = self.paced(words)
        self.pending = b""
        self.device.pump()

    def paced(self, words):
        """Releases words as the unit's clock reaches them (real time), as hardware does."""
        started, i, unwrapped, last = time.monotonic(), 0, [], 0
        for w in words:  # unwrap for pacing
            t = w >> 5
            base = (last // self.PERIOD) * self.PERIOD
            last = base + t if base + t >= last else base + self.PERIOD + t
            unwrapped.append(last)
        while i < len(words):
            now_units = (time.monotonic() - started) / 2e-9
            j = i
            while j < len(words) and unwrapped[j] <= now_units:
                j += 1
            if j == i:
                later(0.005, self.device.pump)
                yield b""
                continue
            yield struct.pack(f"<{j - i}I", *words[i:j])
            i = j

    def bench_stream(self, gate):
        """A high-rate stream for throughput tests: one wrap period of evenly spaced
        detections, repeated (the words repeat exactly because time wraps with the period)."""
        per_period = int(self.bench_rate * self.PERIOD * 2e-9)
        step = self.PERIOD // per_period
        words = [((i * step) << 5) | (1 << (i % 4)) for i in range(per_period)]
        tile = struct.pack(f"<{len(words)}I", *words)
        full, rest = divmod(gate, self.PERIOD)
        for _ in range(full):
            self.streamed_words += len(words)
            yield tile
        tail = [w for w in words if (w >> 5) < rest] + [(rest << 5) | 0x10]
        self.streamed_words += len(tail)
        yield struct.pack(f"<{len(tail)}I", *tail)

    def bulk_in(self, endpoint, max_length):
        if self.tx:
            out, self.tx = self.tx[:max_length], self.tx[max_length:]
            return out
        if self.stream is None:
            return None
        while len(self.pending) < max_length:
            chunk = next(self.stream, None)
            if chunk is None:
                if not self.pending:
                    self.stream = None
                    return None
                break
            if not chunk:  # the unit's clock has not reached the next word yet
                if not self.pending:
                    return None
                break
            self.pending += chunk
        out, self.pending = self.pending[:max_length], self.pending[max_length:]
        if len(out) >= 8 and self.take("garbage"):  # two words whose time runs backwards
            t = struct.unpack_from("<I", out, 0)[0] >> 5
            out = struct.pack("<II", (((t + 5000) % self.PERIOD) << 5) | 1, (t << 5) | 1) + out[8:]
        if self.take("short"):  # the unit stops streaming mid-gate
            self.stream, self.pending = None, b""
        return out
