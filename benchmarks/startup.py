"""How long the command line takes before it prints anything: ``taxonomist --help`` and ``import taxonomist``.

    python benchmarks/startup.py [--runs 7]

Each timed in a new process (the median of ``--runs``), beside a baseline in the same run: a process that
imports what the package used to import at start (pandas, scikit-learn's base, the catalogue reader) -- the ratio
says what importing on first use saves. Also prints which heavy libraries a bare ``import taxonomist.cli`` loads.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], runs: int) -> float:
    """Median wall seconds of ``cmd`` over ``runs`` new processes (one warm-up run first)."""
    subprocess.run(cmd, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    exe = str(Path(sys.executable).with_name("taxonomist"))
    py = sys.executable
    rows = [
        ("taxonomist --help", timed([exe, "--help"], args.runs)),
        ("python -c 'import taxonomist'", timed([py, "-c", "import taxonomist"], args.runs)),
        ("baseline: python -c 'import pandas, sklearn.base, taxonomist.catalog'",
         timed([py, "-c", "import pandas, sklearn.base, taxonomist.catalog"], args.runs)),
    ]
    base = rows[-1][1]
    print(f"median of {args.runs} new processes each\n\n| what | seconds | vs baseline |\n|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.3f} | {sec / base:.2f} |")
    code = ("import sys, taxonomist.cli; print(sorted(m for m in ('pandas', 'sklearn', 'scipy', 'numpy', 'torch', "
            "'transformers') if m in sys.modules))")
    loaded = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    print(f"\nheavy libraries loaded by import taxonomist.cli: {loaded}")


if __name__ == "__main__":
    main()
