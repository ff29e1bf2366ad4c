"""Safe images: paths that cannot escape an image root, base64 payloads within limits, and decoding with Pillow
under limits (file size, pixel count: decompression bombs are refused), EXIF orientation applied, RGB out.

Every problem is an :class:`ImageError` with what was wrong; callers (the image encoder, the service) report it
and fall back to the product's text. Remote URLs are refused unless explicitly allowed.
"""

from __future__ import annotations

import base64
import binascii
import io
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .exceptions import TaxonomistError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "ImageError", "decode_image_base64", "is_image_file", "is_remote",
           "load_image", "open_image_bytes", "read_image_bytes", "resolve_image_path"]

MAX_IMAGE_BYTES = 20 * 2**20  # a product photo file larger than this is refused
MAX_IMAGE_PIXELS = 40_000_000  # width x height; above it a file is treated as a decompression bomb


class ImageError(TaxonomistError):
    """An image reference that is refused (outside the image root, too large, not an image)."""


def is_remote(ref: str) -> bool:
    """Whether an image reference is a URL (``http(s)://``, ``ftp://``, ``//host``) rather than a file path."""
    low = ref.strip().lower()
    return low.startswith(("http://", "https://", "ftp://", "//")) or "://" in low[:12]


def open_image_bytes(data: bytes, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode image bytes with Pillow: fully loaded (truncated files fail here, not later), EXIF orientation
    applied, converted to RGB. A JPEG over ``max_pixels`` is decoded at the largest of 1/2, 1/4, 1/8 scale that
    fits under it (Pillow's ``draft``: the decoder skips the detail, a 94-MP photo costs what a 1.5-MP one does);
    other files over ``max_pixels`` are refused before their pixels are decoded (a decompression bomb)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit (89 MP) and refuses above twice it; the limit here is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels and im.format in ("JPEG", "MPO"):  # (MPO: phone cameras' multi-picture JPEG)
                scale = next((k for k in (2, 4, 8) if (w // k) * (h // k) <= max_pixels), 8)
                im.draft("RGB", (-(-w // scale), -(-h // scale)))
                w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{name}: {w}x{h} pixels is over the limit of {max_pixels:,} (a decompression bomb or "
                                 "a poster-sized scan); resize it")
            im.load()
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: refused as a decompression bomb (too many pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read (expected JPEG, PNG, WebP, GIF, ...)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise ImageError(f"{name}: the image is corrupt or truncated ({type(e).__name__}: {str(e)[:120]})") from None
    return rgb


def read_image_bytes(ref: str | Path, root: str | Path | None, *, max_bytes: int = MAX_IMAGE_BYTES,
                     allow_remote: bool = False) -> tuple[bytes, str]:
    """The bytes of the image a catalogue row refers to, and a name for messages: a path inside ``root``
    (relative paths resolve against it; no escape by ``..`` or symlinks), read within ``max_bytes``.

    URLs are refused unless ``allow_remote`` (then fetched with a timeout and the same size limit)."""
    ref_s = str(ref).strip()
    if is_remote(ref_s):
        if not allow_remote:
            raise ImageError(f"{ref_s[:200]!r} is a URL; remote images are off (a server must not fetch arbitrary "
                             "addresses) -- download the photos and give paths, or allow remote images explicitly")
        return _fetch(ref_s, max_bytes), ref_s[:200]
    path = resolve_image_path(ref_s, root)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block the read or never end
            raise ImageError(f"{path.name}: not a regular file (a pipe, a device or a folder); give a photo file")
        size = st.st_size
        if size > max_bytes:
            raise ImageError(f"{path.name}: {size:,} bytes is over the limit of {max_bytes:,}; resize the photo")
        return path.read_bytes(), path.name
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{ref_s[:200]!r}: no such file under the image root {Path(root or '.').resolve()}") from None
    except (OSError, ValueError) as e:
        raise ImageError(f"{ref_s[:200]!r}: cannot be read ({type(e).__name__}: {e})") from None


def load_image(ref: str | Path, root: str | Path | None, *, max_bytes: int = MAX_IMAGE_BYTES,
               max_pixels: int = MAX_IMAGE_PIXELS, allow_remote: bool = False) -> Image.Image:
    """:func:`read_image_bytes`, decoded by :func:`open_image_bytes`."""
    data, name = read_image_bytes(ref, root, max_bytes=max_bytes, allow_remote=allow_remote)
    return open_image_bytes(data, name, max_pixels)


def _fetch(url: str, max_bytes: int, timeout: float = 10.0) -> bytes:
    import urllib.request

    if not url.lower().startswith(("http://", "https://")):
        raise ImageError(f"{url[:200]!r}: only http(s) URLs can be fetched")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 -- scheme checked above
            data: bytes = resp.read(max_bytes + 1)
    except OSError as e:
        raise ImageError(f"{url[:200]!r}: could not be fetched ({type(e).__name__}: {e})") from None
    if len(data) > max_bytes:
        raise ImageError(f"{url[:200]!r}: larger than the limit of {max_bytes:,} bytes")
    return data


def resolve_image_path(path: str | Path, root: str | Path | None) -> Path:
    """``path`` resolved against ``root`` (relative paths) — refused when it lands outside ``root`` after
    resolving ``..`` and symbolic links."""
    if root is None:
        raise ImageError(f"image paths need an image root (got {str(path)!r}); give image_root (a server: "
                         "TAXONOMIST_IMAGE_ROOT), or send the image as base64", options=("image_root",))
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
