"""Safe image references: paths that cannot escape an image root, base64 payloads within limits.

(The image encoder and the image tier build on these; see docs/architecture.md.)
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from .exceptions import TaxonomistError

__all__ = ["ImageError", "decode_image_base64", "is_image_file", "resolve_image_path"]


class ImageError(TaxonomistError):
    """An image reference that is refused (outside the image root, too large, not an image)."""


def resolve_image_path(path: str | Path, root: str | Path | None) -> Path:
    """``path`` resolved against ``root`` (relative paths) — refused when it lands outside ``root`` after
    resolving ``..`` and symbolic links."""
    if root is None:
        raise ImageError(f"image paths need an image root (got {str(path)!r}); set --image-root / TAXONOMIST_IMAGE_ROOT, "
                         "or send the image as base64")
    if "\x00" in str(path):
        raise ImageError(f"the image path {str(path)!r} contains a NUL character; give a file path")
    base = Path(root).resolve()
    p = Path(path)
    try:
        full = (p if p.is_absolute() else base / p).resolve()
    except (OSError, ValueError, RuntimeError) as e:  # too long, a symlink loop, ...
        raise ImageError(f"the image path {str(path)[:200]!r} cannot be resolved ({type(e).__name__}); give a file path "
                         "inside the image root") from None
    if full != base and base not in full.parents:
        raise ImageError(f"the image path {str(path)!r} is outside the image root {base}; give a path inside it")
    return full


def is_image_file(path: Path) -> bool:
    """``path.is_file()``, with unusable paths (too long, ...) answered False instead of raised."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def decode_image_base64(data: str, max_bytes: int) -> bytes:
    """Bytes of a base64 image (a ``data:image/...;base64,`` prefix is accepted), at most ``max_bytes``."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise ImageError(f"the image is larger than the limit of {max_bytes:,} bytes; send a smaller photo")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("expected the image as base64 text, but it is not valid base64") from None
    if len(raw) > max_bytes:
        raise ImageError(f"the image is {len(raw):,} bytes, over the limit of {max_bytes:,}")
    return raw
