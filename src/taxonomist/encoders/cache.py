"""On-disk embedding cache: one SQLite file, vectors keyed by (encoder identity, cleaned text).

Re-running training, evaluation or tuning on the same catalogue does not re-encode it. The key is a SHA-256 of
the encoder's identity string (model, weights checksum, prefix, max length, pooling) and the text the encoder
sees, so a different model or setting never reads another's vectors. WAL mode lets several processes (batch
workers, the server) share one file. Vectors are stored as float32 bytes; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "cache_dir", "cached_model", "cached_model_ready"]

logger = logging.getLogger(__name__)

_CHUNK = 500  # keys per SELECT (SQLite's parameter limit is 32,766 on current builds; stay far below)


def cache_dir() -> Path:
    """taxonomist's cache folder: ``$TAXONOMIST_CACHE_DIR``, else the user cache dir (``~/.cache/taxonomist``)."""
    env = os.environ.get("TAXONOMIST_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("taxonomist", appauthor=False))


_CHECKSUM_FILE = "taxonomist-checksum.json"


def _as_recorded(recorded: dict[str, object], st: os.stat_result) -> bool:
    return recorded.get("stat") == [st.st_size, st.st_mtime_ns]


def cached_model_ready(name: str, main_file: str) -> bool:
    """Whether :func:`cached_model` would return ``name`` at once (built, its file as recorded), without hashing."""
    target = cache_dir() / "models" / name
    try:
        return _as_recorded(json.loads((target / _CHECKSUM_FILE).read_text()), (target / main_file).stat())
    except (OSError, ValueError, AttributeError):
        return False


def cached_model(name: str, main_file: str, build: Callable[[Path], object]) -> Path:
    """``cache_dir()/models/<name>``, built by ``build(folder)`` at first use (into a temporary folder, then
    renamed: never half-written), with the SHA-256, size and modification time of ``main_file`` stored beside it;
    a later call hashes the file again when its size or time changed, and a damaged folder is rebuilt."""
    from ..bundle import sha256_file

    target = cache_dir() / "models" / name
    check = target / _CHECKSUM_FILE
    if check.is_file():
        try:
            recorded = json.loads(check.read_text())
            st = (target / main_file).stat()
            # the file as it was written (size and modification time recorded then): its 470 MB are not hashed
            # again on every load (~0.4 s); a file changed since, or a record of an older format, is hashed
            if _as_recorded(recorded, st):
                return target
            if sha256_file(target / main_file) == recorded[main_file]:
                # (a record of an older format, or a file touched but not changed: its stat is recorded now)
                check.write_text(json.dumps({**recorded, "stat": [st.st_size, st.st_mtime_ns]}))
                return target
        except (OSError, ValueError, KeyError):
            pass
        logger.warning("the cached model in %s failed its checksum; rebuilding it", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building %s into %s (first use only)", name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        st = (tmp / main_file).stat()
        (tmp / _CHECKSUM_FILE).write_text(json.dumps({main_file: sha256_file(tmp / main_file),
                                                      "stat": [st.st_size, st.st_mtime_ns]}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class EmbeddingCache:
    """A persistent map (encoder identity, text) → float32 vector.

    Args:
        path: the SQLite file (default ``cache_dir() / "embeddings.sqlite"``).

    Example:
        >>> import tempfile, numpy as np
        >>> c = EmbeddingCache(Path(tempfile.mkdtemp()) / "e.sqlite")
        >>> c.put("enc", ["a"], np.ones((1, 3), np.float32))
        >>> c.get("enc", ["a", "b"])[0].tolist(), c.get("enc", ["a", "b"])[1]
        ([[1.0, 1.0, 1.0]], [1])
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "embeddings.sqlite"
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, dim INTEGER, vec BLOB) WITHOUT ROWID")
            self._local.conn = conn
        return conn

    @staticmethod
    def _key(identity: str, text: str) -> bytes:
        return hashlib.sha256(f"{identity}\x00{text}".encode()).digest()[:16]

    def get(self, identity: str, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """The cached vectors of ``texts`` (rows of the ones found, in order) and the positions not found.

        Returns ``(found_vectors, missing_positions)``: ``found_vectors`` has one row per text not in
        ``missing_positions``, in the texts' order.
        """
        keys = [self._key(identity, t) for t in texts]
        hits: dict[bytes, np.ndarray] = {}
        try:
            conn = self._conn()
            for s in range(0, len(keys), _CHUNK):
                chunk = keys[s:s + _CHUNK]
                q = f"SELECT key, dim, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                for k, dim, vec in conn.execute(q, chunk):
                    v = np.frombuffer(vec, dtype=np.float32)
                    if v.size == dim:
                        hits[k] = v
        except sqlite3.Error as e:  # a damaged or locked cache must never stop a run: encode instead
            logger.warning("embedding cache %s unreadable (%s); encoding without it", self.path, e)
            return np.zeros((0, 0), np.float32), list(range(len(texts)))
        missing = [i for i, k in enumerate(keys) if k not in hits]
        found = [hits[k] for k in keys if k in hits]
        return (np.vstack(found) if found else np.zeros((0, 0), np.float32)), missing

    def put(self, identity: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text (float32)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(self._key(identity, t), int(v.size), v.tobytes()) for t, v in zip(texts, vectors, strict=True)]
        try:
            conn = self._conn()
            with conn:
                conn.executemany("INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)", rows)
        except sqlite3.Error as e:
            logger.warning("could not write to the embedding cache %s (%s); continuing without it", self.path, e)

    def clear(self) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM emb")
