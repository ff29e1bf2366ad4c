"""The fitted classifier's parts, read-only: its sparse model, its ensemble, and what the ensemble chose.

:class:`FittedParts` is a mixin of :class:`~taxonomist.classifier.TaxonomyClassifier`: every attribute here is
read from the fitted ``model_`` (a :class:`~taxonomist.models.sparse.SparseClassifier` for the sparse tier, an
:class:`~taxonomist.models.ensemble.Ensemble` for the embedding tiers), never stored beside it.
"""

from __future__ import annotations

from typing import Any

from .models.ensemble import Ensemble
from .models.sparse import SparseClassifier

__all__ = ["FittedParts"]

_ENSEMBLE_ONLY = object()


def _part(name: str, doc: str, otherwise: Any = _ENSEMBLE_ONLY) -> Any:
    """A read-only attribute of the classifier that is its ensemble's ``name`` (``otherwise`` for the sparse tier;
    without it, only the embedding tiers have it)."""

    def get(self: FittedParts) -> Any:
        ens = self.ensemble_
        if ens is not None:
            return getattr(ens, name)
        if otherwise is _ENSEMBLE_ONLY:
            raise AttributeError(f"only the embedding tiers (ensemble, embed, finetune, zeroshot) have {name}_")
        return otherwise

    return property(get, doc=doc)


class FittedParts:
    """The parts of a fitted classifier's ``model_`` it exposes."""

    model_: Any

    @property
    def sparse_member(self) -> SparseClassifier | None:
        """The sparse model: the sparse tier's model, or the ensemble's sparse member (``None`` without one)."""
        return self.model_ if isinstance(self.model_, SparseClassifier) else self.model_.sparse

    @property
    def context_weight_(self) -> float | None:
        """The sparse member's weight of the context beside the title (``None`` without a sparse member)."""
        sparse = self.sparse_member
        return None if sparse is None else float(sparse.encoder_.context_weight)

    @property
    def ensemble_(self) -> Ensemble | None:
        """The ensemble of an embedding tier (``None`` for the sparse tier)."""
        model = getattr(self, "model_", None)
        return model if isinstance(model, Ensemble) else None

    encoder_ = _part("encoder", "The text encoder of an embedding tier (``None`` for the sparse tier).", None)
    image_encoder_ = _part("image_encoder", "The image encoder of a model that reads photos (``None``: text only).", None)
    image_stats_ = _part("image_stats", "The training products' photos: usable, missing, unusable.", {})
    neighbour_titles_ = _part("neighbour_titles", "The neighbour member's training titles, its order (PII scrubbed).", [])
    weights_ = _part("weights", "The ensemble members' weights (chosen by cross-validation).")
    stacking_ = _part("stacking", "What cross-validation chose for the ensemble, and why (``summary``: one line).")
    prior_shift_ = _part("prior_shift", "The strength of the ensemble's logit adjustment against the class prior.")
    cascade_ = _part("cascade", "The sparse member's confidence above which it answers alone (``None``: off).")

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the model reads, among ``"text"`` and ``"image"``."""
        ens = self.ensemble_
        return ("text",) if ens is None else ens.modalities
