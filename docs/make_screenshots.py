"""Screenshots for the docs: the evaluation report and the API docs page served offline.

    python docs/make_screenshots.py            # needs Playwright and a Chromium (Debian's `chromium` package)

Trains the sparse tier on the bundled sample (held-out report with the default back-off threshold), serves it,
and photographs ``docs/images/report.png`` and ``docs/images/api-docs-offline.png`` in headless Chromium with
every request that leaves 127.0.0.1 refused, as on a machine without internet.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([*exe, "serve", str(work / "models"), "--port", str(port), "--api-key", "k",
                                   "--review-db", str(work / "review.db")], env={**os.environ, "TAXONOMIST_LOG": "warning"})
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
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


if __name__ == "__main__":
    main()
