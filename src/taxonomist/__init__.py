"""taxonomist: put every product of a catalogue into the right place of a category taxonomy."""

from __future__ import annotations

__version__ = "0.1.0"

from .catalog import Catalog, ValidationReport, read_catalog, split_catalog  # noqa: E402
from .classifier import TaxonomyClassifier, load  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .exceptions import BundleError, CatalogError, NotFittedError, TaxonomistError, TaxonomyError  # noqa: E402
from .models.hierarchy import Prediction  # noqa: E402
from .taxonomy import Taxonomy  # noqa: E402

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
