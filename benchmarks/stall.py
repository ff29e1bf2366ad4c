"""Does one large request stall the server? /healthz latency while clients send 1.3 MB requests.

    python benchmarks/stall.py [--clients 4] [--seconds 10]

Trains a sparse bundle on the bundled sample, then serves it twice, one after the other: with the sparse stage
of every micro-batch on the event loop (``TAXONOMIST_INLINE_MAX_CHARS`` very large: how the service worked
before) and with the default (batches over 10,000 characters run that stage in a thread). In each, ``--clients``
clients send requests of 256 products (within the default body and text limits) for ``--seconds`` while a probe
(its own process) GETs /healthz every 20 ms; prints the probe's p50 / p99 / max latency and the large requests'
throughput. Two kinds of products: words (5,000 characters of catalogue words, 2,000 as the title and the rest
as the description) and crafted titles (``"a"*1000 + "@" +
"a"*999``, the shape that made the e-mail scrubber quadratic). The clients send an API key: keyed clients have no
server-time budget, the worst case for the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from load import free_port  # type: ignore[import-not-found]

import taxonomist as tx
from taxonomist.datasets import sample_path

KEY = "stall-benchmark-key"


async def probe_under_load(url: str, clients: int, seconds: float, titles: str) -> dict[str, float]:
    import aiohttp

    words = " ".join(tx.read_catalog(sample_path("products")).titles[:2000]).split()
    rnd = np.random.default_rng(0)

    def product() -> dict[str, str]:
        if titles == "crafted":
            return {"title": "a" * 1000 + "@" + "a" * 999}
        text = " ".join(rnd.choice(words, 900))
        return {"title": text[:2000], "description": text[2000:5000]}  # the served limits: 2,000 and 5,000

    body = {"products": [product() for _ in range(256)]}
    big = [0]
    stop_at = time.perf_counter() + seconds

    async def client(c: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop_at:
            async with c.post("/v1/classify", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
                await r.read()
                big[0] += r.status == 200

    # the probe is its own process: in the clients' event loop its timings would include the clients' own work
    # (encoding 1.3 MB bodies), not only the server's
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(probe, (url, seconds))
        async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as c:
            await asyncio.gather(*(client(c) for _ in range(clients)))
        probes = pending.get()
    ms = np.asarray(probes) * 1000
    return {"probes": len(ms), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()), "large_req_s": big[0] / seconds}


def probe(url: str, seconds: float) -> list[float]:
    """GET /healthz every 20 ms for ``seconds`` (after 0.5 s): the latencies in seconds."""
    out = []
    time.sleep(0.5)
    stop_at = time.perf_counter() + seconds - 0.5
    with httpx.Client(base_url=url, timeout=30) as c:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            c.get("/healthz")
            out.append(time.perf_counter() - t0)
            time.sleep(0.02)
    return out


def sample_bundle(work: Path) -> Path:
    """A sparse bundle trained on the bundled sample, saved in ``work``."""
    model = work / "model"
    tx.TaxonomyClassifier(tier="sparse").fit(tx.read_catalog(sample_path("products"), require_labels=True)).save(model)
    return model


@contextmanager
def serving(model: Path, work: Path, env_extra: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``taxonomist serve`` of ``model`` (its review database in ``work``, the API key :data:`KEY`) while the block
    runs: (the process, its URL); stopped with SIGTERM after."""
    server, url = serve(model, work, env_extra)
    try:
        yield server, url
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def serve(model: Path, work: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TAXONOMIST_AUDIT_RATE": "0", "TAXONOMIST_REVIEW_THRESHOLD": "0", **env_extra}
    server = subprocess.Popen([sys.executable, "-m", "taxonomist.cli", "serve", str(model), "--port", str(port),
                               "--review-db", str(work / f"review-{port}.db"), "--api-key", KEY, "--log-level", "warning"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taxonomist-stall-"))
    try:
        model = sample_bundle(work)
        print(f"{args.clients} clients x 256 titles, {args.seconds:.0f} s, /healthz every 20 ms, "
              f"{os.cpu_count()} CPUs shared by server and clients\n")
        print("| titles | sparse stage of a large batch | /healthz p50 ms | p99 ms | max ms | large requests/s |\n"
              "|---|---|---|---|---|---|")
        for titles, what in (("words", "5,000 characters of words (title + description)"), ("crafted", '"a"*1000 + "@" + "a"*999')):
            for name, extra in (("on the event loop", {"TAXONOMIST_INLINE_MAX_CHARS": str(10**12)}),
                                ("in a thread (default)", {})):
                with serving(model, work, extra) as (_, url):
                    r = asyncio.run(probe_under_load(url, args.clients, args.seconds, titles))
                print(f"| {what} | {name} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['large_req_s']:.2f} |",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
