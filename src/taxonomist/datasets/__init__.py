"""Small real datasets bundled with taxonomist for the demo and the tests (see README.md beside this file)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sample_path"]

_HERE = Path(__file__).resolve().parent


def sample_path(name: str = "products") -> Path:
    """Path of a bundled sample: ``"products"`` (fashion catalogue, EN) or ``"reviews_zh"`` (Chinese reviews)."""
    path = _HERE / f"{name}.csv"
    if not path.is_file():
        available = sorted(p.stem for p in _HERE.glob("*.csv"))
        raise FileNotFoundError(f"no bundled sample {name!r}; available: {available}")
    return path
