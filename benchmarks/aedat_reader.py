"""Time the vectorized AEDAT 3.1 reader against a per-event reader written like spikingjelly's.

    python benchmarks/aedat_reader.py [--data DIR] [--repeat R]

The reference reads the way spikingjelly's ``load_aedat_v3`` (``datasets/utils.py``)
does: skip the '#' header lines, then per packet read the 28-byte header and the
payload, and per polarity event ``struct.unpack('I', ...)`` the data word and the
timestamp, take the bit fields and append them to Python lists. Both readers run on
every ``*.aedat`` under ``--data`` (default ``../shared/data/dvs_gesture_mini``), their
outputs are checked to be identical, and the best-of-R wall times and the speed ratio
are printed side by side. Exit code 1 if outputs differ, 2 if no file is found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from evo_snn.data.aedat import read_aedat31  # noqa: E402
from evo_snn.data.reference import load_aedat_v3 as per_event_reader  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dvs_gesture_mini"


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder searched for *.aedat (recursively)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader and file; the best is reported")
    args = parser.parse_args(argv)
    files = sorted(args.data.rglob("*.aedat"))
    if not files:
        print(f"no .aedat file under {args.data} (../shared/data is absent?)", file=sys.stderr)
        return 2
    print(f"{'file':<28}{'events':>10}{'per-event (s)':>15}{'vectorized (s)':>16}{'ratio':>9}  identical")
    total_ref = total_ours = 0.0
    ok = True
    for path in files:
        t_ref, ref = best_time(lambda: per_event_reader(path), args.repeat)
        t_ours, ev = best_time(lambda: read_aedat31(path), args.repeat)
        same = all(np.array_equal(getattr(ev, k), ref[k]) for k in ("t", "x", "y", "p"))
        ok &= same
        total_ref += t_ref
        total_ours += t_ours
        print(f"{path.name:<28}{len(ev):>10,}{t_ref:>15.3f}{t_ours:>16.4f}{t_ref / t_ours:>8.1f}x  {same}")
    print(f"{'total':<28}{'':>10}{total_ref:>15.3f}{total_ours:>16.4f}{total_ref / total_ours:>8.1f}x  {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
