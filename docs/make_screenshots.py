"""Screenshots for the docs: the evaluation report and the API docs page served offline.

    python docs/make_screenshots.py            # needs Playwright and a Chromium (Debian's `chromium` package)

Trains the sparse tier on the bundled sample (held-out report with the default back-off threshold), serves it,
and photographs ``docs/images/report.png`` and ``docs/images/api-docs-offline.png`` in headless Chromium with
every request that leaves 127.0.0.1 refused, as on a machine without internet. Then ``docs/images/monitor.png``:
a model trained on 70 % of the sample is served the other 30 % and then grocery products it has no category
for (:data:`GROCERIES`), a fifth of its answers go to review as the audit sample and are decided against the
products' true categories (groceries: corrected to the nearest fashion leaf, "Personal Care > Fragrance >
Perfume and Body Mist"), and ``taxonomist monitor`` reports on it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def main() -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    IMAGES.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "taxonomist.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sample = ROOT / "src" / "taxonomist" / "datasets" / "products.csv"
        subprocess.run([*exe, "train", str(sample), "-o", str(work / "models" / "v0001"), "--tier", "sparse",
                        "--report", str(work / "report.html")], check=True)
        server, port = _serve(exe, work / "models", work / "review.db", {})
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium)
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                refused: list[str] = []

                def offline(route):  # type: ignore[no-untyped-def]
                    url = route.request.url
                    if url.startswith(("http://127.0.0.1", "file://", "data:")):
                        route.continue_()
                    else:
                        refused.append(url)
                        route.abort()

                page.route("**/*", offline)
                page.goto(f"http://127.0.0.1:{port}/docs")
                page.wait_for_selector(".opblock", timeout=20_000)
                page.screenshot(path=str(IMAGES / "api-docs-offline.png"))
                page.goto((work / "report.html").as_uri())
                page.screenshot(path=str(IMAGES / "report.png"), full_page=True)
                browser.close()
            print(f"screenshots in {IMAGES}; requests refused (not 127.0.0.1): {refused or 'none'}")
        finally:
            server.terminate()
            server.wait(timeout=30)
        monitor_screenshot(work, exe, sample, chromium)


def _serve(exe: list[str], models: Path, review_db: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """``taxonomist serve`` on a free loopback port with key ``k``, once it answers /healthz: (process, port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = subprocess.Popen([*exe, "serve", str(models), "--port", str(port), "--api-key", "k",
                               "--review-db", str(review_db)], env={**os.environ, "TAXONOMIST_LOG": "warning", **env})
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    return server, port


GROCERIES = ["basmati rice 5 kg", "organic toor dal", "cold pressed groundnut oil 1 l", "garam masala powder",
             "instant noodles masala pack", "green tea bags", "jaggery powder", "ragi flour", "almonds 500 g",
             "dishwash liquid lemon", "toilet cleaner", "tomato ketchup", "whole wheat atta 10 kg", "cashew nuts",
             "ghee 1 l", "corn flakes", "honey 500 g", "peanut butter crunchy", "filter coffee powder", "rock salt"]
FALLBACK = "Personal Care > Fragrance > Perfume and Body Mist"


def monitor_screenshot(work: Path, exe: list[str], sample: Path, chromium: str | None) -> None:
    import csv
    import json

    from playwright.sync_api import sync_playwright

    rows = list(csv.DictReader(sample.open(encoding="utf-8")))
    train = [r for i, r in enumerate(rows) if i % 10 < 7]
    served = [r for i, r in enumerate(rows) if i % 10 >= 7]
    with (work / "train70.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(train)
    store = work / "monitored"
    subprocess.run([*exe, "train", str(work / "train70.csv"), "-o", str(store / "v0001"), "--tier", "sparse"], check=True)
    db = work / "monitored.db"
    server, port = _serve(exe, store, db, {"TAXONOMIST_AUDIT_RATE": "0.2", "TAXONOMIST_AUDIT_SEED": "0",
                                           "TAXONOMIST_REVIEW_THRESHOLD": "0",
                                           "TAXONOMIST_REVIEW_QUOTA_PER_MINUTE": "100000"})
    url = f"http://127.0.0.1:{port}"

    def post(path: str, body: dict, key: bool = False) -> dict:
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": "Bearer k"} if key else {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{path}: {e.code} {e.read().decode()[:500]}") from None

    try:
        truth = {}
        stream = [(r["title"], r["category"]) for r in served]
        stream += [(f"{GROCERIES[i % len(GROCERIES)]} {i // len(GROCERIES) + 1}", FALLBACK) for i in range(400)]
        for k in range(0, len(stream), 100):
            chunk = stream[k:k + 100]
            answer = post("/v1/classify", {"products": [{"id": str(k + i), "title": t} for i, (t, _) in enumerate(chunk)]})
            for (_, category), res in zip(chunk, answer["results"], strict=True):
                if res.get("review_id"):
                    truth[res["review_id"]] = category
        for rid, category in truth.items():  # the reviewers' decisions: the true category
            try:
                post(f"/v1/review/{rid}", {"category": category, "reviewer": "docs"}, key=True)
            except RuntimeError:  # a leaf the 70 % never had: the suggestion was wrong all the same
                post(f"/v1/review/{rid}", {"category": FALLBACK, "reviewer": "docs"}, key=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    subprocess.run([*exe, "monitor", str(store), "--review-db", str(db), "--since", "1d",
                    "-o", str(work / "monitor.html")], check=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1250, "height": 900})
        page.goto((work / "monitor.html").as_uri())
        page.screenshot(path=str(IMAGES / "monitor.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
