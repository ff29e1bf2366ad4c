"""taxonomist: put every product of a catalogue into the right place of a category taxonomy.

The names below are imported on first use (PEP 562), so that ``taxonomist --help`` and other light uses do not
load pandas, scikit-learn or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .catalog import Catalog, ValidationReport, read_catalog, split_catalog
    from .classifier import TaxonomyClassifier, load
    from .evaluation import evaluate
    from .exceptions import BundleError, CatalogError, NotFittedError, TaxonomistError, TaxonomyError
    from .models.hierarchy import Prediction
    from .taxonomy import Taxonomy

_WHERE = {
    "Catalog": "catalog", "ValidationReport": "catalog", "read_catalog": "catalog", "split_catalog": "catalog",
    "TaxonomyClassifier": "classifier", "load": "classifier", "evaluate": "evaluation",
    "BundleError": "exceptions", "CatalogError": "exceptions", "NotFittedError": "exceptions",
    "TaxonomistError": "exceptions", "TaxonomyError": "exceptions", "Prediction": "models.hierarchy",
    "Taxonomy": "taxonomy",
}

__all__ = [
    "__version__",
    "BundleError",
    "Catalog",
    "CatalogError",
    "NotFittedError",
    "Prediction",
    "TaxonomistError",
    "Taxonomy",
    "TaxonomyClassifier",
    "TaxonomyError",
    "ValidationReport",
    "evaluate",
    "load",
    "read_catalog",
    "split_catalog",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
