"""Model bundles: a directory anyone can inspect, loaded without executing anything from it.

Layout::

    MODEL_DIR/
      manifest.json     format version, taxonomist version, creation time, config, labels, taxonomy,
                        training-data fingerprint, evaluation metrics, and the SHA-256 of every other file
      *.npz             numeric arrays (loaded with allow_pickle=False)
      *.json            vocabularies and other plain data
      *.safetensors     fine-tuned transformer weights (safetensors: tensors only, nothing executed on load)

Loading checks the format version and every file's hash, and refuses files the manifest does not list: a
changed, added or missing file means the bundle is not what was saved. Saving writes a sibling temporary
directory and renames it into place, so a crash mid-save never leaves a half bundle that loads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import BundleError

__all__ = ["BUNDLE_FORMAT_VERSION", "Bundle", "read_bundle", "write_bundle"]

logger = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    """A verified bundle: its manifest, and readers for its array and JSON files."""

    path: Path
    manifest: dict[str, Any]

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        file = self.path / f"{name}.npz"
        try:
            # a .npz is a zip; allow_pickle=False makes any object array raise instead of unpickling
            with np.load(file, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise BundleError(f"{file.name} in {self.path} is not a plain numeric array file ({e}); the bundle is damaged or unsafe") from None

    def json(self, name: str) -> Any:
        file = self.path / f"{name}.json"
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise BundleError(f"{file.name} in {self.path} is not valid JSON ({e})") from None

    def raw(self, name: str) -> bytes:
        """The bytes of a verified data file (e.g. ``finetune.safetensors``)."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.path} has no file {name!r}; the bundle is incomplete")
        return (self.path / name).read_bytes()


def write_bundle(
    directory: str | Path,
    manifest: dict[str, Any],
    arrays: dict[str, dict[str, np.ndarray]],
    objects: dict[str, Any],
    overwrite: bool = True,
    raw: dict[str, bytes] | None = None,
) -> Path:
    """Write ``arrays`` (name → dict of arrays, one ``.npz`` each), ``objects`` (name → JSON-able, one
    ``.json`` each) and ``raw`` (file name → bytes, e.g. safetensors) with ``manifest`` atomically into
    ``directory``."""
    target = Path(directory)
    if target.exists() and not overwrite:
        raise BundleError(f"{target} exists; choose another output folder or allow overwriting")
    if target.exists() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise BundleError(
            f"{target} exists and is not a taxonomist bundle (no {MANIFEST}); refusing to replace it -- choose an empty or new folder"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700); a bundle is an ordinary folder
    try:
        files: dict[str, str] = {}
        for name, arrs in arrays.items():
            f = tmp / f"{name}.npz"
            with f.open("wb") as fh:
                np.savez_compressed(fh, **arrs)  # type: ignore[arg-type]
            files[f.name] = sha256_file(f)
        for name, obj in objects.items():
            f = tmp / f"{name}.json"
            f.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
            files[f.name] = sha256_file(f)
        for name, blob in (raw or {}).items():
            if "/" in name or "\\" in name or name.startswith(".") or name == MANIFEST or name in files:
                raise ValueError(f"invalid bundle file name {name!r}")
            f = tmp / name
            f.write_bytes(blob)
            files[f.name] = sha256_file(f)
        full = {
            "format": "taxonomist-bundle",
            "format_version": BUNDLE_FORMAT_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **manifest,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, ensure_ascii=False), encoding="utf-8")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        backup = None
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(backup)
        tmp.rename(target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved bundle %s (%d files)", target, len(files))
    return target


def read_bundle(directory: str | Path) -> Bundle:
    """Open and verify a bundle: format version, the SHA-256 of every file, and no unlisted files."""
    path = Path(directory)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"expected a model bundle folder at {path}, but it does not exist; train one with: taxonomist train CATALOG -o {path}")
    if not mpath.is_file():
        raise BundleError(f"{path} is not a taxonomist bundle: {MANIFEST} is missing")
    if mpath.is_symlink():
        raise BundleError(f"{MANIFEST} in {path} is a symbolic link; a bundle's files must be its own")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e}); the bundle is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "taxonomist-bundle":
        raise BundleError(f"{mpath} is not a taxonomist manifest (expected \"format\": \"taxonomist-bundle\")")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION or version < 1:
        raise BundleError(
            f"{path} has bundle format version {version!r}, but this taxonomist reads versions 1 to "
            f"{BUNDLE_FORMAT_VERSION}; upgrade taxonomist (pip install -U taxonomist) to load it"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{mpath} lists no files; the bundle is damaged")
    present = {p.name for p in path.iterdir() if p.name != MANIFEST}
    extra = sorted(present - set(files))
    if extra:
        raise BundleError(
            f"{path} contains files the manifest does not list: {extra}; a bundle must be exactly what was saved "
            "(remove them, or retrain)"
        )
    for name, digest in files.items():
        f = path / name
        if "/" in name or "\\" in name or name.startswith("."):
            raise BundleError(f"{mpath} lists an invalid file name {name!r}")
        if f.is_symlink():  # a link may point anywhere: the bundle is only what its folder holds
            raise BundleError(f"{name} in {path} is a symbolic link; a bundle's files must be its own (copy the "
                              "bundle with its files, e.g. cp -rL, or retrain)")
        if not f.is_file():
            raise BundleError(f"{path} is missing {name}, which the manifest lists; the bundle is incomplete")
        if sha256_file(f) != digest:
            raise BundleError(
                f"{name} in {path} does not match the SHA-256 in {MANIFEST}: the file was changed after saving; "
                "refusing to load it (retrain, or restore the original bundle)"
            )
    return Bundle(path, manifest)
