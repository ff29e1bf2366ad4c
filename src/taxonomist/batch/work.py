"""What one batch worker does, identically on every engine: read one input shard, run the pure pandas-in /
pandas-out function on it in batches, and write one Parquet part atomically.

:func:`predict_batch` and :func:`embed_batch` are the functions themselves; :class:`ShardWorker` loads the model
once (per process or per Ray actor) and is the callable Ray Data's ``map_batches`` runs, so it lives in the
installed package (Ray workers import it by name).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import TaxonomistError

__all__ = ["ShardWorker", "embed_batch", "model_version", "part_name", "predict_batch", "write_parquet_atomic"]

logger = logging.getLogger(__name__)


def predict_batch(clf: Any, frame: pd.DataFrame, *, top_k: int = 3, min_confidence: float | None = None,
                  model_version: str = "", explain: bool = False, known: Sequence[str] | None = None) -> pd.DataFrame:
    """Classify a frame of products (``id``, ``title``, optional ``description`` / attributes): the one
    prediction function of the local path, the process pool and the Ray actors.

    Columns: ``id``, ``title``, ``category`` (the path, backed off when unsure), ``confidence``,
    ``level_confidence``, ``leaf``, ``leaf_confidence``, ``backed_off``, ``alternatives``, ``model_version``
    (and ``explanation`` / ``neighbours`` with ``explain``). ``known``: the categories the products already have
    (a zero-shot model learns from them: :meth:`~taxonomist.TaxonomyClassifier.predict_products`).
    """
    result: pd.DataFrame = clf.predict_frame(frame, top_k=top_k, min_confidence=min_confidence, explain=explain,
                                             known=known)
    result.insert(1, "title", frame["title"].to_numpy())
    result["model_version"] = model_version
    return result


def embed_batch(encoder: Any, frame: pd.DataFrame, *, model_version: str = "") -> pd.DataFrame:
    """Embed the titles of a frame of products: ``id``, ``embedding`` (L2-normalised float32), ``model_version``."""
    vectors = np.asarray(encoder.encode(frame["title"].astype(str).tolist(), show_progress_bar=False), dtype=np.float32)
    return pd.DataFrame({
        "id": frame["id"].astype(str).to_numpy() if "id" in frame.columns else np.arange(len(frame)).astype(str),
        "embedding": list(vectors),
        "model_version": model_version,
    })


def part_name(index: int) -> str:
    """Output part of input shard number ``index`` (position in the sorted shard list)."""
    return f"part-{index:05d}.parquet"


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a hidden temporary name in the same folder, fsync, then rename: a reader (or a resumed job)
    sees either no part or a whole one. Hidden names are skipped by Parquet dataset readers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if "embedding" in frame.columns and len(frame):  # fixed-size float32 lists: compact and typed
        vectors = np.stack(list(frame["embedding"])).astype(np.float32)
        col = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
        table = table.set_column(table.schema.get_field_index("embedding"), "embedding", col)
    try:
        pq.write_table(table, tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def model_version(model: str | Path) -> str:
    """The version name written with each prediction: a bundle's folder name (as the service reports it), or
    the encoder's name."""
    p = Path(model)
    return p.resolve().name if (p / "manifest.json").is_file() else str(model)


class ShardWorker:
    """Loads the model once, then turns input shards into output parts.

    ``spec`` (JSON-able, the same for every worker of a job): ``kind`` (``predict`` | ``embed``), ``model`` (a
    bundle folder; for ``embed`` also an encoder preset or model folder), ``output`` (folder), ``read`` (keyword
    arguments of :func:`~taxonomist.catalog.read_catalog`), ``batch_size``, ``top_k``, ``min_confidence``,
    ``threads`` (torch threads per worker), ``image_root``.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)
        self.kind = self.spec.get("kind", "predict")
        self.output = Path(self.spec["output"])
        self.batch_size = int(self.spec.get("batch_size", 2048))
        self.version = model_version(self.spec["model"])
        threads = self.spec.get("threads")
        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        self.model = self._load(str(self.spec["model"]))
        if threads and "torch" in sys.modules:  # an embedding model: one torch thread pool per worker
            import torch

            torch.set_num_threads(int(threads))

    def _load(self, model: str) -> Any:
        from ..classifier import load

        if self.kind == "predict":
            return load(model)
        if self.kind != "embed":
            raise TaxonomistError(f"unknown batch job kind {self.kind!r}; expected 'predict' or 'embed'")
        if (Path(model) / "manifest.json").is_file():
            clf = load(model)
            encoder = getattr(clf, "encoder_", None)
            if encoder is None:
                raise TaxonomistError(
                    f"{model} is a {clf.tier}-tier bundle without a text encoder; embed with an encoder instead: "
                    "minilm-en, e5-multilingual or a local model folder"
                )
        else:
            from ..encoders.transformer import load_text_encoder

            encoder = load_text_encoder(model)
        encoder.cache = None  # a catalogue-scale job would only bloat the embedding cache
        return encoder

    def _apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.kind == "embed":
            return embed_batch(self.model, frame, model_version=self.version)
        return predict_batch(self.model, frame, top_k=int(self.spec.get("top_k", 3)),
                             min_confidence=self.spec.get("min_confidence"), model_version=self.version)

    def process(self, index: int, path: str) -> dict[str, Any]:
        """Shard ``index`` at ``path`` → ``part-<index>.parquet``; returns a summary, with ``error`` set (and no
        part written) when the shard could not be read or, with ``strict``, had a bad row."""
        from ..catalog import read_catalog

        start = time.perf_counter()
        summary: dict[str, Any] = {"index": index, "shard": path, "part": part_name(index), "rows": 0,
                                   "read": 0, "skipped": 0, "issues": [], "error": None, "seconds": 0.0}
        try:
            cat = read_catalog(path, **self.spec.get("read", {}))
            frame = cat.frame
            if self.kind == "predict":  # relative photo paths resolve against --image-root, else the shard's folder
                self.model.image_root = self.spec.get("image_root") or str(cat.base_dir)
            rep = cat.report
            summary.update(read=rep.n_read, skipped=sum(i.count for i in rep.issues.values() if i.skipped),
                           issues=rep.lines()[1:])
            parts = [self._apply(frame.iloc[i:i + self.batch_size]) for i in range(0, len(frame), self.batch_size)]
            result = pd.concat(parts, ignore_index=True) if parts else self._apply(frame)
            write_parquet_atomic(result, self.output / part_name(index))
            summary["rows"] = len(result)
        except (TaxonomistError, OSError, ValueError, KeyError) as e:  # a bad shard is reported, not fatal
            summary["error"] = f"{type(e).__name__}: {e}"
            logger.info("shard %s failed: %s", path, summary["error"])
        summary["seconds"] = round(time.perf_counter() - start, 4)
        return summary

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Ray Data entry point: a batch of shard descriptors (``index``, ``path``) → their summaries."""
        import json

        rows = [self.process(int(i), str(p)) for i, p in zip(batch["index"], batch["path"], strict=True)]
        for row in rows:
            row["issues"] = json.dumps(row["issues"], ensure_ascii=False)  # a plain string column for Arrow
        return pd.DataFrame(rows)


# -- the process pool of the local engine: one ShardWorker per process --------------------------------------
_WORKER: ShardWorker | None = None


def init_process(spec: Mapping[str, Any]) -> None:
    global _WORKER
    _WORKER = ShardWorker(spec)


def process_in_pool(index: int, path: str) -> dict[str, Any]:
    assert _WORKER is not None, "init_process was not run in this process"
    return _WORKER.process(index, path)
