"""Load test of ``taxonomist serve`` on loopback: concurrent clients, single products and batches.

    python benchmarks/load.py [--model DIR] [--tier sparse|ensemble] [--clients 32] [--seconds 60]

Starts the server as its own process (as in production: uvicorn, one worker), then for each mode — single-product
requests, and batches of 64, each title a new recombination of sample titles — runs ``--clients`` concurrent aiohttp clients for ``--seconds`` each (an async httpx
client spent 7 ms of CPU per request here, 3x aiohttp's, and was the bottleneck), and prints requests/s,
products/s, p50 / p95 / p99 latency as the clients see it, the server's own p99 (the bucket of its Prometheus
latency histogram: time inside the app, without waiting in the socket backlog), errors, and the server's peak RSS
(VmHWM). Without ``--model`` a bundle of
``--tier`` is trained on the bundled sample first. A third run repeats the single products while the model is
hot-reloaded every ``--reload-every`` seconds (each reload must succeed with no failed request). The clients share the 2 cores with the
server: figures are pessimistic for a server with its own machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

import taxonomist as tx
from taxonomist.datasets import sample_path

KEY = "load-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_clients(url: str, titles: list[str], clients: int, seconds: float, batch: int,
                      reload_every: float = 0.0, run: int = 0) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    products = 0
    reloads = [0, 0]  # done, failed
    stop_at = time.perf_counter() + seconds

    def novel(rnd: random.Random) -> str:
        """A title never seen before: the start of one sample title + the end of another (the encoders' embedding
        cache must not make the figures)."""
        a, b = rnd.choice(titles).split(), rnd.choice(titles).split()
        return " ".join(a[: max(1, len(a) // 2)] + b[len(b) // 2:] + [str(rnd.randrange(10_000))])

    async def client(c: aiohttp.ClientSession, seed: int) -> None:
        nonlocal errors, products
        rnd = random.Random(seed)
        while time.perf_counter() < stop_at:
            if batch == 1:
                body = {"product": {"title": novel(rnd)}}
            else:
                body = {"products": [{"title": novel(rnd)} for _ in range(batch)]}
            t0 = time.perf_counter()
            try:
                # keyed: the load of an operator's integration (a keyless client has a server-time budget)
                async with c.post("/v1/classify", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            if ok:
                products += batch
            else:
                errors += 1

    async def reloader(c: aiohttp.ClientSession) -> None:
        while time.perf_counter() + reload_every < stop_at:
            await asyncio.sleep(reload_every)
            async with c.post("/v1/admin/reload", json={}, headers={"Authorization": f"Bearer {KEY}"}) as r:
                reloads[0] += 1
                reloads[1] += r.status != 200

    connector = aiohttp.TCPConnector(limit=clients + 1)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as c:
        start = time.perf_counter()
        extra = [reloader(c)] if reload_every > 0 else []
        # seeds differ between runs, so no run repeats the titles of another (the server's embedding cache)
        await asyncio.gather(*(client(c, 1000 * run + i) for i in range(clients)), *extra)
        wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {"requests": len(lat), "req_s": len(lat) / wall, "products_s": products / wall, "errors": errors,
            "reloads": reloads[0], "failed_reloads": reloads[1],
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99))}


def scrape(url: str) -> tuple[tuple[float, float], dict[float, float]]:
    """One read of the server's /metrics: (model calls, products) so far, and the cumulative bucket counts of its
    own /v1/classify latency histogram (upper bound in s -> count)."""
    calls: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("taxonomist_model_batch_products_count", "taxonomist_model_batch_products_sum")):
            name, value = line.split()
            calls[name.rsplit("_", 1)[1]] = float(value)
        elif line.startswith("taxonomist_request_duration_seconds_bucket") and 'route="/v1/classify"' in line \
                and 'status="200"' in line:
            le = line.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.split()[-1])
    return (calls.get("count", 0.0), calls.get("sum", 0.0)), buckets


def server_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The histogram bucket (upper bound, ms) holding quantile ``q`` of the requests between two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    for b, c in zip(bounds, counts, strict=True):
        if total and c >= q * total:
            return b * 1000
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a bundle to serve (default: train --tier on the bundled sample)")
    ap.add_argument("--tier", default="sparse")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--window-ms", type=float, default=None, help="micro-batching window (server default if unset)")
    ap.add_argument("--reload-every", type=float, default=10.0,
                    help="a third run (half as long) of single products with a hot reload every S seconds (0: none)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="taxonomist-load-"))
    catalog = tx.read_catalog(sample_path("products"), require_labels=True)
    titles = sorted(set(catalog.titles))
    model = args.model
    if model is None:
        model = work / "model"
        print(f"training a {args.tier} bundle on the bundled sample ({len(catalog)} products) ...", flush=True)
        tx.TaxonomyClassifier(tier=args.tier).fit(catalog).save(model)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # an empty embedding cache for the server: every title it sees is encoded
    env = {**os.environ, "TAXONOMIST_AUDIT_RATE": "0.01", "TAXONOMIST_CACHE_DIR": str(work / "cache")}
    if args.window_ms is not None:
        env["TAXONOMIST_MICROBATCH_WINDOW_MS"] = str(args.window_ms)
    log = (work / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "taxonomist.cli", "serve", str(model), "--port", str(port),
                               "--review-db", str(work / "review.db"), "--api-key", KEY, "--log-level", "warning"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start:\n{(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        info = httpx.get(f"{url}/v1/model").json()
        print(f"\nserving {info['tier']} ({info['n_categories']} categories), {args.clients} clients, "
              f"{args.seconds:.0f} s per mode, loopback, {os.cpu_count()} CPUs shared by server and clients\n")
        print("| mode | requests | req/s | products/s | p50 ms | p95 ms | p99 ms | server p99 ≤ ms | errors | products per model call |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        asyncio.run(run_clients(url, titles, 4, 3.0, 1))  # warm-up
        reload_note = "hot reloads: none"
        modes = [(1, 0.0, args.seconds), (args.batch, 0.0, args.seconds)]
        if args.reload_every > 0:
            modes.append((1, args.reload_every, args.seconds / 2))
        for run, (batch, reload_every, seconds) in enumerate(modes, start=1):
            before, lat_before = scrape(url)
            r = asyncio.run(run_clients(url, titles, args.clients, seconds, batch, reload_every, run))
            after, lat_after = scrape(url)
            server_p99 = server_quantile(lat_before, lat_after, 0.99)
            per_call = (after[1] - before[1]) / max(after[0] - before[0], 1)
            mode = "single product" if batch == 1 else f"batch of {batch}"
            if reload_every:
                mode += f" + hot reload every {reload_every:.0f} s"
            print(f"| {mode} | {r['requests']:,} | {r['req_s']:,.0f} | {r['products_s']:,.0f} | {r['p50']:.1f} | "
                  f"{r['p95']:.1f} | {r['p99']:.1f} | {server_p99:g} | {r['errors']} | {per_call:.1f} |", flush=True)
            if r["reloads"]:
                reload_note = f"hot reloads during the last run: {r['reloads']} ({r['failed_reloads']} failed)"
        print(f"\n{reload_note}\nserver peak RSS: {peak_rss_mb(server.pid):,.0f} MB")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
