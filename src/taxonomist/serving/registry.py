"""Model versions and hot reload.

``MODEL_DIR`` is either one bundle (it has ``manifest.json``; its version is the folder name) or a model store:
a folder whose sub-folders are bundles, one per version. :meth:`ModelRegistry.reload` loads and verifies the
requested (default: newest) version *beside* the served one and then swaps a single reference: requests already
running keep the model object they started with, new ones get the new one, and a bundle that fails its integrity
check raises :class:`~taxonomist.exceptions.BundleError` while the old version keeps serving.

Before a version is served it answers a canary prediction. A marker file beside the bundle
(``.VERSION.canary.HOST.PID``) lives while the canary runs: a version whose canary crashed the process (a marker
left by a dead process, or older than a few minutes) is skipped at start and refused at reload, so a bundle that
kills the server cannot crash-loop it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST
from ..exceptions import BundleError

__all__ = ["ModelRegistry", "ServedModel"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    version: str
    path: Path
    classifier: Any  # TaxonomyClassifier
    loaded_at: float = field(default_factory=time.time)

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(getattr(self.classifier, "manifest_", {}))


_CANARY = [{"title": "Cotton T-shirt for men, blue, size M", "description": "short sleeves"},
           {"title": "Stainless steel kitchen knife 20 cm"}]
_CANARY_STALE_S = 300.0  # a canary takes milliseconds: a marker this old was left by a process that died in it


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _crashed_canaries(path: Path) -> list[Path]:
    """The canary markers of the bundle ``path`` that a dead process left (it crashed in the canary)."""
    host, now = socket.gethostname(), time.time()
    out = []
    for marker in path.parent.glob(f".{path.name}.canary.*"):
        m_host, _, m_pid = marker.name.removeprefix(f".{path.name}.canary.").rpartition(".")
        try:
            age = now - marker.stat().st_mtime
        except OSError:  # removed meanwhile: that canary finished
            continue
        same_host_dead = m_host == host and m_pid.isdigit() and (int(m_pid) == os.getpid() or not _pid_alive(int(m_pid)))
        if same_host_dead or age > _CANARY_STALE_S:
            out.append(marker)
    return out


def canary(clf: Any, path: Path) -> None:
    """Answer :data:`_CANARY` with ``clf`` before it is served; :class:`BundleError` when it fails, or when an
    earlier canary of this bundle crashed its process (see the module's docs)."""
    crashed = _crashed_canaries(path)
    if crashed:
        raise BundleError(f"version {path.name} crashed the server during its canary prediction before ({crashed[0]} "
                          "was left behind); it is not served. Check the bundle (retrain it, or restore the saved "
                          f"one), then delete {crashed[0]} to try it again")
    marker = path.parent / f".{path.name}.canary.{socket.gethostname()}.{os.getpid()}"
    try:
        marker.touch()
        marked = True
    except OSError:  # a read-only store: the canary still runs, a crash in it cannot be remembered
        marked = False
    try:
        preds = clf.predict_products(_CANARY, top_k=2)
    except Exception as e:  # noqa: BLE001 -- any failure of the canary refuses the version
        raise BundleError(f"version {path.name} fails its canary prediction ({type(e).__name__}: {e}); the bundle "
                          "is damaged or inconsistent") from None
    finally:
        if marked:
            marker.unlink(missing_ok=True)
    bad = [p for p in preds for _, c in p.alternatives if not (math.isfinite(c) and 0.0 <= c <= 1.0)]
    if len(preds) != len(_CANARY) or bad:
        raise BundleError(f"version {path.name} answers its canary prediction with confidences that are not "
                          "probabilities; the bundle is damaged or inconsistent")


class ModelRegistry:
    def __init__(self, root: str | Path, image_root: str | Path | None = None) -> None:
        self.root = Path(root)
        self.image_root = image_root  # where image paths in requests resolve, for models that use photos
        self._current: ServedModel | None = None
        self._reload_lock = threading.Lock()  # one reload at a time; serving never waits on it
        self.skipped: list[str] = []  # versions that did not load when the service started

    @property
    def is_store(self) -> bool:
        return not (self.root / MANIFEST).is_file()

    def versions(self) -> list[str]:
        """Available versions, oldest first (a store's sub-folders with a manifest, ordered by name)."""
        if not self.is_store:
            return [self.root.name]
        if not self.root.is_dir():
            raise BundleError(f"expected a model bundle or a folder of bundles at {self.root}, but it does not exist; "
                              f"train one with: taxonomist train CATALOG -o {self.root}")
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))

    def path_of(self, version: str | None) -> Path:
        if not self.is_store:
            if version not in (None, self.root.name):
                raise BundleError(f"{self.root} is a single bundle (version {self.root.name!r}); it has no version {version!r}")
            return self.root
        versions = self.versions()
        if not versions:
            raise BundleError(f"the model store {self.root} has no bundles (sub-folders with {MANIFEST})")
        if version is None:
            return self.root / versions[-1]
        if version not in versions:
            raise BundleError(f"the model store {self.root} has no version {version!r}; available: {versions}")
        return self.root / version

    def next_version_path(self) -> Path:
        """Where a new version (e.g. a retrained model) goes in a store: ``v0001``, ``v0002``, ..."""
        if not self.is_store:
            raise BundleError(f"{self.root} is a single bundle, not a model store; serve a folder of versions to add one")
        numbers = [int(v[1:]) for v in self.versions() if v[:1] == "v" and v[1:].isdigit()]
        return self.root / f"v{max(numbers, default=0) + 1:04d}"

    @property
    def current(self) -> ServedModel:
        if self._current is None:
            raise RuntimeError("no model loaded yet")
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def start(self, version: str | None = None) -> ServedModel:
        """The first load: ``version``, or else the newest version that loads -- a damaged or unreadable newer
        one is skipped with a warning (and listed in :attr:`skipped`) rather than keeping the service down."""
        if version is not None or not self.is_store:
            return self.reload(version)
        versions = self.versions()
        for v in reversed(versions[1:]):
            try:
                return self.reload(v)
            except Exception as e:  # noqa: BLE001 -- any failure to load a bundle: try the previous version
                self.skipped.append(v)
                logger.warning("model version %s skipped: it does not load (%s)", v, e)
        return self.reload(versions[0] if versions else None)  # the oldest: its error stops the start

    def reload(self, version: str | None = None) -> ServedModel:
        """Load, verify and switch to ``version`` (default: the newest); on any error the served model stays."""
        from ..classifier import TaxonomyClassifier

        with self._reload_lock:
            path = self.path_of(version)
            start = time.perf_counter()
            clf = TaxonomyClassifier.load(path)  # verifies every file's SHA-256; never unpickles
            clf.image_root = str(self.image_root) if self.image_root is not None else None
            canary(clf, path)
            served = ServedModel(path.name, path, clf)
            old = self._current
            self._current = served  # one reference swap: atomic for readers
            logger.info("serving model version %s (%s tier, %d categories; loaded in %.1f s)%s", served.version,
                        clf.tier, len(clf.classes_), time.perf_counter() - start,
                        f", replacing {old.version}" if old is not None else "")
            return served
