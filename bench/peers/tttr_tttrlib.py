"""tttrlib's decode of the same large PTU file: median wall time of TTTR(file) over 3 runs
after a warm-up, and its photon count (which must equal Herald's)."""
import json
import statistics
import sys
import time

import tttrlib


def main(path):
    tttrlib.TTTR(path)  # warm-up: page cache, library initialisation
    times = []
    for _ in range(3):
        start = time.perf_counter()
        d = tttrlib.TTTR(path)
        times.append(time.perf_counter() - start)
    records = int(d.header.tag("TTResult_NumberOfRecords")["value"])
    photons = int((d.event_types == 0).sum())
    t = statistics.median(times)
    print(json.dumps({"tttrlib": tttrlib.__version__ if hasattr(tttrlib, "__version__") else "?",
                      "seconds": t, "records": records, "photons": photons, "records_per_s": records / t}))


if __name__ == "__main__":
    main(sys.argv[1])
