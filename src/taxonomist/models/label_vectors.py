"""Category vectors computed once and shipped with the package, so that a first zero-shot run into Google's or
Shopify's taxonomy starts in seconds instead of embedding thousands of category names.

``taxonomist/datasets/taxonomies/vectors/`` holds, per built-in taxonomy and default encoder, the label vectors of
its leaves (:func:`~taxonomist.models.zeroshot.embed_labels`) as int8 with a scale per row, and ``index.json``:
for each file the encoder it was computed with (its identity without the numeric precision: bf16 and fp32 give
the same vectors to a cosine of 0.999), the SHA-256 of the leaf list it belongs to, the file's own SHA-256 and the
taxonomy version. :func:`lookup` returns the vectors only when all of these match the request and the file is
intact; anything else is computed as before. ``python scripts/build_label_vectors.py`` rebuilds them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..taxonomy import CategoryPath, format_path

__all__ = ["VECTORS_DIR", "encoder_key", "leaves_key", "lookup", "store"]

logger = logging.getLogger(__name__)

VECTORS_DIR = Path(__file__).resolve().parent.parent / "datasets" / "taxonomies" / "vectors"
_PRECISIONS = {"bf16", "fp16", "fp32"}


def encoder_key(encoder: Any) -> str:
    """The encoder's identity without its numeric precision."""
    return "|".join(p for p in str(getattr(encoder, "identity", "")).split("|") if p not in _PRECISIONS)


def leaves_key(paths: Sequence[CategoryPath]) -> str:
    return hashlib.sha256("\n".join(format_path(p) for p in paths).encode("utf-8")).hexdigest()


def _index(folder: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((folder / "index.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return []


def lookup(paths: Sequence[CategoryPath], encoder: Any, folder: Path = VECTORS_DIR) -> np.ndarray | None:
    """The shipped label vectors of ``paths`` (in that order) for ``encoder``, or ``None``; a combined encoder's
    are its parts' vectors, each scaled by the square root of its weight, side by side."""
    parts = getattr(encoder, "parts", None)
    if parts:
        found = [lookup(paths, p, folder) for p in parts]
        return None if any(f is None for f in found) else np.asarray(encoder.combine(found))
    want_leaves, want_encoder = leaves_key(paths), encoder_key(encoder)
    for entry in _index(folder):
        if entry.get("leaves_sha256") != want_leaves or entry.get("encoder") != want_encoder:
            continue
        file = folder / str(entry["file"])
        try:
            raw = file.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
            logger.warning("%s does not match its checksum; the category vectors are computed instead", file.name)
            return None
        with np.load(file, allow_pickle=False) as data:
            q, scale = data["q"].astype(np.float32), data["scale"].astype(np.float32)
        if q.shape[0] != len(paths):
            return None
        vecs = q * scale[:, None]
        logger.info("category vectors of %d leaves read from %s", len(paths), file.name)
        return np.asarray(vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12), np.float32)
    return None


def store(name: str, paths: Sequence[CategoryPath], encoder: Any, vectors: np.ndarray, version: str,
          folder: Path = VECTORS_DIR) -> Path:
    """Write the vectors of ``paths`` as ``folder/NAME.npz`` (int8 + a scale per row) and list them in the index."""
    folder.mkdir(parents=True, exist_ok=True)
    v = np.asarray(vectors, np.float32)
    scale = np.maximum(np.abs(v).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.rint(v / scale[:, None]), -127, 127).astype(np.int8)
    file = folder / f"{name}.npz"
    np.savez_compressed(file, q=q, scale=scale.astype(np.float32))
    entry = {"file": file.name, "taxonomy": version, "encoder": encoder_key(encoder), "leaves": len(paths),
             "dim": int(v.shape[1]), "leaves_sha256": leaves_key(paths),
             "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    index = [e for e in _index(folder) if e.get("file") != file.name] + [entry]
    (folder / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return file
