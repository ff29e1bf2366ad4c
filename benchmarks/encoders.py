"""Text encoder speed and fidelity: minilm-en on torch fp32 / torch bf16 / ONNX int8, and e5-multilingual.

    python benchmarks/encoders.py --data ../shared/data [--n 2000]

Encodes the first N BigBasket product titles (max length 64 tokens, batch 128, length-sorted, no cache) with each
backend in this process and prints texts/s, the ratio to torch fp32, and the cosine similarity of each
backend's vectors to torch fp32's (min / mean over the titles). Then the same for e5-multilingual on the first N
online_shopping_zh reviews (bf16 vs fp32).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from taxonomist.encoders import load_text_encoder


def _time(enc, texts: list[str]) -> tuple[np.ndarray, float]:  # noqa: ANN001
    enc.encode(texts[:64], batch_size=128)  # warm-up (first-call allocations)
    t = time.perf_counter()
    v = enc.encode(texts, batch_size=128)
    return v, len(texts) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    titles = pd.read_csv(args.data / "bigbasket/bigbasket.csv")["product"].dropna().astype(str).tolist()[:args.n]
    reviews = pd.read_csv(args.data / "online_shopping_zh/online_shopping_10_cats.csv")["review"].dropna().astype(str)
    reviews_l = reviews.tolist()[:args.n]
    for name, texts, runs in [
        ("minilm-en", titles, [("torch fp32", {"precision": "fp32"}), ("torch bf16", {"precision": "bf16"}),
                               ("onnx int8", {"backend": "onnx"})]),
        ("e5-multilingual", reviews_l, [("torch fp32", {"precision": "fp32"}), ("torch bf16", {"precision": "bf16"})]),
    ]:
        print(f"\n{name}: {len(texts)} texts")
        base = None
        base_speed = 1.0
        for label, kw in runs:
            v, speed = _time(load_text_encoder(name, cache=False, max_length=64, **kw), texts)
            if base is None:
                base, base_speed = v, speed
            cos = (v * base).sum(axis=1)
            print(f"  {label:<11} {speed:7.0f} texts/s  ×{speed / base_speed:.2f}  cosine to fp32 min {cos.min():.5f} "
                  f"mean {cos.mean():.5f}", flush=True)


if __name__ == "__main__":
    main()
