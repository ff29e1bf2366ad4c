"""Hypothesis against the catalogue readers: random bytes, encodings, compressions and nesting. Whatever the
file holds, reading it either gives a catalogue or raises a :class:`~taxonomist.TaxonomistError` that says what
is wrong -- never another exception, a crash, or memory out of proportion to the file (the decompressed size is
capped, here at 4 MB)."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taxonomist as tx
from taxonomist.exceptions import TaxonomistError

EXAMPLES = 150  # per test: bounded and derandomized (the same cases on every run)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CAP = 4 << 20  # TAXONOMIST_MAX_DECOMPRESSED_BYTES in these tests
PEAK = 64 << 20  # what one read may hold at its peak (Python allocations, tracemalloc)

SUFFIXES = [".csv", ".tsv", ".jsonl", ".json", ".xml", ".txt"]
COMPRESSIONS = ["", ".gz", ".bz2", ".xz", ".zip"]


def _compress(data: bytes, how: str, inner: str) -> bytes:
    if how == ".gz":
        return gzip.compress(data)
    if how == ".bz2":
        return bz2.compress(data)
    if how == ".xz":
        return lzma.compress(data)
    if how == ".zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"catalog{inner}", data)
        return buf.getvalue()
    return data


def _read(tmp: Path, data: bytes, suffix: str, compression: str) -> TaxonomistError | None:
    """Read ``data`` as a catalogue file: the clean error it raised, if any (any other exception fails)."""
    path = tmp / f"catalog{suffix}{compression}"
    path.write_bytes(_compress(data, compression, suffix))
    tracemalloc.start()
    error = None
    try:
        cat = tx.read_catalog(path)
        assert len(cat) == len(cat.titles) and all(isinstance(t, str) and t for t in cat.titles)
    except TaxonomistError as e:
        assert str(e)  # a clear error, not an empty one
        error = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK, f"{peak / 2**20:.0f} MB to read {len(data):,} bytes"
    return error


@pytest.fixture(autouse=True)
def _small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXONOMIST_MAX_DECOMPRESSED_BYTES", str(CAP))


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES), compression=st.sampled_from(COMPRESSIONS))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str, compression: str) -> None:
    _read(tmp_path_factory.mktemp("fuzz"), data, suffix, compression)


cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@FUZZ
@given(rows=st.lists(st.lists(cells, min_size=1, max_size=4), min_size=1, max_size=12),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "gb18030", "cp1252", "latin-1", "shift_jis"]),
       delimiter=st.sampled_from([",", ";", "\t", "|"]), compression=st.sampled_from(COMPRESSIONS))
def test_tables_in_any_encoding(tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], encoding: str,
                                delimiter: str, compression: str) -> None:
    """A header with a title column, then rows of random text, in an encoding that may not hold all of it."""
    text = "\n".join(delimiter.join(r) for r in [["title", "category", "brand"][: max(len(r) for r in rows)], *rows])
    data = text.encode(encoding, errors="replace")
    _read(tmp_path_factory.mktemp("fuzz"), data, ".tsv" if delimiter == "\t" else ".csv", compression)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | cells,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(cells, inner, max_size=4),
                           max_leaves=20)


@FUZZ
@given(records=st.lists(st.dictionaries(st.sampled_from(["title", "category", "description", "brand", "x"]),
                                        json_values, max_size=5), max_size=8),
       depth=st.integers(0, 200_000), compression=st.sampled_from(COMPRESSIONS))
def test_json_lines_of_any_shape_and_depth(tmp_path_factory: pytest.TempPathFactory, records: list[dict],
                                           depth: int, compression: str) -> None:
    """Records of any JSON values, and one line nested ``depth`` deep (a bad line, not a failed file)."""
    lines = [json.dumps(r) for r in records] + ["[" * depth + "]" * depth]
    _read(tmp_path_factory.mktemp("fuzz"), "\n".join(lines).encode(), ".jsonl", compression)


def test_a_compression_bomb_is_refused_within_the_cap(tmp_path: Path) -> None:
    """64 MB of one repeated row, compressed to a few kB: refused past the cap, memory bounded by it."""
    row = b"Cotton T-shirt,Apparel > Tops\n"
    data = b"title,category\n" + row * ((64 << 20) // len(row))
    for compression in [".gz", ".bz2", ".xz", ".zip"]:
        error = _read(tmp_path, data, ".csv", compression)
        assert error is not None and "TAXONOMIST_MAX_DECOMPRESSED_BYTES" in str(error), (compression, error)
