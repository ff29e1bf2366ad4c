"""A :class:`~taxonomist.TaxonomyClassifier` as a bundle folder and back (:mod:`taxonomist.bundle` writes and
verifies the files: JSON, safetensors-style arrays, never a pickle).

The manifest keeps the estimator's parameters (``config``), the model's state (``tier_params``: the sparse
model's, or the ensemble's with its members), the taxonomy, the training data's fingerprint and size, the
evaluation metrics and the drift reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from .bundle import read_bundle, write_bundle
from .exceptions import BundleError
from .models.ensemble import Ensemble
from .models.sparse import SparseClassifier
from .monitoring import DriftReference
from .params import TIERS
from .taxonomy import Taxonomy
from .version import __version__

__all__ = ["Bundled", "load_classifier", "save_classifier"]

logger = logging.getLogger(__name__)


class Bundled(Protocol):
    """What a bundle keeps of a fitted classifier (:class:`~taxonomist.TaxonomyClassifier` is one): its
    parameters, its model and the learned attributes around it, set back by ``set_fitted`` on loading."""

    tier: str
    encoder_backend: Literal["auto", "torch", "onnx"]
    max_length: int
    model_: Any  # a SparseClassifier or an Ensemble
    classes_: np.ndarray
    taxonomy_: Taxonomy
    text_attributes_: list[str]
    description_chars_: int | None
    fingerprint_: str
    n_train_: int
    train_title_hashes_: np.ndarray
    metrics_: dict[str, Any]
    drift_reference_: DriftReference | None
    manifest_: dict[str, Any]

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def set_fitted(self, model: Any, taxonomy: Taxonomy | None, text_attributes: Sequence[str] = (),
                   description_chars: int | None = None, fingerprint: str = "", n_train: int = 0,
                   title_hashes: np.ndarray | None = None, metrics: Mapping[str, Any] | None = None,
                   drift_reference: DriftReference | None = None) -> None: ...


B = TypeVar("B", bound=Bundled)


def save_classifier(clf: Bundled, directory: str | Path) -> Path:
    """Write ``clf`` as a bundle (atomic)."""
    raw: dict[str, bytes] = {}
    if isinstance(clf.model_, SparseClassifier):
        params, arrays, objects = clf.model_.get_state()
    else:
        params, arrays, objects, raw = clf.model_.get_state()
    arrays["train_title_hashes"] = clf.train_title_hashes_
    manifest = {
        "taxonomist_version": __version__,
        "tier": clf.tier,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in clf.get_params().items()},
        "tier_params": params,
        "text_attributes": clf.text_attributes_,
        "description_chars": clf.description_chars_,
        "labels": [str(c) for c in clf.classes_],
        "objects": sorted(objects),
        "taxonomy": clf.taxonomy_.to_dict(),
        "training_data": {"fingerprint": clf.fingerprint_, "n_rows": clf.n_train_},
        "metrics": clf.metrics_,
    }
    if clf.drift_reference_ is not None:
        manifest["drift_reference"] = clf.drift_reference_.to_dict()
    return write_bundle(directory, manifest, {"weights": arrays}, objects, raw=raw)


def load_classifier(cls: Callable[..., B], directory: str | Path) -> B:
    """The classifier a bundle holds (verified first; nothing in it is executed)."""
    bundle = read_bundle(directory)
    m = bundle.manifest
    try:
        clf = cls(**m["config"])
        if clf.tier not in TIERS:
            raise BundleError(f"{directory} uses the tier {clf.tier!r}, which this taxonomist does not have; "
                              "upgrade taxonomist")
        arrays = bundle.arrays("weights")
        objects = {name: bundle.json(name) for name in m.get("objects", ("vocabulary", "classes"))}
        params = m["tier_params"]
        model: Any
        if clf.tier == "sparse":
            kind: type[SparseClassifier] = SparseClassifier
            if params.get("kind") == "private":
                from .models.private import PrivateLinearClassifier

                kind = PrivateLinearClassifier
            model = kind.from_state(params, arrays, objects)
        else:
            blob = bundle.raw("finetune.safetensors") if "finetune.safetensors" in m["files"] else None
            model = _ensemble_from_state(clf, params, arrays, objects, blob)
        chars = m.get("description_chars")  # (older bundles read whole descriptions)
        clf.set_fitted(model, Taxonomy.from_dict(m["taxonomy"]), text_attributes=m["text_attributes"],
                    description_chars=int(chars) if chars is not None else None,
                    fingerprint=m["training_data"]["fingerprint"], n_train=int(m["training_data"]["n_rows"]),
                    title_hashes=arrays["train_title_hashes"], metrics=m.get("metrics", {}),
                    drift_reference=DriftReference.from_dict(m["drift_reference"]) if m.get("drift_reference") else None)
        clf.manifest_ = m
    except BundleError:
        raise
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise BundleError(
                f"{directory} was saved by taxonomist {m.get('taxonomist_version', '?')} with options this "
                f"taxonomist {__version__} does not know ({e}); upgrade taxonomist to load it") from None
        raise BundleError(f"{directory}: the manifest or weights are inconsistent (TypeError: {e}); the bundle is damaged") from None
    except (KeyError, ValueError) as e:
        raise BundleError(f"{directory}: the manifest or weights are inconsistent ({type(e).__name__}: {e}); the bundle is damaged") from None
    return clf


def _ensemble_from_state(clf: Bundled, params: dict[str, Any], arrays: dict[str, np.ndarray],
                         objects: dict[str, Any], finetune_blob: bytes | None) -> Ensemble:
    from .encoders.transformer import load_text_encoder

    enc = params["encoder"]
    encoder = load_text_encoder(enc["name"], backend=clf.encoder_backend, max_length=clf.max_length)
    if encoder.identity != enc["identity"]:
        logger.warning("the bundle was trained with the encoder %s but %s is installed; its embeddings may differ "
                       "(reinstall the version named in the bundle's manifest for identical results)",
                       enc["identity"], encoder.identity)
    image_encoder = None
    img_enc = params.get("image_encoder")
    if img_enc:
        from .encoders.image import load_image_encoder

        image_encoder = load_image_encoder(img_enc["name"], views=int(img_enc.get("views", 1)))
        if image_encoder.identity != img_enc["identity"]:
            logger.warning("the bundle was trained with the image encoder %s but %s is installed",
                           img_enc["identity"], image_encoder.identity)
    ensemble = Ensemble.from_state(params, arrays, objects, encoder, finetune_blob, image_encoder)
    # a zero-shot model embeds the title with its context (older zero-shot bundles do not say so)
    ensemble.embed_context = ensemble.embed_context or clf.tier == "zeroshot"
    return ensemble
