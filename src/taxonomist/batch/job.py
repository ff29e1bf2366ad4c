"""Resumable batch jobs: classify or embed a folder of catalogue shards into a folder of Parquet parts.

A job's output folder holds ``part-NNNNN.parquet`` (one per input shard, written atomically) and
``_manifest.json``: what the job is (kind, model fingerprint, options, the input shards with size and mtime)
and which shards are done. Started again with the same arguments, a job skips the shards already done, so a
run killed halfway finishes only the missing ones and its output equals an uninterrupted run. Shards are also
the unit of parallelism: split one huge file into several to use several workers.

Engines run the same :class:`~taxonomist.batch.work.ShardWorker`: ``local`` in a process pool (model loaded once
per process), ``ray`` inside Ray Data ``map_batches`` over an actor pool (model loaded once per actor). On a Ray
cluster the input and output folders must be reachable from every node (a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import TaxonomistError

__all__ = ["ENGINES", "JobResult", "list_shards", "read_output", "run_job"]

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
MANIFEST = "_manifest.json"
_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json")
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")
RAY_ACTOR_CPUS = 0.5  # fractional: whole-CPU actors starve Ray Data's read/write tasks on small machines


def _is_input(path: Path) -> bool:
    name = path.name.lower()
    for comp in _COMPRESSED:
        if name.endswith(comp):
            name = name[: -len(comp)]
    return not path.name.startswith((".", "_")) and name.endswith(_SUFFIXES)


def list_shards(source: str | Path) -> list[Path]:
    """The input shards: ``source`` itself when it is a file, else its catalogue files (sub-folders included),
    sorted by relative path. Hidden files and ``_``-prefixed ones (manifests, ``_SUCCESS``) are skipped."""
    src = Path(source)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise TaxonomistError(f"input {src} does not exist; expected a catalogue file or a folder of shards")
    shards = sorted((p for p in src.rglob("*") if p.is_file() and _is_input(p)), key=lambda p: p.relative_to(src).as_posix())
    if not shards:
        raise TaxonomistError(
            f"input folder {src} has no catalogue files; expected files ending in {', '.join(_SUFFIXES)} "
            "(optionally compressed)"
        )
    return shards


def _preflight(kind: str, model: str) -> None:
    """Cheap checks in the driver, so a wrong model fails once with a clear message instead of in every worker."""
    manifest = Path(model) / "manifest.json"
    if kind == "predict" and not manifest.is_file():
        raise TaxonomistError(f"model {model} is not a taxonomist bundle folder (no manifest.json); train one with "
                              "taxonomist train, or give the folder it was saved to")
    if kind == "embed" and manifest.is_file():
        try:
            tier = json.loads(manifest.read_text(encoding="utf-8")).get("tier")
        except (OSError, ValueError) as e:
            raise TaxonomistError(f"{manifest} is unreadable ({e}); the bundle is damaged") from None
        if tier == "sparse":
            raise TaxonomistError(f"{model} is a sparse-tier bundle without a text encoder; embed with an encoder "
                                  "instead: minilm-en, e5-multilingual or a local model folder")


def _fingerprint_model(model: str) -> str:
    manifest = Path(model) / "manifest.json"
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    return str(model)  # an encoder preset / folder name


@dataclass
class JobResult:
    """What a job did: shards done now and before, rows written and skipped, failures with their reasons."""

    output: Path
    n_shards: int
    n_done_before: int
    n_processed: int = 0
    rows: int = 0
    skipped_rows: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def _differences(new: Mapping[str, Any], old: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ, as dotted paths into nested dicts (``options.top_k``)."""
    out: list[str] = []
    for k in sorted(set(new) | set(old)):
        a, b = new.get(k), old.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


class _Manifest:
    """The job's identity and its completed shards, rewritten atomically after every shard."""

    def __init__(self, output: Path, job: dict[str, Any], overwrite: bool) -> None:
        self.path = output / MANIFEST
        self.job = job
        self.completed: dict[str, dict[str, Any]] = {}
        if output.exists() and overwrite:
            if self.path.is_file() or not any(output.iterdir()):
                shutil.rmtree(output)
            else:
                raise TaxonomistError(f"overwrite: {output} is not a taxonomist batch output (no {MANIFEST}); "
                                      "refusing to delete it -- choose another folder", options=("overwrite",))
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise TaxonomistError(f"{self.path} is unreadable ({e}); delete the output folder or pass overwrite=True",
                                      options=("overwrite",)) from None
            if saved.get("job") != job:
                diff = _differences(job, saved.get("job", {}))
                raise TaxonomistError(
                    f"{output} holds the output of a different job (differs in: {', '.join(diff)}); resume with the "
                    "same model, input and options, or write to a new folder, or pass overwrite=True",
                    options=("overwrite",))
            self.completed = {k: v for k, v in saved.get("completed", {}).items() if (output / v["part"]).is_file()}
        elif output.exists() and any(p for p in output.iterdir() if not p.name.startswith(".")):
            raise TaxonomistError(f"output folder {output} exists and is not empty; choose a new folder for the job")
        output.mkdir(parents=True, exist_ok=True)
        for stale in output.glob(".part-*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)

    def done(self, summary: Mapping[str, Any]) -> None:
        self.completed[str(summary["index"])] = {k: summary[k] for k in ("shard", "part", "rows", "skipped", "seconds")}
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"job": self.job, "completed": self.completed}, indent=1, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, self.path)


def _run_local(spec: dict[str, Any], todo: list[tuple[int, str]], workers: int) -> Iterable[dict[str, Any]]:
    from .work import ShardWorker, init_process, process_in_pool

    if workers <= 1 or len(todo) == 1:
        worker = ShardWorker(spec)
        for index, path in todo:
            yield worker.process(index, path)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: safe with torch / BLAS threads already started in the parent
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=init_process, initargs=(spec,)) as pool:
        futures = [pool.submit(process_in_pool, index, path) for index, path in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BrokenProcessPool:
            raise TaxonomistError(
                "a worker process died (out of memory, or the model failed to load in it); the finished shards are "
                "kept -- run the same job again to resume, with fewer num_workers if memory is short",
                options=("num_workers",)) from None


def _run_ray(spec: dict[str, Any], todo: list[tuple[int, str]], workers: int, address: str | None) -> Iterable[dict[str, Any]]:
    try:
        import ray
        import ray.data
    except ImportError:
        raise TaxonomistError("engine='ray' needs Ray Data: pip install 'taxonomist[distributed]'",
                              options=("engine",)) from None
    from .work import ShardWorker

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=False)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the CLI shows its own bar, per shard
        ds = ray.data.from_items([{"index": i, "path": p} for i, p in todo], override_num_blocks=len(todo))
        results = ds.map_batches(
            ShardWorker, fn_constructor_kwargs={"spec": spec}, batch_size=1, batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(todo)))), num_cpus=RAY_ACTOR_CPUS,
        )
        try:
            for row in results.iter_rows():
                summary = dict(row)
                summary["index"] = int(summary["index"])
                summary["issues"] = json.loads(summary["issues"])
                yield summary
        except ray.exceptions.RayError as e:
            raise TaxonomistError(
                f"the Ray job failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); the finished shards are "
                "kept -- fix the cause and run the same command again to resume"
            ) from None
    finally:
        if started:
            ray.shutdown()


def run_job(
    kind: str,
    model: str | Path,
    source: str | Path,
    output: str | Path,
    *,
    engine: str = "local",
    num_workers: int | None = None,
    address: str | None = None,
    read: Mapping[str, Any] | None = None,
    batch_size: int = 2048,
    top_k: int = 3,
    min_confidence: float | None = None,
    overwrite: bool = False,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
    image_root: str | None = None,
) -> JobResult:
    """Run (or resume) a batch job; see the module docstring.

    Args:
        kind: ``"predict"`` (a bundle folder as ``model``) or ``"embed"`` (a bundle with a text encoder, an
            encoder preset such as ``minilm-en``, or a model folder).
        source: a catalogue file or a folder of shards (Parquet, CSV/TSV, JSONL; compressed allowed).
        output: the folder of Parquet parts and ``_manifest.json``.
        engine: ``"local"`` (process pool) or ``"ray"`` (Ray Data actor pool; ``address`` of a running cluster,
            e.g. ``"auto"``, or a local Ray started and stopped for the job).
        num_workers: processes / actors (default: the CPU count, at most one per pending shard).
        read: keyword arguments of :func:`~taxonomist.catalog.read_catalog` (``mapping``, ``strict``, ...).
        on_shard: called with each shard's summary as it finishes (progress display).
        image_root: where relative image paths resolve (models that use photos); default: each shard's folder.
    """
    if engine not in ENGINES:
        raise TaxonomistError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}", options=("engine",))
    if kind not in ("predict", "embed"):
        raise TaxonomistError(f"unknown batch job kind {kind!r}; expected 'predict' or 'embed'")
    if batch_size < 1:
        raise TaxonomistError(f"batch size must be at least 1, got {batch_size}")
    shards = list_shards(source)
    out = Path(output)
    model_s = str(Path(model).resolve()) if Path(model).exists() else str(model)
    _preflight(kind, model_s)
    options = {"read": dict(read or {}), "top_k": top_k, "min_confidence": min_confidence,
               "image_root": image_root} if kind == "predict" else {"read": dict(read or {})}
    job = {
        "kind": kind, "model": model_s, "model_fingerprint": _fingerprint_model(model_s), "options": options,
        "inputs": [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in shards],
    }
    manifest = _Manifest(out, json.loads(json.dumps(job)), overwrite)
    todo = [(i, str(p.resolve())) for i, p in enumerate(shards) if str(i) not in manifest.completed]
    result = JobResult(output=out, n_shards=len(shards), n_done_before=len(shards) - len(todo))
    if result.n_done_before:
        logger.info("resuming: %d of %d shards already done", result.n_done_before, len(shards))
    workers = num_workers or min(os.cpu_count() or 1, max(len(todo), 1))
    spec = {"kind": kind, "model": model_s, "output": str(out.resolve()), "read": dict(read or {}),
            "batch_size": batch_size, "top_k": top_k, "min_confidence": min_confidence, "image_root": image_root,
            "threads": max(1, (os.cpu_count() or 1) // max(workers, 1))}
    start = time.perf_counter()
    if todo:
        runner = _run_ray(spec, todo, workers, address) if engine == "ray" else _run_local(spec, todo, workers)
        for summary in runner:
            if summary["error"]:
                result.failures.append({"shard": summary["shard"], "error": summary["error"]})
            else:
                manifest.done(summary)
                result.n_processed += 1
                result.rows += int(summary["rows"])
                result.skipped_rows += int(summary["skipped"])
            if summary["issues"]:
                result.issues.append({"shard": summary["shard"], "lines": list(summary["issues"])})
            if on_shard is not None:
                on_shard(summary)
    manifest.save()
    result.seconds = time.perf_counter() - start
    logger.info("%s job: %d shards processed, %d done before, %d failed, %d rows in %.1f s",
                kind, result.n_processed, result.n_done_before, len(result.failures), result.rows, result.seconds)
    return result


def read_output(output: str | Path) -> Any:
    """The finished parts of a job's output folder as one DataFrame, in input-shard order."""
    import pandas as pd

    out = Path(output)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    parts = [out / manifest["completed"][k]["part"] for k in sorted(manifest["completed"], key=int)]
    if not parts:
        raise TaxonomistError(f"{out} has no finished parts yet")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
