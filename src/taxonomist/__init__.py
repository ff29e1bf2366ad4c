"""taxonomist: put every product of a catalogue into the right place of a category taxonomy."""

from __future__ import annotations

from .catalog import Catalog, ValidationReport, read_catalog, split_catalog
from .classifier import TaxonomyClassifier, load
from .evaluation import evaluate
from .exceptions import BundleError, CatalogError, NotFittedError, TaxonomistError, TaxonomyError
from .models.hierarchy import Prediction
from .taxonomy import Taxonomy
from .version import __version__

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
