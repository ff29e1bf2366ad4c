"""The ``taxonomist`` command line: train, evaluate, predict, embed, classify, query, map-taxonomy, add-category,
search, messages, users, demand, tune, serve, retrain, monitor, review, taxonomy show|check, demo.

Errors print one clear message and exit 1; ``--debug`` shows the traceback. The commands live in
:mod:`.train`, :mod:`.predict`, :mod:`.apps` and :mod:`.ops`; what they share in :mod:`.common`.
"""

from __future__ import annotations

from . import apps, demo, ops, predict, train
from .common import app, main

__all__ = ["app", "apps", "demo", "main", "ops", "predict", "train"]
