"""Checks Herald's time-tag decoding against independent decoders from PyPI.

  tttr_checks.py compare FILE INSPECT_JSON IMPORTED_H5
      tttrlib decodes FILE. Every int, float, bool and string header tag must equal Herald's
      (`herald inspect --json`). Photon counts per channel and the first and last photon
      (macro time, micro time) must agree. The Photon-HDF5 file from `herald import` must
      hold tttrlib's arrays element for element, and phconvert must accept it.
  tttr_checks.py phconvert FILE IMPORTED_H5
      For files phconvert decodes (its t3r reader, say): the same array comparison.
  tttr_checks.py legacy FILE INSPECT_JSON IMPORTED_H5
      Legacy containers. HydraHarp .ht3: tttrlib (container "HT3") decodes the records; its
      header fields that share Herald's name and layout must agree (tttrlib parses the 2.0
      input block with the 1.0 field names, so those are skipped). TimeHarp 200 .t3r: every
      field of phconvert's t3r_reader header must agree, and the photons must equal
      phconvert's process_t3records_t3rfile output after two documented corrections
      (see t3r_photons).
      PicoHarp 300 .pt3 (2.0): every field of phconvert's pt3_reader header, hardware and TTTR
      blocks must agree, and the photons must equal phconvert's load_pt3 (markers left out).
  tttr_checks.py make-pt3 OUT
      Writes a PicoHarp 300 .pt3 (format 2.0) file from PicoQuant's published layout (the
      header as phconvert's pt3_reader reads it): 20 000 T3 records of photons on channels
      0-3 with random dtimes, sync overflows (channel 15, dtime 0) and markers (channel 15,
      dtime 1-15), seeded, so Herald's decoder can be checked against phconvert's.
  tttr_checks.py make-t3r6 OUT
      Writes a TimeHarp 200 .t3r of software version 6.0 from PicoQuant's layout (the header
      as the MIT-licensed pqreader package reads it): 20 000 records of photons, overflows
      and markers, seeded. `legacy` checks a 6.0 .t3r against pqreader (phconvert reads 5.0 only).
  tttr_checks.py make-t2 pt2|ht2v1|ht2v2 OUT EXPECTED_NPZ
      Writes a legacy T2 container from PicoQuant's published record layouts (PicoHarp .pt2:
      4-bit channel, 28-bit tag, channel 15 overflow/markers; HydraHarp .ht2: special bit,
      6-bit channel, 25-bit tag, special 63 overflow, V2 counting several, 0 sync, 1-15
      markers) under the header of the matching T3 container in mode 2. Events are drawn first
      (seeded) and encoded; EXPECTED_NPZ holds the photons' true times (ps) and channels.
  tttr_checks.py check-t2 EXPECTED_NPZ IMPORTED_H5
      The import holds exactly those photons (times × timestamps_unit, detectors 0-based), in order.
  tttr_checks.py swabian DUMP IMPORTED_H5
      A Swabian dump read with numpy as Swabian documents the 16-byte tag (type u8, reserved
      u8, missed events u16, channel i32, time i64 ps): the import must hold its time tags
      (type 0) element for element, and phconvert must accept it.
  tttr_checks.py replay FILE RUN_H5 STOP_PS
      A Herald run that replayed FILE up to STOP_PS (replay.timetagger) must hold tttrlib's
      photons before STOP_PS: times in ps (T3: sync × period + micro × resolution, to ±1 ps for
      the rounding), channels + 1, in time order.
"""
import json
import sys
import warnings

import h5py
import numpy as np

TYPES = {0x10000008: "int", 0x20000008: "float", 0x4001FFFF: "str", 0x00000008: "bool"}


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def phconvert_valid(path):
    import tables
    from phconvert import hdf5

    warnings.simplefilter("ignore")
    with tables.open_file(path) as f:
        try:
            hdf5.assert_valid_photon_hdf5(f, warnings=False, strict_description=True)
        except hdf5.Invalid_PhotonHDF5 as e:
            fail(f"phconvert rejects {path}: {e}")
    # And without one warning: identity/author, author_affiliation and /sample are filled or
    # "unspecified" on purpose, as in a run's file.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = hdf5.load_photon_hdf5(path, require_setup=True)
        (loaded if hasattr(loaded, "close") else loaded._v_file).close()
    said = [str(w.message).strip() for w in caught if "Photon-HDF5" in str(w.message)]
    if said:
        fail(f"phconvert warns about {path}: {said}")


def compare_arrays(h5path, times, channels, micro):
    with h5py.File(h5path, "r") as f:
        ts = f["photon_data/timestamps"][:]
        det = f["photon_data/detectors"][:]
        if len(ts) != len(times):
            fail(f"{len(ts)} timestamps in {h5path}, the peer decoded {len(times)}")
        bad = np.nonzero(ts != times)[0]
        if len(bad):
            i = bad[0]
            fail(f"timestamp {i}: Herald {ts[i]}, peer {times[i]} ({len(bad)} differ)")
        if not np.array_equal(det, channels):
            i = np.nonzero(det != channels)[0][0]
            fail(f"detector {i}: Herald {det[i]}, peer {channels[i]}")
        if micro is not None:
            nt = f["photon_data/nanotimes"][:]
            if not np.array_equal(nt, micro):
                i = np.nonzero(nt != micro)[0][0]
                fail(f"nanotime {i}: Herald {nt[i]}, peer {micro[i]}")
    phconvert_valid(h5path)


def compare(path, inspect_json, h5path):
    import tttrlib

    import phconvert.pqreader as pq

    ours = json.load(open(inspect_json))
    d = tttrlib.TTTR(path)
    tags = json.loads(d.header.json)["tags"]
    # phconvert's header reader (by name, scalars only) arbitrates where tttrlib differs:
    # tttrlib adds tags of its own (MeasDesc_NumberMicrotimes) and reads some 64-bit ints as 32-bit.
    in_file = pq.ptu_reader(path)[2]
    arbiter = {k: v for k, v in in_file.items() if isinstance(v, dict) and v["idx"] == -1}
    checked, arbitrated = 0, []

    def same(kind, mine, theirs):
        if kind in ("int", "float"):
            return float(mine) == float(theirs)
        if kind == "bool":
            return bool(mine) == bool(theirs)
        return mine.rstrip() == str(theirs).rstrip("\x00").rstrip()

    for t in tags:
        kind = TYPES.get(t["type"])
        if kind is None:
            continue
        name = t["name"] + (f"[{t['idx']}]" if t["idx"] >= 0 else "")
        if name not in ours["header"]:
            if t["name"] in in_file:
                fail(f"tag {name} (tttrlib: {t['value']!r}) missing from Herald's header")
            continue  # a tag tttrlib made up, not in the file
        mine, theirs = ours["header"][name], t["value"]
        if not same(kind, mine, theirs):
            other = arbiter.get(name)
            value = other and other.get("data", other["value"])
            if other is None or not same(kind, mine, value):
                fail(f"tag {name}: Herald {mine!r}, tttrlib {theirs!r}, phconvert {value!r}")
            arbitrated.append(f"{name} (tttrlib {theirs!r}, phconvert and Herald {mine!r})")
        checked += 1

    photon = d.event_types == 0
    macro = d.macro_times[photon].astype(np.int64)
    micro = d.micro_times[photon].astype(np.uint16)
    chans = d.routing_channels[photon].astype(np.uint8)
    s = ours["statistics"]
    if s["photons"] != len(macro):
        fail(f"photons: Herald {s['photons']}, tttrlib {len(macro)}")
    per = {str(c): int(n) for c, n in zip(*np.unique(chans, return_counts=True))}
    if {str(k): v for k, v in s["photonsPerChannel"].items()} != per:
        fail(f"photons per channel: Herald {s['photonsPerChannel']}, tttrlib {per}")
    if (s["firstPhotonRaw"], s["lastPhotonRaw"]) != (int(macro[0]), int(macro[-1])):
        fail(f"first/last photon: Herald {s['firstPhotonRaw']}/{s['lastPhotonRaw']}, tttrlib {macro[0]}/{macro[-1]}")
    t3 = ours["mode"] == "T3"
    if t3 and (s["firstPhotonMicrotime"], s["lastPhotonMicrotime"]) != (int(micro[0]), int(micro[-1])):
        fail(f"first/last micro time: Herald {s['firstPhotonMicrotime']}/{s['lastPhotonMicrotime']}, tttrlib {micro[0]}/{micro[-1]}")
    unit_ps = d.header.macro_time_resolution * 1e12
    first_ps = round(macro[0] * unit_ps + (micro[0] * d.header.micro_time_resolution * 1e12 if t3 else 0))
    last_ps = round(macro[-1] * unit_ps + (micro[-1] * d.header.micro_time_resolution * 1e12 if t3 else 0))
    if (s["firstPhotonPs"], s["lastPhotonPs"]) != (first_ps, last_ps):
        fail(f"first/last photon in ps: Herald {s['firstPhotonPs']}/{s['lastPhotonPs']}, tttrlib {first_ps}/{last_ps}")
    compare_arrays(h5path, macro, chans, micro if t3 else None)
    print(f"ok: {checked} header tags, {len(macro)} photons equal to tttrlib; phconvert accepts the import")
    for a in arbitrated:
        print(f"  tttrlib differs on {a}")


def with_phconvert(path, h5path):
    import phconvert.pqreader as pq

    loader = {"t3r": pq.load_t3r, "ptu": pq.load_ptu, "ht3": pq.load_ht3}[path.rsplit(".", 1)[-1].lower()]
    times, dets, nanotimes = loader(path)[:3]
    compare_arrays(h5path, times.astype(np.int64), dets.astype(np.uint8), None if nanotimes is None else nanotimes.astype(np.uint16))
    print(f"ok: {len(times)} photons equal to phconvert's decoder")


HT3_SHARED = ["Ident", "FormatVersion", "CreatorName", "CreatorVersion", "FileTime", "Comment", "NumberOfCurves",
              "ActiveCurve", "MeasurementMode", "SubMode", "Binning", "Resolution", "Offset", "DispLinLog",
              "SyncRate", "StopAfter", "StopReason", "ImgHdrSize", "nRecords"]


def t3r_photons(path):
    """phconvert's .t3r decoding, corrected where it departs from PicoQuant's record layout
    (TimeTag 16 | Data 12 | Route 2 | Valid 1 | Reserved 1):
    - it adds an overflow for every invalid record, markers included; only Data bit 11 is one;
    - its `detectors` are bits 30-31 (valid and reserved), so photons are those with value 1
      and the routing channel is taken from bits 28-29.
    The times and micro-times themselves are phconvert's."""
    import phconvert.pqreader as pq

    records = pq.t3r_reader(path)[0]
    valid_bits, times, nanotimes = pq.process_t3records_t3rfile(records)
    photon = valid_bits == 1
    data = (records >> 16) & 0xFFF
    marker = (~photon) & ((data & 0x800) == 0)
    times = times - 65536 * np.cumsum(marker)
    route = ((records >> 28) & 0x3).astype(np.uint8)
    return times[photon].astype(np.int64), route[photon], nanotimes[photon].astype(np.uint16)


PT3_HEADER = [
    ("Ident", "S16"), ("FormatVersion", "S6"), ("CreatorName", "S18"), ("CreatorVersion", "S12"), ("FileTime", "S18"),
    ("CRLF", "S2"), ("Comment", "S256"), ("NumberOfCurves", "<i4"), ("BitsPerRecord", "<i4"), ("RoutingChannels", "<i4"),
    ("NumberOfBoards", "<i4"), ("ActiveCurve", "<i4"), ("MeasurementMode", "<i4"), ("SubMode", "<i4"), ("RangeNo", "<i4"),
    ("Offset", "<i4"), ("AcquisitionTime", "<i4"), ("StopAt", "<u4"), ("StopOnOvfl", "<i4"), ("Restart", "<i4"),
    ("DispLinLog", "<i4"), ("DispTimeAxisFrom", "<i4"), ("DispTimeAxisTo", "<i4"), ("DispCountAxisFrom", "<i4"),
    ("DispCountAxisTo", "<i4"), ("DispCurves", "<i4", (16,)), ("Params", "<f4", (9,)), ("RepeatMode", "<i4"),
    ("RepeatsPerCurve", "<i4"), ("RepeatTime", "<i4"), ("RepeatWaitTime", "<i4"), ("ScriptName", "S20"),
    ("HardwareIdent", "S16"), ("HardwarePartNo", "S8"), ("HardwareSerial", "<i4"), ("SyncDivider", "<i4"),
    ("CFDZeroCross0", "<i4"), ("CFDLevel0", "<i4"), ("CFDZeroCross1", "<i4"), ("CFDLevel1", "<i4"), ("Resolution", "<f4"),
    ("RouterModelCode", "<i4"), ("RouterEnabled", "<i4"), ("Router", "<i4", (24,)), ("ExtDevices", "<i4"),
    ("Reserved1", "<i4"), ("Reserved2", "<i4"), ("InpRate0", "<i4"), ("InpRate1", "<i4"), ("StopAfter", "<i4"),
    ("StopReason", "<i4"), ("nRecords", "<i4"), ("ImgHdrSize", "<i4"),
]


def same_header_fields(meta, header, oracle, renamed={}):
    """Every field of the oracle's header, hardware and TTTR blocks equals Herald's (strings
    exactly, numbers to 1e-6); returns how many were compared."""
    checked = 0
    for part in ("header", "hardware", "ttmode"):
        arr = meta[part]
        for name in arr.dtype.names:
            if name == "CRLF":
                continue
            theirs = arr[name][0]
            theirs = theirs.decode(errors="replace").rstrip("\x00").strip() if isinstance(theirs, bytes) else theirs
            mine = header.get(renamed.get(name, name))
            same = mine == theirs if isinstance(theirs, str) else np.isclose(float(mine), float(theirs), rtol=1e-6)
            if mine is None or not same:
                fail(f"{name}: Herald {mine!r}, {oracle} {theirs!r}")
            checked += 1
    return checked


def synthetic_records(rng, n):
    """Kinds of n records (0 photon, 1 overflow, 2 marker: 90, 8, 2 %) and their 16-bit time
    fields, non-decreasing within each overflow period as a tagger writes them."""
    kind = rng.choice(3, size=n, p=[0.9, 0.08, 0.02])
    time = rng.integers(0, 65536, size=n)
    periods = np.cumsum(kind == 1)
    for p in np.unique(periods):
        idx = np.nonzero(periods == p)[0]
        time[idx] = np.sort(time[idx])
    return kind, time


HH_IDENT = [("Ident", "S16"), ("FormatVersion", "S6"), ("CreatorName", "S18"), ("CreatorVersion", "S12"), ("FileTime", "S18"),
            ("CRLF", "S2"), ("Comment", "S256")]


def hh_header(version, inputs, records, resolution_ps):
    """The HydraHarp container header (as the .ht3 reader checked against real files and
    phconvert reads it), in T2 mode, with `inputs` input blocks."""
    fields = HH_IDENT + [(n, "<i4") for n in ["NumberOfCurves", "BitsPerRecord", "ActiveCurve", "MeasurementMode", "SubMode", "Binning"]]
    fields += [("Resolution", "<f8"), ("Offset", "<i4"), ("Tacq", "<i4"), ("StopAt", "<u4")]
    fields += [(n, "<i4") for n in ["StopOnOvfl", "Restart", "DispLinLog", "DispTimeFrom", "DispTimeTo", "DispCountsFrom", "DispCountsTo"]]
    fields += [("DispCurves", "<i4", (16,)), ("Params", "<f4", (9,))]
    fields += [(n, "<i4") for n in ["RepeatMode", "RepeatsPerCurve", "RepeatTime", "RepeatWaitTime"]]
    fields += [("ScriptName", "S20"), ("HardwareIdent", "S16"), ("HardwarePartNo", "S8"), ("HardwareSerial", "<i4"),
               ("NumberOfModules", "<i4"), ("Modules", "<i4", (20,)), ("BaseResolution", "<f8"), ("InputsEnabled", "<i8"),
               ("InpChansPresent", "<i4")]
    fields += [(n, "<i4") for n in ["RefClockSource", "ExtDevices", "MarkerSettings", "SyncDivider", "SyncCFDLevel", "SyncCFDZeroCross",
                                    "SyncOffset"]]
    fields += [("InputBlocks", "<i4", (inputs * 4,)), ("InputRates", "<i4", (inputs,))]
    fields += [("SyncRate", "<i4"), ("StopAfter", "<i4"), ("StopReason", "<i4"), ("ImgHdrSize", "<i4"), ("nRecords", "<i8")]
    h = np.zeros(1, dtype=np.dtype(fields))
    for name, value in [("Ident", b"HydraHarp"), ("FormatVersion", version.encode()), ("CreatorName", b"HydraHarp"),
                        ("CreatorVersion", b"2.0.0.0"), ("FileTime", b"01/12/26 10:20:30"), ("CRLF", b"\r\n"),
                        ("Comment", b"constructed by tttr_checks.py make-t2"), ("NumberOfCurves", 1), ("BitsPerRecord", 32),
                        ("MeasurementMode", 2), ("Resolution", resolution_ps), ("Tacq", 100000), ("StopAt", 4294967295),
                        ("HardwareIdent", b"HydraHarp 400"), ("HardwarePartNo", b"930021"), ("HardwareSerial", 1000123),
                        ("NumberOfModules", 1), ("BaseResolution", 1.0), ("InputsEnabled", (1 << inputs) - 1),
                        ("InpChansPresent", inputs), ("SyncDivider", 1), ("SyncRate", 0), ("StopAfter", 100000), ("ImgHdrSize", 0),
                        ("nRecords", records)]:
        h[name] = value
    return h.tobytes()


def make_t2(kind, out, expected):
    """Draws photons, syncs and markers at increasing tag times, then encodes them with the
    overflow records their gaps need (several at once as one V2 record when a gap spans them)."""
    rng = np.random.default_rng(20261202)
    n = 30_000
    pico = kind == "pt2"
    period = 210_698_240 if pico else (33_552_000 if kind == "ht2v1" else 33_554_432)
    unit_ps = 4 if pico else 1
    # Mostly short gaps, some spanning several overflow periods.
    gaps = np.where(rng.random(n) < 0.97, rng.integers(1, period // 50, size=n), rng.integers(period, 4 * period, size=n))
    t = np.cumsum(gaps)
    what = rng.choice(3, size=n, p=[0.94, 0.03, 0.03])  # photon, marker, sync (HydraHarp only)
    if pico:
        what = np.where(what == 2, 0, what)
    channel = rng.integers(0, 4 if pico else 8, size=n)
    records = []
    base = 0
    for ti, wi, ci in zip(t.tolist(), what.tolist(), channel.tolist()):
        wraps = (ti - base) // period
        if pico:
            for _ in range(wraps):
                records.append((15 << 28) | 0)
        elif kind == "ht2v1":
            for _ in range(wraps):
                records.append((1 << 31) | (63 << 25) | 0)
        elif wraps > 0:
            records.append((1 << 31) | (63 << 25) | wraps)  # V2: one record counts them
        base += wraps * period
        tag = ti - base
        if pico:
            records.append(((ci if wi == 0 else 15) << 28) | (tag if wi == 0 else (tag & ~0xF) | (1 << (ci % 4))))
        elif wi == 0:
            records.append((ci << 25) | tag)
        elif wi == 1:
            records.append((1 << 31) | ((1 + ci % 15) << 25) | tag)
        else:
            records.append((1 << 31) | (0 << 25) | tag)
    data = np.array(records, dtype="<u4")
    if pico:
        header = np.zeros(1, dtype=np.dtype(PT3_HEADER))
        for name, value in [("Ident", b"PicoHarp 300"), ("FormatVersion", b"2.0"), ("CreatorName", b"PicoHarp Software"),
                            ("CreatorVersion", b"2.3.0.0"), ("FileTime", b"01/12/26 10:20:30"), ("CRLF", b"\r\n"),
                            ("Comment", b"constructed by tttr_checks.py make-t2"), ("NumberOfCurves", 1), ("BitsPerRecord", 32),
                            ("RoutingChannels", 4), ("NumberOfBoards", 1), ("MeasurementMode", 2), ("AcquisitionTime", 100000),
                            ("StopAt", 4294967295), ("HardwareIdent", b"PicoHarp 300"), ("HardwarePartNo", b"930004"),
                            ("Resolution", 0.004), ("InpRate0", 0), ("StopAfter", 100000), ("nRecords", len(data)), ("ImgHdrSize", 0)]:
            header[name] = value
        head = header.tobytes()
    else:
        head = hh_header("1.0" if kind == "ht2v1" else "2.0", 8, len(data), 1.0)
    with open(out, "wb") as f:
        f.write(head)
        f.write(data.tobytes())
    photons = what == 0
    # A PicoHarp marker's record keeps only the tag's upper 24 bits; photons keep all 28.
    np.savez(expected, times=t[photons] * unit_ps, channels=channel[photons] + 1)
    print(f"ok: wrote {out}: {len(data)} records, {int(photons.sum())} photons")


def check_t2(expected, h5path):
    e = np.load(expected)
    with h5py.File(h5path, "r") as f:
        unit = float(f["photon_data/timestamps_specs/timestamps_unit"][()])
        ts = np.rint(f["photon_data/timestamps"][:] * (unit * 1e12)).astype(np.int64)
        det = f["photon_data/detectors"][:].astype(np.int64) + 1  # Photon-HDF5 keeps the file's 0-based inputs
    if len(ts) != len(e["times"]):
        fail(f"{len(ts)} photons imported, {len(e['times'])} written")
    bad = np.nonzero((ts != e["times"]) | (det != e["channels"]))[0]
    if len(bad):
        i = bad[0]
        fail(f"photon {i}: Herald ({ts[i]} ps, ch {det[i]}), written ({e['times'][i]} ps, ch {e['channels'][i]})")
    phconvert_valid(h5path)
    print(f"ok: {len(ts)} photons, times and channels equal; phconvert accepts the import")


def make_pt3(out):
    """A PicoHarp 300 T3 file laid out as PicoQuant documents it: 728-byte header, an image
    header of ImgHdrSize int32, then 32-bit records channel(4) | dtime(12) | nsync(16)."""
    rng = np.random.default_rng(20261201)
    header = np.zeros(1, dtype=np.dtype(PT3_HEADER))
    assert header.dtype.itemsize == 728, header.dtype.itemsize
    for name, value in [("Ident", b"PicoHarp 300"), ("FormatVersion", b"2.0"), ("CreatorName", b"PicoHarp Software"),
                        ("CreatorVersion", b"2.3.0.0"), ("FileTime", b"01/12/26 10:20:30"), ("CRLF", b"\r\n"),
                        ("Comment", b"constructed by tttr_checks.py make-pt3"), ("NumberOfCurves", 1), ("BitsPerRecord", 32),
                        ("RoutingChannels", 4), ("NumberOfBoards", 1), ("MeasurementMode", 3), ("RangeNo", 0),
                        ("AcquisitionTime", 1000), ("StopAt", 4294967295), ("HardwareIdent", b"PicoHarp 300"),
                        ("HardwarePartNo", b"930004"), ("HardwareSerial", 1012345), ("SyncDivider", 8), ("CFDZeroCross0", 10),
                        ("CFDLevel0", 100), ("CFDZeroCross1", 10), ("CFDLevel1", 50), ("Resolution", 0.004),
                        ("RouterModelCode", 1), ("RouterEnabled", 1), ("InpRate0", 10_000_000), ("InpRate1", 50_000),
                        ("StopAfter", 1000), ("StopReason", 0), ("ImgHdrSize", 2), ("ScriptName", b"none")]:
        header[name] = value
    n = 20_000
    kind, nsync = synthetic_records(rng, n)
    channel = np.where(kind == 0, rng.integers(0, 4, size=n), 15)
    dtime = np.where(kind == 0, rng.integers(0, 4096, size=n), np.where(kind == 1, 0, rng.integers(1, 16, size=n)))
    nsync = np.where(kind == 1, 0, nsync)
    records = ((channel.astype(np.uint32) << 28) | (dtime.astype(np.uint32) << 16) | nsync.astype(np.uint32)).astype("<u4")
    header["nRecords"] = n
    with open(out, "wb") as f:
        f.write(header.tobytes())
        f.write(np.array([7, 9], dtype="<i4").tobytes())  # the image header ImgHdrSize announces
        f.write(records.tobytes())
    print(f"ok: wrote {out}: {n} records, {int((kind == 0).sum())} photons, {int((kind == 1).sum())} overflows, "
          f"{int((kind == 2).sum())} markers")


T3R6_HEADER = [
    ("Ident", "S16"), ("FormatVersion", "S6"), ("CreatorName", "S18"), ("CreatorVersion", "S12"), ("FileTime", "S18"),
    ("CRLF", "S2"), ("Comment", "S256"), ("NumberOfChannels", "<i4"), ("NumberOfCurves", "<i4"), ("BitsPerChannel", "<i4"),
    ("RoutingChannels", "<i4"), ("NumberOfBoards", "<i4"), ("ActiveCurve", "<i4"), ("MeasurementMode", "<i4"),
    ("SubMode", "<i4"), ("RangeNo", "<i4"), ("Offset", "<i4"), ("AcquisitionTime", "<i4"), ("StopAt", "<i4"),
    ("StopOnOvfl", "<i4"), ("Restart", "<i4"), ("DispLinLog", "<i4"), ("DispTimeAxisFrom", "<i4"), ("DispTimeAxisTo", "<i4"),
    ("DispCountAxisFrom", "<i4"), ("DispCountAxisTo", "<i4"), ("DispCurves", "<i4", (16,)), ("Params", "<f4", (9,)),
    ("RepeatMode", "<i4"), ("RepeatsPerCurve", "<i4"), ("RepeatTime", "<i4"), ("RepeatWaitTime", "<i4"),
    ("ScriptName", "S20"), ("HardwareIdent", "S16"), ("HardwareVersion", "S8"), ("BoardSerial", "<i4"),
    ("CFDZeroCross", "<i4"), ("CFDDiscriminatorMin", "<i4"), ("SYNCLevel", "<i4"), ("CurveOffset", "<i4"),
    ("Resolution", "<f4"), ("TTTRGlobclock", "<i4"), ("ExtDevices", "<i4"), ("Reserved1", "<i4"), ("Reserved2", "<i4"),
    ("Reserved3", "<i4"), ("Reserved4", "<i4"), ("Reserved5", "<i4"), ("SyncRate", "<i4"), ("AverageCFDRate", "<i4"),
    ("StopAfter", "<i4"), ("StopReason", "<i4"), ("NumberOfRecords", "<i4"), ("SpecHeaderLength", "<i4"),
]


def make_t3r6(out):
    """A TimeHarp 200 software 6.0 T3R file: 640-byte header, image header, then records of
    time tag (16) | data (12) | route (2) | valid (1) | reserved (1). Invalid records: data
    bit 11 is an overflow (65 536 time tags), bits 0-2 markers."""
    rng = np.random.default_rng(20261202)
    header = np.zeros(1, dtype=np.dtype(T3R6_HEADER))
    assert header.dtype.itemsize == 640, header.dtype.itemsize
    for name, value in [("Ident", b"TimeHarp 200"), ("FormatVersion", b"6.0"), ("CreatorName", b"TimeHarp Software"),
                        ("CreatorVersion", b"6.1.0.0"), ("FileTime", b"01/12/26 11:22:33"), ("CRLF", b"\r\n"),
                        ("Comment", b"constructed by tttr_checks.py make-t3r6"), ("NumberOfChannels", 4096),
                        ("NumberOfCurves", 1), ("BitsPerChannel", 32), ("RoutingChannels", 4), ("NumberOfBoards", 1),
                        ("MeasurementMode", 2), ("AcquisitionTime", 2000), ("HardwareIdent", b"TimeHarp 200"),
                        ("HardwareVersion", b"6.0"), ("BoardSerial", 1234), ("CFDZeroCross", 20), ("CFDDiscriminatorMin", 100),
                        ("SYNCLevel", -200), ("Resolution", 0.0365), ("TTTRGlobclock", 100), ("SyncRate", 5_000_000),
                        ("AverageCFDRate", 40_000), ("StopAfter", 2000), ("SpecHeaderLength", 3), ("ScriptName", b"none")]:
        header[name] = value
    n = 20_000
    kind, tag = synthetic_records(rng, n)
    valid = (kind == 0).astype(np.uint32)
    data = np.where(kind == 0, rng.integers(0, 4096, size=n), np.where(kind == 1, 0x800, rng.integers(1, 8, size=n)))
    route = np.where(kind == 0, rng.integers(0, 4, size=n), 0)
    records = (tag.astype(np.uint32) | (data.astype(np.uint32) << 16) | (route.astype(np.uint32) << 28) | (valid << 30)).astype("<u4")
    header["NumberOfRecords"] = n
    with open(out, "wb") as f:
        f.write(header.tobytes())
        f.write(np.array([1, 2, 3], dtype="<i4").tobytes())
        f.write(records.tobytes())
    print(f"ok: wrote {out}: {n} records, {int((kind == 0).sum())} photons, {int((kind == 1).sum())} overflows, "
          f"{int((kind == 2).sum())} markers")


def t3r6_legacy(path, header, h5path):
    from pqreader import pqreader as pr

    timetags, route, data, meta = pr.t3r_reader(path)
    checked = same_header_fields(meta, header, "pqreader", {"NumberOfRecords": "nRecords", "SpecHeaderLength": "ImgHdrSize"})
    # pqreader counts every invalid record as an overflow; PicoQuant's layout makes one whose
    # data bit 11 is clear a marker. Its times are corrected for that, from the raw records.
    offset = 640 + 4 * int(meta["ttmode"]["SpecHeaderLength"][0])
    records = np.fromfile(path, dtype="<u4", offset=offset, count=int(meta["ttmode"]["NumberOfRecords"][0]))
    valid = (records >> 30) & 1
    marker = (valid == 0) & (((records >> 16) & 0x800) == 0)
    times = timetags.astype(np.int64) - 65536 * np.cumsum(marker)[valid == 1]
    compare_arrays(h5path, times, route.astype(np.uint8), data.astype(np.uint16))
    print(f"ok: {checked} header fields equal to pqreader; {len(times)} photons equal to pqreader's t3r_reader "
          f"({int(marker.sum())} markers, which it counts as overflows, corrected)")


def pt3_legacy(path, header, h5path):
    import phconvert.pqreader as pq

    checked = same_header_fields(pq.pt3_reader(path)[3], header, "phconvert")
    times, dets, nanotimes, _, _ = pq.load_pt3(path)
    # phconvert counts every channel-15 record as a sync overflow; PicoQuant's layout makes one
    # with a non-zero dtime a marker. Its times are corrected for that, as for .t3r.
    marker = (dets == 15) & (nanotimes != 0)
    times = times - 65536 * np.cumsum(marker)
    photon = dets < 15
    compare_arrays(h5path, times[photon].astype(np.int64), dets[photon].astype(np.uint8), nanotimes[photon].astype(np.uint16))
    print(f"ok: {checked} header fields equal to phconvert; {int(photon.sum())} photons equal to phconvert's "
          f"load_pt3 ({int(marker.sum())} markers, which it counts as overflows, corrected)")


def legacy(path, inspect_json, h5path):
    ours = json.load(open(inspect_json))
    header = ours["header"]
    checked = 0
    if path.lower().endswith(".pt3"):
        return pt3_legacy(path, header, h5path)
    if path.lower().endswith(".t3r") and header.get("FormatVersion") == "6.0":
        return t3r6_legacy(path, header, h5path)
    if path.lower().endswith(".t3r"):
        import phconvert.pqreader as pq

        checked = same_header_fields(pq.t3r_reader(path)[3], header, "phconvert")
        times, chans, micro = t3r_photons(path)
        compare_arrays(h5path, times, chans, micro)
        print(f"ok: {checked} header fields equal to phconvert; {len(times)} photons equal to phconvert's (corrected) decoding")
        return
    import tttrlib

    d = tttrlib.TTTR(path, "HT3")
    tags = {t["name"]: t["value"] for t in json.loads(d.header.json)["tags"] if t["idx"] < 0}
    for name in HT3_SHARED:
        mine, theirs = header.get(name), tags.get(name)
        if mine is None or theirs is None:
            fail(f"{name}: Herald {mine!r}, tttrlib {theirs!r}")
        same = mine.strip() == str(theirs).strip() if isinstance(mine, str) else float(mine) == float(theirs)
        if not same:
            fail(f"{name}: Herald {mine!r}, tttrlib {theirs!r}")
        checked += 1
    photon = d.event_types == 0
    macro = d.macro_times[photon].astype(np.int64)
    micro = d.micro_times[photon].astype(np.uint16)
    chans = d.routing_channels[photon].astype(np.uint8)
    s = ours["statistics"]
    per = {str(c): int(n) for c, n in zip(*np.unique(chans, return_counts=True))}
    if s["photons"] != len(macro) or {str(k): v for k, v in s["photonsPerChannel"].items()} != per:
        fail(f"photons per channel: Herald {s['photonsPerChannel']}, tttrlib {per}")
    compare_arrays(h5path, macro, chans, micro)
    print(f"ok: {checked} header fields and {len(macro)} photons equal to tttrlib")


def swabian(dump, h5path):
    tag = np.dtype([("type", "u1"), ("reserved", "u1"), ("missed", "<u2"), ("channel", "<i4"), ("time", "<i8")])
    tags = np.fromfile(dump, dtype=tag)
    photons = tags[tags["type"] == 0]
    channels = np.where(photons["channel"] < 0, 100 - photons["channel"], photons["channel"]).astype(np.uint8)
    compare_arrays(h5path, photons["time"], channels, None)
    print(f"ok: {len(photons)} tags equal to numpy's reading of the dump; phconvert accepts the import")


def replay(path, run_h5, stop_ps):
    import tttrlib

    d = tttrlib.TTTR(path)
    photon = d.event_types == 0
    ps = d.macro_times[photon].astype(np.float64) * (d.header.macro_time_resolution * 1e12)
    if d.header.tag("Measurement_Mode")["value"] == 3:
        ps += d.micro_times[photon] * (d.header.micro_time_resolution * 1e12)
    ps = np.rint(ps).astype(np.int64)
    chans = d.routing_channels[photon].astype(np.uint8) + 1
    order = np.argsort(ps, kind="stable")
    ps, chans = ps[order], chans[order]
    keep = ps < int(stop_ps)
    ps, chans = ps[keep], chans[keep]
    with h5py.File(run_h5, "r") as f:
        ts = f["photon_data/timestamps"][:]
        det = f["photon_data/detectors"][:]
    if len(ts) != len(ps):
        fail(f"{len(ts)} tags replayed into {run_h5}, tttrlib has {len(ps)} photons before {stop_ps} ps")
    worst = int(np.abs(ts - ps).max()) if len(ps) else 0
    if worst > 1:
        i = int(np.argmax(np.abs(ts - ps)))
        fail(f"tag {i}: replayed at {ts[i]} ps, tttrlib {ps[i]} ps")
    if not np.array_equal(det, chans):
        i = np.nonzero(det != chans)[0][0]
        fail(f"tag {i}: replayed on channel {det[i]}, tttrlib {chans[i]}")
    print(f"ok: {len(ps)} photons replayed as tttrlib decodes them (worst time difference {worst} ps)")


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare(*sys.argv[2:5])
    elif sys.argv[1] == "phconvert":
        with_phconvert(*sys.argv[2:4])
    elif sys.argv[1] == "legacy":
        legacy(*sys.argv[2:5])
    elif sys.argv[1] == "make-t2":
        make_t2(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "check-t2":
        check_t2(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "make-pt3":
        make_pt3(sys.argv[2])
    elif sys.argv[1] == "make-t3r6":
        make_t3r6(sys.argv[2])
    elif sys.argv[1] == "swabian":
        swabian(*sys.argv[2:4])
    elif sys.argv[1] == "replay":
        replay(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
