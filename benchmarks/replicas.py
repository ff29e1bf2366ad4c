"""Two servers on one PostgreSQL: throughput, tail latency, one review queue, one quota, and no acknowledged write
lost when one server is killed.

    python benchmarks/replicas.py [--clients 32] [--seconds 60] [--quota 200]

A PostgreSQL cluster is made in a temporary folder (Debian's ``postgresql`` package: tests/postgres.py), a sparse
model is trained on the bundled sample into a model store, then:

1. **One server** on the database: ``--clients`` concurrent clients for ``--seconds``, each sending
   single-product ``POST /v1/classify`` requests (the review threshold is 1: every answer asks to be queued, as
   the quota allows)
   and, every tenth request, a ``POST /v1/feedback``.
2. **Two servers** on the same database, the clients spread over both as a load balancer would (each request to
   the next server in turn; a refused connection is retried on the other, as a balancer's health check would
   route). Half way through, the second server is killed with SIGKILL.

For each run: requests/s, p50 / p99 of the single-product classify requests, errors. Then every write a server
acknowledged -- a review item id in a classify answer, a feedback id in a 201 -- is looked up in the database
(lost = acknowledged but absent); a reviewer's ``GET /v1/review`` on the surviving server lists every pending item
of the database once (one queue); the review items queued per 60 s stay within ``--quota``
(``review_quota_per_minute``: all clients come from one address, so they share one quota, counted across both
servers). Clients, servers and the database share the machine's cores: the figures compare the two set-ups in one
run, they are not a capacity statement.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live_server import KEY, LiveServer  # noqa: E402
from tests.postgres import new_database, postgres_cluster  # noqa: E402

import taxonomist as tx  # noqa: E402
from taxonomist.datasets import sample_path  # noqa: E402
from taxonomist.serving.store import ReviewStore  # noqa: E402

AUTH = {"Authorization": f"Bearer {KEY}"}


async def load(urls: list[str], titles: list[str], clients: int, seconds: float,
               kill: tuple[float, LiveServer] | None = None) -> dict[str, Any]:
    """Run the clients; the latencies, errors and every acknowledged write."""
    import aiohttp

    latencies: list[float] = []
    acked: dict[str, set[int]] = {"review": set(), "feedback": set()}
    errors = 0
    alive = list(urls)
    turn = 0
    stop = time.monotonic() + seconds

    async def send(c: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        nonlocal turn
        for _ in range(len(urls)):
            turn += 1
            url = alive[turn % len(alive)]
            try:
                async with c.post(url + path, json=body, headers=AUTH) as r:
                    return r.status, await r.json()
            except aiohttp.ClientConnectionError:  # a dead server: the balancer routes to the other
                if url in alive and len(alive) > 1:
                    alive.remove(url)
        return 0, None

    async def client(c: aiohttp.ClientSession, seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        n = 0
        while time.monotonic() < stop:
            n += 1
            words = rng.choice(titles).split()
            rng.shuffle(words)
            title = " ".join(words) + f" {seed}-{n}"  # a new product each time: no review de-duplication
            if n % 10 == 0:
                status, body = await send(c, "/v1/feedback", {"product": {"title": title},
                                                              "category": rng.choice(categories)})
                if status == 201:
                    acked["feedback"].add(int(body["id"]))
                else:
                    errors += 1
                continue
            t = time.perf_counter()
            status, body = await send(c, "/v1/classify", {"product": {"title": title}})
            if status != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)
            rid = body["results"][0].get("review_id")
            if rid is not None:
                acked["review"].add(int(rid))

    async def killer() -> None:
        if kill is not None:
            await asyncio.sleep(kill[0])
            kill[1].kill()

    categories = sorted({str(c) for c in tx.read_catalog(sample_path("products"), require_labels=True).frame["category"]})
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as c:
        started = time.monotonic()
        await asyncio.gather(killer(), *(client(c, i) for i in range(clients)))
        elapsed = time.monotonic() - started
    lat = np.asarray(latencies) * 1000
    n_requests = len(latencies) + len(acked["feedback"])
    return {"requests_s": n_requests / elapsed, "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "errors": errors, "acked": acked}


def check_writes(db: str, acked: dict[str, set[int]]) -> dict[str, int]:
    store = ReviewStore(db)
    try:
        feedback = {int(f["id"]) for f in store.feedback()}
        review = {i for i in acked["review"] if store.get(i) is not None}
    finally:
        store.close()
    return {"review_acked": len(acked["review"]), "review_lost": len(acked["review"] - review),
            "feedback_acked": len(acked["feedback"]), "feedback_lost": len(acked["feedback"] - feedback)}


def queue_and_quota(db: str, server: LiveServer, quota: int) -> dict[str, Any]:
    import httpx

    store = ReviewStore(db)
    try:
        items = store.pending(limit=100_000)
        pending = [i["id"] for i in items]
        created = sorted(float(i["created"]) for i in items)
    finally:
        store.close()
    seen: list[int] = []
    offset = 0
    while True:  # a reviewer pages through the queue on the surviving server
        page = httpx.get(f"{server.url}/v1/review", params={"limit": 500, "offset": offset}, headers=AUTH).json()
        if not page:
            break
        seen += [i["id"] for i in page]
        offset += len(page)
    most = max((sum(1 for t in created if s <= t < s + 60) for s in created), default=0)
    return {"pending": len(pending), "listed_once": len(seen) == len(set(seen)) and set(seen) == set(pending),
            "most_queued_in_60s": most, "quota": quota}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quota", type=int, default=200, help="review_quota_per_minute of the servers")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taxonomist-replicas-"))
    cat = tx.read_catalog(sample_path("products"), require_labels=True)
    tx.TaxonomyClassifier(tier="sparse").fit(cat).save(work / "models" / "v0001")
    titles = cat.frame["title"].astype(str).tolist()
    settings = {"review_threshold": 1.0, "audit_rate": 0.0, "review_quota_per_minute": args.quota,
                "review_max_pending": 1_000_000}
    with postgres_cluster() as server_url:
        if server_url is None:
            sys.exit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        rows = []
        for label, n_servers in (("one server", 1), ("two servers, one killed half way", 2)):
            db = new_database(server_url)
            servers = [LiveServer(work / "models", db, work / f"server-{label[:3]}-{i}.log", **settings)  # type: ignore[arg-type]
                       for i in range(n_servers)]
            for s in servers:
                s.start()
            try:
                kill = (args.seconds / 2, servers[1]) if n_servers == 2 else None
                run = asyncio.run(load([s.url for s in servers], titles, args.clients, args.seconds, kill))
                writes = check_writes(db, run["acked"])
                shared = queue_and_quota(db, servers[0], args.quota)
            finally:
                for s in servers:
                    s.stop()
            rows.append((label, run, writes, shared))
    print(f"# {args.clients} clients, {args.seconds:.0f} s per run, review quota {args.quota}/min (one client address)")
    print("\n| set-up | requests/s | classify p50 / p99 ms | errors | review items acked / lost | feedback acked / lost "
          "| pending listed once | most queued in 60 s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, run, w, q in rows:
        print(f"| {label} | {run['requests_s']:.0f} | {run['p50_ms']:.1f} / {run['p99_ms']:.1f} | {run['errors']} | "
              f"{w['review_acked']:,} / {w['review_lost']} | {w['feedback_acked']:,} / {w['feedback_lost']} | "
              f"{q['listed_once']} ({q['pending']:,}) | {q['most_queued_in_60s']} (quota {q['quota']}) |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
