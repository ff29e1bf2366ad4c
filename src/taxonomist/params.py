"""The parameters of :class:`~taxonomist.TaxonomyClassifier`, declared once: their types and defaults
(:class:`Parameters`, the estimator's fields), what each accepts (:data:`PARAMETERS`) and the check of both,
alone and together (:func:`check_params`), run before any data is read. The estimator documents each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from .exceptions import TaxonomistError
from .models.ensemble import MEMBERS

__all__ = ["PARAMETERS", "TIERS", "Allowed", "Parameters", "check_params"]

TIERS = ("sparse", "ensemble", "embed", "finetune", "zeroshot")


@dataclass(eq=False, repr=False)  # (the estimator keeps scikit-learn's repr and identity)
class Parameters:
    """A classifier's parameters: every one after ``tier`` keyword-only. A fit reads a copy
    (``Parameters(**clf.get_params())``), so that fitting never changes the estimator's parameters."""

    tier: Literal["sparse", "ensemble", "embed", "finetune", "zeroshot"] = "ensemble"
    _: KW_ONLY
    min_confidence: float | None = None
    C: float = 0.5
    title_weight: float = 1.0
    context_weight: float | Literal["auto"] = "auto"
    description_chars: int | None | Literal["auto"] = "auto"
    class_weight: Literal["balanced"] | None = None
    use_attributes: bool = True
    calibration: Literal["temperature+isotonic", "temperature", "none"] = "temperature+isotonic"
    random_state: int = 0
    encoder: str = "auto"
    encoder_backend: Literal["auto", "torch", "onnx"] = "auto"
    max_length: int = 64
    embed_context: bool | Literal["auto"] = False
    members: Sequence[str] | None = None
    knn_k: int = 10
    validation_size: float = 0.15
    epochs: int = 3
    finetune_max_length: int = 48
    prior_shift: float | Literal["auto"] = "auto"
    image_encoder: str | None = None
    image_views: int = 1
    fusion: Literal["late", "early"] = "late"
    image_root: str | None = None
    allow_remote_images: bool = False
    cascade: bool = True
    cv: int = 3
    dp_epsilon: float | None = None
    dp_delta: float = 1e-6
    n_jobs: int | None = None
    hierarchy: Literal["flat", "two-level", "top-down", "auto"] = "auto"
    engine: Literal["local", "ray"] = "local"
    checkpoint: str | None = None
    max_problem_rows: int | Literal["auto"] | None = "auto"
    max_embedded: int | None = 10_000



@dataclass(frozen=True)
class Allowed:
    """What one parameter accepts: some exact values (``values``), and numbers of a type in a range."""

    values: tuple[Any, ...] = ()
    kind: type | tuple[type, ...] | None = None  # (bool is never a number here)
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    text: str = ""  # how the accepted values read in a message

    def accepts(self, v: Any) -> bool:
        if any(v is a or (type(v) is type(a) and v == a) for a in self.values):
            return True
        if self.kind is None or isinstance(v, bool) and self.kind is not bool or not isinstance(v, self.kind):
            return False
        if self.low is None and self.high is None:
            return True
        n = float(cast(float, v))  # (a number: checked above)
        if self.low is not None and (n <= self.low if self.low_open else n < self.low):
            return False
        return self.high is None or (n < self.high if self.high_open else n <= self.high)


def _options(*values: Any) -> Allowed:
    return Allowed(values, text=" or ".join(repr(v) for v in values))


_INT, _NUM, _TEXT = (int, np.integer), (int, float, np.integer, np.floating), (str, Path)
_POSITIVE_INT = Allowed(kind=_INT, low=1, text="an integer >= 1")
PARAMETERS: dict[str, Allowed] = {
    "tier": _options(*TIERS),
    "min_confidence": Allowed((None,), _NUM, 0.0, 1.0, text="None or a number in [0, 1]"),
    "C": Allowed(kind=_NUM, low=0.0, low_open=True, text="a number > 0"),
    "title_weight": Allowed(kind=_NUM, low=0.0, text="a number >= 0"),
    "context_weight": Allowed(("auto",), _NUM, 0.0, text="'auto' or a number >= 0"),
    "description_chars": Allowed(("auto", None), _INT, 1, text="'auto', None or an integer >= 1"),
    "class_weight": _options(None, "balanced"),
    "use_attributes": _options(True, False),
    "calibration": _options("temperature+isotonic", "temperature", "none"),
    "random_state": Allowed(kind=_INT, text="an integer"),
    "encoder": Allowed(kind=_TEXT, text="'auto', a preset, a model folder or a model name"),
    "encoder_backend": _options("auto", "torch", "onnx"),
    "max_length": _POSITIVE_INT,
    "embed_context": _options(True, False, "auto"),
    "members": Allowed((None,), (list, tuple), text=f"None or a non-empty list from {list(MEMBERS)}"),
    "knn_k": _POSITIVE_INT,
    "validation_size": Allowed(kind=_NUM, low=0.0, high=1.0, low_open=True, high_open=True,
                               text="a number in (0, 1)"),
    "epochs": _POSITIVE_INT,
    "finetune_max_length": _POSITIVE_INT,
    "prior_shift": Allowed(("auto",), _NUM, 0.0, text="'auto' or a number >= 0"),
    "image_encoder": Allowed((None,), _TEXT, text="None, 'effnet-lite0', 'effnet-lite2' or an .onnx file"),
    "image_views": Allowed(kind=_INT, low=1, high=4, text="1, 2, 3 or 4"),
    "fusion": _options("late", "early"),
    "image_root": Allowed((None,), _TEXT, text="None or a folder"),
    "allow_remote_images": _options(True, False),
    "cascade": _options(True, False),
    "cv": Allowed(kind=_INT, low=0, text="an integer >= 0 (below 2: one validation split)"),
    "dp_epsilon": Allowed((None,), _NUM, 0.0, float("inf"), True, True, "None or a finite number > 0"),
    "dp_delta": Allowed(kind=_NUM, low=0.0, high=1.0, low_open=True, high_open=True, text="a number in (0, 1)"),
    "n_jobs": Allowed((None,), _INT, 1, text="None or an integer >= 1"),
    "hierarchy": _options("flat", "two-level", "top-down", "auto"),
    "engine": _options("local", "ray"),
    "checkpoint": Allowed((None,), _TEXT, text="None or a folder"),
    "max_problem_rows": Allowed(("auto", None), _INT, 1, text="'auto', None or an integer >= 1"),
    "max_embedded": Allowed((None,), _INT, 1, text="None or an integer >= 1"),
}
"""What each parameter of :class:`~taxonomist.TaxonomyClassifier` accepts (:func:`check_params`)."""


def check_params(spec: Parameters) -> None:
    """Refuse parameters that cannot work, alone (:data:`PARAMETERS`) or together, before any data is read."""
    for name, allowed in PARAMETERS.items():
        value = getattr(spec, name)
        if not allowed.accepts(value):
            raise ValueError(f"{name} must be {allowed.text}, got {value!r}")
    if spec.members is not None and (not spec.members or not set(spec.members) <= set(MEMBERS)):
        raise ValueError(f"members must be a non-empty subset of {list(MEMBERS)}, got {list(spec.members)}")
    if spec.image_encoder is not None and spec.tier in ("sparse", "zeroshot"):
        raise ValueError(f"photos are used by the ensemble, embed and finetune tiers, not {spec.tier!r}; use "
                         "tier='ensemble' (members=['sparse', 'image'] for the sparse tier + photos)")
    if spec.dp_epsilon is not None and spec.tier != "sparse":
        raise ValueError(f"differentially private training (dp_epsilon) is offered for the sparse tier, not "
                         f"{spec.tier!r}; use tier='sparse'")
    if spec.tier == "zeroshot":
        raise TaxonomistError("the zeroshot tier learns nothing from examples; build it with "
                              "TaxonomyClassifier.from_taxonomy(taxonomy)", options=("taxonomy",))


