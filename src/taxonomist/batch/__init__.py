"""Batch prediction and embedding at catalogue scale: resumable jobs over shards, on a process pool or Ray Data."""
from __future__ import annotations

from .job import ENGINES, JobResult, list_shards, read_output, run_job
from .work import ShardWorker, embed_batch, predict_batch

__all__ = ["ENGINES", "JobResult", "ShardWorker", "embed_batch", "list_shards", "predict_batch", "read_output", "run_job"]
