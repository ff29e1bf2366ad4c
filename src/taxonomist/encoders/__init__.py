"""Feature encoders. The foundation ships the sparse TF-IDF encoder; transformer and image encoders come later."""

from __future__ import annotations

from .sparse import SparseTextEncoder

__all__ = ["SparseTextEncoder"]
