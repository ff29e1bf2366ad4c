"""What one keyless client can take from the server: CPU and the prediction log, with and without its budget.

    python benchmarks/keyless.py [--seconds 30] [--connections 8]

Trains a sparse bundle on the bundled sample and serves it twice, one after the other: with the budgets off
(``TAXONOMIST_KEYLESS_SECONDS_PER_MINUTE`` and ``TAXONOMIST_SERVED_LOG_QUOTA_PER_MINUTE`` very large: how the
service worked before) and with the defaults. In each, one client without a key sends, over ``--connections``
connections for ``--seconds``, requests of 256 queries of 5,000 characters (1.28 MB) to ``/v1/query/classify``
and of 256 products to ``/v1/classify``, while a keyed client classifies one product every 100 ms. Prints the
server's CPU seconds (from /proc), the keyless client's answered, refused (429) and failed requests, the rows its
classify requests added to the prediction log, and the keyed client's p50 / p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from stall import KEY, sample_bundle, serving  # type: ignore[import-not-found]

import taxonomist as tx
from taxonomist.datasets import sample_path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keyed_probe(url: str, seconds: float) -> list[float]:
    """A keyed client classifying one product every 100 ms: its latencies in seconds."""
    out = []
    stop_at = time.perf_counter() + seconds
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            c.post("/v1/classify", json={"product": {"title": "Nike Men Running Shoes"}}).raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.1)
    return out


async def attack(url: str, connections: int, seconds: float) -> dict[str, int]:
    import aiohttp

    words = " ".join(tx.read_catalog(sample_path("products")).titles[:2000]).split()
    rnd = np.random.default_rng(0)
    queries = {"queries": [" ".join(rnd.choice(words, 900))[:5000] for _ in range(256)]}
    products = {"products": [{"title": " ".join(rnd.choice(words, 8))} for _ in range(256)]}
    counts = {"answered": 0, "refused": 0, "other": 0}
    stop_at = time.perf_counter() + seconds

    async def one(c: aiohttp.ClientSession, k: int) -> None:
        while time.perf_counter() < stop_at:
            route, body = ("/v1/query/classify", queries) if k % 2 == 0 else ("/v1/classify", products)
            try:
                async with c.post(route, json=body) as r:
                    await r.read()
                    if r.status == 429:
                        counts["refused"] += 1
                        await asyncio.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))
                    else:
                        counts["answered" if r.status == 200 else "other"] += 1
            except aiohttp.ClientError:  # a pooled connection the server closed after its keep-alive: retried
                counts["other"] += 1

    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as c:
        await asyncio.gather(*(one(c, k) for k in range(connections)))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taxonomist-keyless-"))
    try:
        model = sample_bundle(work)
        print(f"one keyless client, {args.connections} connections, {args.seconds:.0f} s; a keyed client classifies "
              f"one product every 100 ms; {os.cpu_count()} CPUs shared by server and clients\n")
        print("| budgets | server CPU s | keyless answered | keyless refused (429) | keyless failed | its rows in the "
              "prediction log | keyed p50 ms | keyed p99 ms |\n|---|---|---|---|---|---|---|---|")
        off = {"TAXONOMIST_KEYLESS_SECONDS_PER_MINUTE": "1e9", "TAXONOMIST_KEYLESS_CONCURRENCY": "1000000",
               "TAXONOMIST_SERVED_LOG_QUOTA_PER_MINUTE": "1000000000"}
        for name, extra in (("off (the service before)", off), ("default", {})):
            with serving(model, work, extra) as (server, url):
                cpu0 = cpu_seconds(server.pid)
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    pending = pool.apply_async(keyed_probe, (url, args.seconds))
                    counts = asyncio.run(attack(url, args.connections, args.seconds))
                    keyed = np.asarray(pending.get()) * 1000
                cpu = cpu_seconds(server.pid) - cpu0
            db = next(work.glob(f"review-{url.rsplit(':', 1)[1]}.db"))
            with sqlite3.connect(db) as con:
                logged = con.execute("SELECT COUNT(*) FROM served WHERE title != 'Nike Men Running Shoes'").fetchone()[0]
            print(f"| {name} | {cpu:.1f} | {counts['answered']} | {counts['refused']} | {counts['other']} | {logged:,} | "
                  f"{np.percentile(keyed, 50):.1f} | {np.percentile(keyed, 99):.1f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
