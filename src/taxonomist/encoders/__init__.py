"""Feature encoders: sparse TF-IDF features and pretrained transformer text encoders (with an embedding cache)."""

from __future__ import annotations

from .cache import EmbeddingCache, cache_dir
from .sparse import SparseTextEncoder
from .transformer import (
    PRESETS,
    OnnxTextEncoder,
    TextEncoder,
    TorchTextEncoder,
    load_text_encoder,
    pick_encoder,
)

__all__ = [
    "PRESETS",
    "EmbeddingCache",
    "OnnxTextEncoder",
    "SparseTextEncoder",
    "TextEncoder",
    "TorchTextEncoder",
    "cache_dir",
    "load_text_encoder",
    "pick_encoder",
]
