"""Experiment tracking with MLflow: parameters, every evaluation metric, the report and the bundle, per run.

``taxonomist train/evaluate/tune --track`` open one run each (a tuning run gets one nested run per trial). The
store is embedded and local by default (``sqlite:///mlflow.db`` in the working folder, artifacts under
``./mlruns``); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` point it at a team server instead. Browse with::

    mlflow ui --backend-store-uri sqlite:///mlflow.db

Tags on every run: ``taxonomist.version``, ``taxonomist.command``, ``data.fingerprint`` (hash of the titles and
labels the run saw), ``data.rows`` and ``git.commit`` of the taxonomist source when it is a git checkout.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .exceptions import TaxonomistError
from .version import __version__

__all__ = ["DEFAULT_TRACKING_URI", "Tracker", "flatten_metrics", "is_mlflow_available", "start_run"]

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "taxonomist"
_BAD_KEY = re.compile(r"[^0-9A-Za-z_\-. /]")  # what MLflow accepts in metric and parameter names


def is_mlflow_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) metrics dict as ``a.b`` keys; lists of per-level dicts become ``level_1.x``.

    >>> flatten_metrics({"accuracy": 0.9, "levels": [{"level": 1, "macro_f1": 0.8}], "split": {"seed": 0}})
    {'accuracy': 0.9, 'level_1.macro_f1': 0.8, 'split.seed': 0.0}
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = _BAD_KEY.sub("_", f"{prefix}{key}")
        if isinstance(value, bool):
            flat[name] = float(value)
        elif isinstance(value, (int, float)):
            if math.isfinite(float(value)):
                flat[name] = float(value)
        elif isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value, start=1):
                label = f"level_{item['level']}" if "level" in item else f"{name}_{i}"
                flat.update(flatten_metrics({k: v for k, v in item.items() if k != "level"}, f"{label}."))
    return flat


def _git_commit() -> str | None:
    """The commit of the taxonomist source, when it is a git checkout (an editable install)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class Tracker:
    """One open MLflow run (use :func:`start_run`). Thin over ``MlflowClient``: no global MLflow state is touched,
    so a library user's own active run is left alone."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_BAD_KEY.sub("_", str(k)), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0, prefix: str = "") -> dict[str, float]:
        """Log every numeric value of ``metrics`` (nested dicts flattened); returns what was logged."""
        import time

        from mlflow.entities import Metric

        flat = flatten_metrics(metrics, prefix)
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in flat.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])
        return flat

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path or p.name)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        """Write ``obj`` as JSON artifact ``name`` (e.g. the full metrics with per-class rows)."""
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / name
            f.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
            self.client.log_artifact(self.run_id, str(f))

    def child(self, name: str) -> Tracker:
        """A nested run (shown under this one in the MLflow UI), e.g. one tuning trial."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={"mlflow.parentRunId": self.run_id})
        return Tracker(self.client, run.info.run_id, self.experiment_id)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def log_pyfunc(self, bundle: str | Path, artifact_path: str = "model") -> None:
        """Log ``bundle`` as an MLflow pyfunc model (``taxonomist/mlflow_model.py``, logged as code with the bundle
        as its artifact: nothing is pickled), so ``mlflow models serve`` and ``mlflow.pyfunc.load_model`` work."""
        import tempfile
        import warnings

        with warnings.catch_warnings():  # mlflow.pyfunc warns about its own chat-agent types when imported
            warnings.simplefilter("ignore", UserWarning)
            import mlflow.pyfunc

        code = Path(__file__).with_name("mlflow_model.py")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / artifact_path
            mlflow.pyfunc.save_model(str(target), python_model=str(code), artifacts={"bundle": str(bundle)},
                                     pip_requirements=[f"taxonomist=={__version__}"])
            self.client.log_artifacts(self.run_id, str(target), artifact_path)

    def register_bundle(self, name: str, artifact_path: str = "model") -> str:
        """Register the pyfunc model logged under ``artifact_path`` (:meth:`log_pyfunc`) as a new version of model
        ``name`` in the MLflow model registry; returns the version number."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as e:
            if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{artifact_path}"
        version = self.client.create_model_version(name, source=source, run_id=self.run_id,
                                                   tags={"taxonomist.version": __version__})
        return str(version.version)


@contextmanager
def start_run(
    command: str,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open a run in ``experiment`` (created when missing); it ends FINISHED, or FAILED when the block raises.

    ``tracking_uri``: ``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > ``sqlite:///mlflow.db``.
    """
    if not is_mlflow_available():
        raise TaxonomistError("tracking needs MLflow: pip install 'taxonomist[track]'", options=("track",))
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    base = {"taxonomist.version": __version__, "taxonomist.command": command, "git.commit": _git_commit()}
    run = client.create_run(experiment_id, run_name=run_name or command,
                            tags={k: str(v) for k, v in {**base, **(tags or {})}.items() if v is not None})
    tracker = Tracker(client, run.info.run_id, experiment_id)
    logger.info("MLflow run %s in experiment %r at %s", tracker.run_id, experiment, uri)
    try:
        yield tracker
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
