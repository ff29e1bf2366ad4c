from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import taxonomist as tx
from taxonomist import BundleError
from taxonomist.bundle import BUNDLE_FORMAT_VERSION


def test_roundtrip_predictions_identical(tiny_model, tmp_path) -> None:
    path = tiny_model.save(tmp_path / "m")
    again = tx.load(path)
    titles = ["Levis Men Blue Denim Jeans", "Casio Women Digital Watch", "unknown thing"]
    np.testing.assert_allclose(again.predict_proba(titles), tiny_model.predict_proba(titles), rtol=1e-6, atol=1e-7)
    m = json.loads((path / "manifest.json").read_text())
    assert m["format_version"] == BUNDLE_FORMAT_VERSION and m["labels"] == list(tiny_model.classes_)
    assert set(m["files"]) == {p.name for p in path.iterdir()} - {"manifest.json"}
    assert m["training_data"]["n_rows"] == 24 and len(m["training_data"]["fingerprint"]) == 16
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pickle"))


def test_tampered_file_is_refused(tiny_model, tmp_path) -> None:
    path = tiny_model.save(tmp_path / "m")
    with (path / "vocabulary.json").open("a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="vocabulary.json .* does not match the SHA-256"):
        tx.load(path)


def test_newer_format_is_refused(tiny_model, tmp_path) -> None:
    path = tiny_model.save(tmp_path / "m")
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = BUNDLE_FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="bundle format version 2, but this taxonomist reads versions 1 to 1"):
        tx.load(path)


class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


def test_pickle_slipped_in_is_never_executed(tiny_model, tmp_path) -> None:
    path = tiny_model.save(tmp_path / "m")
    marker = tmp_path / "pwned"
    (path / "weights.pkl").write_bytes(pickle.dumps(_Boom(str(marker))))
    with pytest.raises(BundleError, match=r"files the manifest does not list: \['weights.pkl'\]"):
        tx.load(path)
    assert not marker.exists()
    # a pickle smuggled into the npz itself (object array), with the manifest hash updated, is refused too
    (path / "weights.pkl").unlink()
    arrays = dict(np.load(path / "weights.npz", allow_pickle=False))
    arrays["intercept"] = np.array([_Boom(str(marker))], dtype=object)
    with (path / "weights.npz").open("wb") as fh:
        np.savez(fh, **arrays)
    from taxonomist.bundle import sha256_file as _sha256

    m = json.loads((path / "manifest.json").read_text())
    m["files"]["weights.npz"] = _sha256(path / "weights.npz")
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="not a plain numeric array file"):
        tx.load(path)
    assert not marker.exists()


def test_missing_manifest_and_missing_file(tiny_model, tmp_path) -> None:
    with pytest.raises(BundleError, match="does not exist; train one with"):
        tx.load(tmp_path / "nope")
    path = tiny_model.save(tmp_path / "m")
    (path / "classes.json").unlink()
    with pytest.raises(BundleError, match="missing classes.json"):
        tx.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        tx.load(path)


def test_crash_mid_save_leaves_old_bundle_loadable(tiny_model, tmp_path, monkeypatch) -> None:
    path = tiny_model.save(tmp_path / "m")
    import taxonomist.bundle as b

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(b.np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save(path)
    monkeypatch.undo()
    assert tx.load(path).predict(["Casio watch"])[0] == tiny_model.predict(["Casio watch"])[0]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind


def test_refuses_to_overwrite_a_non_bundle_folder(tiny_model, tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="is not a taxonomist bundle"):
        tiny_model.save(tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"


def test_bundle_folder_has_ordinary_permissions(tiny_model, tmp_path) -> None:
    import os
    import stat

    path = tiny_model.save(tmp_path / "m")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask


def test_a_bundle_from_a_newer_taxonomist_says_so(saved_sample_model, tmp_path) -> None:
    import json
    import shutil

    import taxonomist as tx
    from taxonomist.exceptions import BundleError

    path = tmp_path / "m"
    shutil.copytree(saved_sample_model, path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["config"]["a_future_option"] = 1
    manifest["taxonomist_version"] = "9.0.0"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"saved by taxonomist 9.0.0 with options .* upgrade taxonomist"):
        tx.load(path)


def test_a_file_linked_from_outside_the_bundle_is_refused(tiny_model, tmp_path) -> None:
    """Issue 34 row 12: a symlink inside a bundle, pointing outside it, with a matching hash, was loaded."""
    import shutil

    d = tiny_model.save(tmp_path / "m")
    victim = next(p for p in sorted(d.iterdir()) if p.suffix == ".npz")
    outside = tmp_path / "elsewhere.npz"
    shutil.copy(victim, outside)
    victim.unlink()
    victim.symlink_to(outside)  # same bytes, same hash: only the link gives it away
    with pytest.raises(BundleError, match="link"):
        tx.load(d)


def _rewrite_weights(path, **changes) -> None:  # type: ignore[no-untyped-def]
    """Change arrays of weights.npz and recompute its hash in the manifest: an attacker who can write the
    bundle can always do this (only a signature would tell)."""
    from taxonomist.bundle import sha256_file

    with np.load(path / "weights.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for k, f in changes.items():
        arrays[k] = f(arrays[k])
    np.savez_compressed(path / "weights.npz", **arrays)
    m = json.loads((path / "manifest.json").read_text())
    m["files"]["weights.npz"] = sha256_file(path / "weights.npz")
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("bad", [lambda a: a + 10**6, lambda a: a - 10**6], ids=["past-the-end", "negative"])
def test_sparse_indices_out_of_range_are_refused_at_load(tiny_model, tmp_path, bad) -> None:  # type: ignore[no-untyped-def]
    """Issue 34 row 4: a bundle whose hashes were recomputed after its sparse indices were set out of range
    loaded, and the server died with SIGSEGV on the first classify (negative indices read out of bounds)."""
    path = tiny_model.save(tmp_path / "m")
    _rewrite_weights(path, coef_t_indices=lambda a: np.where(np.arange(len(a)) == 0, bad(a), a).astype(a.dtype))
    with pytest.raises(BundleError, match="weights"):
        tx.load(path)


def test_inconsistent_sparse_pointers_are_refused_at_load(tiny_model, tmp_path) -> None:
    path = tiny_model.save(tmp_path / "m")
    _rewrite_weights(path, coef_t_indptr=lambda a: np.where(np.arange(len(a)) == len(a) - 1, a * 4, a))
    with pytest.raises(BundleError, match="weights"):
        tx.load(path)
