"""Errors raised by taxonomist.

Hierarchy::

    TaxonomistError            base of everything raised on purpose; the CLI prints its message without a traceback
    ├── CatalogError           a catalogue file or frame cannot be read or fails validation
    ├── TaxonomyError          a taxonomy file cannot be parsed, or a path is not in the taxonomy
    ├── BundleError            a model bundle is missing, tampered with, or of an unknown format
    └── NotFittedError         a model was used before ``fit`` (also a ValueError/AttributeError, as in scikit-learn)

Every message says what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

__all__ = ["BundleError", "CatalogError", "NotFittedError", "TaxonomistError", "TaxonomyError"]


class TaxonomistError(Exception):
    """Base class of the errors taxonomist raises on purpose.

    ``options``: the parameters the message tells the user to set (Python names, e.g. ``"mapping"``); the message
    speaks of the Python API, and a front end that names them otherwise (the CLI's ``--map``) adds its own names.
    ``cli``: the same message in the command line's words, where it differs more than by those names.
    """

    def __init__(self, *args: object, options: tuple[str, ...] = (), cli: str | None = None) -> None:
        super().__init__(*args)
        self.options = options
        self.cli = cli


class CatalogError(TaxonomistError, ValueError):
    """A catalogue cannot be read, or it fails validation in strict mode."""


class TaxonomyError(TaxonomistError, ValueError):
    """A taxonomy cannot be parsed, or a category path is unknown."""


class BundleError(TaxonomistError):
    """A model bundle is missing, tampered with, or written by an unknown format version."""


if TYPE_CHECKING:
    from sklearn.exceptions import NotFittedError as _SkNotFittedError

    class NotFittedError(TaxonomistError, _SkNotFittedError):  # type: ignore[misc]
        """The model was used before it was fitted (a scikit-learn ``NotFittedError`` too)."""

_LOCK = threading.Lock()


def __getattr__(name: str) -> Any:
    # NotFittedError subclasses scikit-learn's: defined on first use (once), so that importing the errors (the CLI
    # does, for --help) does not import scikit-learn
    if name != "NotFittedError":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _LOCK:
        if "NotFittedError" not in globals():
            from sklearn.exceptions import NotFittedError as _SkNotFittedError

            class NotFittedError(TaxonomistError, _SkNotFittedError):  # type: ignore[misc]
                """The model was used before it was fitted (a scikit-learn ``NotFittedError`` too)."""

            globals()["NotFittedError"] = NotFittedError
        return globals()["NotFittedError"]
