"""Sparse TF-IDF features of product text: word 1–2-grams + char_wb 2–5-grams, CJK-aware.

With ``n_features`` set the same n-grams are hashed into a fixed number of columns per block (term frequency,
no idf, no vocabulary): the features then depend on nothing learned from the data, which differentially
private training needs, and the memory is bounded whatever the catalogue's vocabulary.

A product gives two texts: its title and its context (description + text attributes). Both go through the same
vocabulary; the title block is weighted higher (``title_weight`` vs ``context_weight``) so a long description
cannot drown the title. Chinese/Japanese catalogues (``cjk="auto"`` decides from the share of CJK characters)
use jieba words and char 1–3-grams instead, since CJK text has no spaces between words.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.utils.validation import check_is_fitted

from ..text import cjk_share, normalize_for_sparse, tokenize
from ..vectors import l2_normalize
from .ngram_codes import NgramCodes

__all__ = ["SparseTextEncoder"]

logger = logging.getLogger(__name__)

CJK_THRESHOLD = 0.1
_FIT_CHUNK = 10_000  # documents whose n-gram ids are buffered before they are counted
_TRANSFORM_CHUNK = 20_000  # products whose features are built together


def _identity(s: str) -> str:
    return s


def _unique_normalized(texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(codes, normalised distinct texts): ``texts[i]`` normalises to ``distinct[codes[i]]``."""
    index: dict[object, int] = {}
    codes = np.empty(len(texts), dtype=np.intp)
    for i, t in enumerate(texts):  # a dict, not pandas.factorize: a served request is a handful of products
        codes[i] = index.setdefault("" if t is None or (isinstance(t, float) and t != t) else t, len(index))
    return codes, [normalize_for_sparse(u) for u in index]


def _scaled(x: sp.csr_matrix, weight: float) -> sp.csr_matrix:
    """``x * weight``, in place."""
    if weight != 1.0:
        x.data *= np.asarray(weight, dtype=x.dtype)
    return x


def _rows(x: sp.csr_matrix, codes: np.ndarray) -> sp.csr_matrix:
    """``x[codes]``, without the copy when every row is wanted once in order (a batch of distinct titles)."""
    if len(codes) == x.shape[0] and (len(codes) == 0 or (codes[0] == 0 and (np.diff(codes) == 1).all())):
        return x
    return x[codes]


def _wb_ngrams(word: str, min_n: int, max_n: int) -> list[str]:
    """The ``char_wb`` n-grams of one word, as scikit-learn cuts them (the word padded with a space each side; a
    word shorter than ``n`` counted once)."""
    w = f" {word} "
    size = len(w)
    # one comprehension, not an extend per n: the cutting of a cold batch's words is most of its char features
    return [w[off : off + n] for n in range(min_n, min(max_n, max(size, min_n)) + 1) for off in range(max(1, size - n + 1))]


def _learn_vocabulary(vec: TfidfVectorizer, docs: Sequence[str], min_df: int) -> None:
    """Fit ``vec`` as ``vec.fit(docs)`` does -- the same vocabulary (sorted terms, those in at least ``min_df``
    documents) and idf (smoothed, in the vectorizer's dtype) -- from document frequencies counted in place.

    scikit-learn builds the whole count matrix to learn them, its column indices first as a list of Python ints:
    36 bytes per stored value, which at a million products is most of the machine. Here each document adds its
    distinct n-gram ids to a buffer of 4-byte ints, counted every ``_FIT_CHUNK`` documents."""
    ids: dict[str, int] = {}
    df = np.zeros(0, dtype=np.int64)
    buf = array("i")

    def count() -> None:
        nonlocal df
        n = np.bincount(np.frombuffer(buf, dtype=np.intc), minlength=len(ids)) if len(buf) else np.zeros(len(ids), np.int64)
        df = np.concatenate([df, np.zeros(len(n) - len(df), dtype=np.int64)]) + n
        del buf[:]

    if vec.analyzer == "char_wb":  # n-grams within words: each distinct word cut once
        lo, hi = vec.ngram_range
        words: dict[str, tuple[int, ...]] = {}
        for i, doc in enumerate(docs):
            grams: set[int] = set()
            for word in doc.split():
                g = words.get(word)
                if g is None:
                    if len(words) > _CharWbIndex.MAX_WORDS:
                        words.clear()
                    g = words[word] = tuple(ids.setdefault(t, len(ids)) for t in _wb_ngrams(word, lo, hi))
                grams.update(g)
            buf.extend(grams)
            if i % _FIT_CHUNK == _FIT_CHUNK - 1:
                count()
    else:
        analyze = vec.build_analyzer()
        for i, doc in enumerate(docs):
            buf.extend({ids.setdefault(t, len(ids)) for t in analyze(doc)})
            if i % _FIT_CHUNK == _FIT_CHUNK - 1:
                count()
    count()
    if not ids:
        raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
    terms = list(ids)
    ids.clear()
    kept = np.flatnonzero(df >= min_df)
    if not len(kept):
        raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
    order = sorted(kept.tolist(), key=terms.__getitem__)
    dtype = vec.dtype if vec.dtype in (np.float32, np.float64) else np.float64
    d = df[order].astype(dtype)
    d += 1.0  # smoothed idf, computed as TfidfTransformer.fit does
    idf = np.full_like(d, fill_value=len(docs) + 1, dtype=dtype)
    idf /= d
    np.log(idf, out=idf)
    idf += 1.0
    vec.vocabulary_ = {terms[j]: i for i, j in enumerate(order)}
    vec.fixed_vocabulary_ = False
    vec.idf_ = idf


class _TfidfIndex:
    """``TfidfVectorizer.transform`` rebuilt from the fitted vocabulary and idf: the counts, sublinear tf, idf and
    L2 norm applied exactly as scikit-learn does (tests/test_model.py checks the equality), without its input
    validation -- which took a quarter of the time of a served micro-batch of 20 titles. Each kind of n-gram finds
    its columns (``transform``); :meth:`_matrix` turns them into the TF-IDF rows."""

    def __init__(self, vec: TfidfVectorizer) -> None:
        self.vocab: dict[str, int] = vec.vocabulary_
        self.idf = np.asarray(vec.idf_, dtype=np.float32)
        self.sublinear = bool(vec.sublinear_tf)

    def _matrix(self, indices: array[int], indptr: array[int]) -> sp.csr_matrix:
        """The TF-IDF rows of the documents whose n-grams' columns (repeats included) are ``indices[indptr[i]:
        indptr[i + 1]]``."""
        x = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), np.frombuffer(indices, dtype=np.intc),
             np.frombuffer(indptr, dtype=np.int64)),
            shape=(len(indptr) - 1, len(self.idf)),
        )
        x.sum_duplicates()
        if self.sublinear:
            np.log(x.data, out=x.data)
            x.data += 1.0
        x.data *= self.idf[x.indices]
        return l2_normalize(x, copy=False)


class _WordIndex(_TfidfIndex):
    """Word n-grams: the vectorizer's own tokenizer (``build_tokenizer``), its n-grams joined as scikit-learn
    joins them (a space between tokens) and looked up here; with stop words or a preprocessor, its whole
    analyzer."""

    def __init__(self, vec: TfidfVectorizer) -> None:
        super().__init__(vec)
        self.analyzer = vec.build_analyzer()
        plain = vec.get_stop_words() is None and vec.preprocessor is _identity and not vec.lowercase
        self.tokenize = vec.build_tokenizer() if plain and vec.input == "content" else None
        self.min_n, self.max_n = vec.ngram_range

    def _grams(self, doc: str) -> Iterator[str]:
        if self.tokenize is None:
            yield from self.analyzer(doc)
            return
        tokens = self.tokenize(doc)
        for n in range(self.min_n, self.max_n + 1):
            yield from tokens if n == 1 else map(" ".join, zip(*(tokens[i:] for i in range(n)), strict=False))

    def transform(self, docs: Sequence[str]) -> sp.csr_matrix:
        indices = array("i")  # 4 bytes per stored value (a list would hold a Python int of 36 bytes for each)
        indptr = array("q", [0])
        get = self.vocab.get
        for doc in docs:
            indices.extend([j for j in map(get, self._grams(doc)) if j is not None])
            indptr.append(len(indices))
        return self._matrix(indices, indptr)


class _CharWbIndex(_TfidfIndex):
    """``analyzer="char_wb"``, each distinct word of a call cut into n-grams once.

    char_wb n-grams never cross a word boundary, so a document's features are the sum of its words' features,
    and words repeat across a catalogue far more than titles do. Each distinct word is cut into n-grams and
    looked up once per call: many new words all together, as integer codes (:class:`NgramCodes`; one by one where
    they are few, or where the vocabulary's alphabet is too large for codes). A call of up to ``KEEP_WORDS``
    distinct words (a served request or micro-batch) keeps them in a cache of at most ``MAX_WORDS`` words; a larger
    one (a batch job's block, a training set) cuts them as codes for itself: cutting them again costs less than
    holding them (a training set's words were tens of MB for the rest of its fit). Without codes every call's
    words are kept (cutting them one by one again would cost more).
    """

    MAX_WORDS = 500_000
    KEEP_WORDS = 4_096
    FEW_WORDS = 16  # fewer new words than this are cut one by one: NumPy's calls would cost more

    def __init__(self, vec: TfidfVectorizer, codes: bool = True) -> None:
        super().__init__(vec)
        self.min_n, self.max_n = vec.ngram_range
        self.cache: dict[str, bytes] = {}  # word -> its n-grams' columns, as the bytes of C ints
        self.codes = NgramCodes.of(self.vocab, (self.min_n, self.max_n)) if codes else None

    def _grams(self, word: str) -> bytes:
        return array("i", [j for j in map(self.vocab.get, _wb_ngrams(word, self.min_n, self.max_n)) if j is not None]).tobytes()

    def transform(self, docs: Sequence[str]) -> sp.csr_matrix:
        words = [doc.split() for doc in docs]
        distinct = list(dict.fromkeys(w for ws in words for w in ws))
        table = self.cache
        if self.codes is not None and len(distinct) > self.KEEP_WORDS:  # a batch job's or training set's: this call's
            table, new = {}, distinct
        else:  # a served request or micro-batch: its new words kept for the next
            if len(table) > self.MAX_WORDS:
                table.clear()
            new = [w for w in distinct if w not in table]
        if self.codes is not None and len(new) >= self.FEW_WORDS:
            columns, bounds = self.codes.cut(new)
            whole, size = columns.tobytes(), columns.itemsize
            table.update(zip(new, [whole[a * size:b * size] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(),
                                                                           strict=True)], strict=True))
        else:
            table.update(zip(new, map(self._grams, new), strict=True))
        indices = array("i")
        indptr = array("q", [0])
        for ws in words:
            for word in ws:
                indices.frombytes(table[word])  # (a buffer copy: no Python ints)
            indptr.append(len(indices))
        return self._matrix(indices, indptr)


class _HashIndex:
    """Hashed n-grams: counts (sublinear when asked), no idf, each row L2-normalised."""

    def __init__(self, vec: HashingVectorizer, sublinear: bool) -> None:
        self.vec = vec
        self.sublinear = sublinear

    def transform(self, docs: Sequence[str]) -> sp.csr_matrix:
        x = sp.csr_matrix(self.vec.transform(docs), dtype=np.float32)
        if self.sublinear:
            np.log(x.data, out=x.data)
            x.data += 1.0
        return l2_normalize(x, copy=False)


class SparseTextEncoder(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """TF-IDF encoder over (title, context) pairs.

    Args:
        word_ngram_range: word n-grams (Latin text: sklearn's word tokens; CJK: jieba words).
        char_ngram_range: character n-grams within word boundaries (CJK: ``cjk_char_ngram_range`` over chars).
        title_weight, context_weight: weights of the title and context blocks before the row is L2-normalised.
        min_df: minimum document frequency of a feature.
        cjk: ``"auto"`` (on when ≥ 10 % of title characters are CJK), ``True`` or ``False``.
        n_features: hash the n-grams into this many columns per block (word, char) instead of learning a
            vocabulary with idf weights; ``None`` (the default) learns the vocabulary.

    Example:
        >>> enc = SparseTextEncoder().fit(["red cotton shirt", "blue denim jeans"], ["", ""])
        >>> enc.transform(["red shirt"], [""]).shape[0]
        1
    """

    def __init__(
        self,
        word_ngram_range: tuple[int, int] = (1, 2),
        char_ngram_range: tuple[int, int] = (2, 5),
        cjk_char_ngram_range: tuple[int, int] = (1, 3),
        title_weight: float = 1.0,
        context_weight: float = 0.5,
        min_df: int = 1,
        sublinear_tf: bool = True,
        cjk: bool | Literal["auto"] = "auto",
        n_features: int | None = None,
    ) -> None:
        self.word_ngram_range = word_ngram_range
        self.char_ngram_range = char_ngram_range
        self.cjk_char_ngram_range = cjk_char_ngram_range
        self.title_weight = title_weight
        self.context_weight = context_weight
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.cjk = cjk
        self.n_features = n_features

    def _vectorizers(self, cjk: bool) -> tuple[Any, Any]:
        """(word, char) vectorizers: TF-IDF, or hashing when ``n_features`` is set."""
        common: dict[str, Any] = {"lowercase": False, "preprocessor": _identity, "dtype": np.float32}
        if self.n_features is not None:
            if int(self.n_features) < 2:
                raise ValueError(f"n_features must be at least 2, got {self.n_features}")
            kind: Any = HashingVectorizer
            common.update(n_features=int(self.n_features), alternate_sign=False, norm=None)
        else:
            kind = TfidfVectorizer
            common["sublinear_tf"] = self.sublinear_tf
        if cjk:
            word = kind(tokenizer=tokenize, token_pattern=None, ngram_range=tuple(self.word_ngram_range), **common)
            char = kind(analyzer="char", ngram_range=tuple(self.cjk_char_ngram_range), **common)
        else:
            word = kind(ngram_range=tuple(self.word_ngram_range), **common)
            char = kind(analyzer="char_wb", ngram_range=tuple(self.char_ngram_range), **common)
        return word, char

    def fit(self, titles: Sequence[str], contexts: Sequence[str] | None = None, y: Any = None) -> SparseTextEncoder:
        t = [normalize_for_sparse(x) for x in titles]
        c = [normalize_for_sparse(x) for x in contexts] if contexts is not None else [""] * len(t)
        self.cjk_ = bool(cjk_share(t) >= CJK_THRESHOLD) if self.cjk == "auto" else bool(self.cjk)
        word, char = self._vectorizers(self.cjk_)
        if self.n_features is not None:  # nothing to learn: the columns are fixed by the hash
            self.word_, self.char_ = word, char
            self.n_features_out_ = 2 * int(self.n_features)
            logger.info("sparse features: 2 x %d hashed (cjk=%s)", self.n_features, self.cjk_)
            return self
        docs = [a + " " + b if b else a for a, b in zip(t, c, strict=True)]
        del t, c
        min_df = self.min_df if len(docs) > 5 * self.min_df else 1
        word.set_params(min_df=min_df)
        char.set_params(min_df=min_df)
        _learn_vocabulary(word, docs, min_df)
        _learn_vocabulary(char, docs, min_df)
        self.word_ = word
        self.char_ = char
        self.n_features_out_ = len(word.vocabulary_) + len(char.vocabulary_)
        logger.info("sparse features: %d word + %d char (cjk=%s)", len(word.vocabulary_), len(char.vocabulary_), self.cjk_)
        return self

    def transform(self, titles: Sequence[str], contexts: Sequence[str] | None = None) -> sp.csr_matrix:
        """One L2-normalised row per product: [word block | char block].

        Each distinct text is normalised and vectorised once: catalogues repeat titles, and attribute contexts
        ("Men Navy Blue Summer Casual") repeat far more, so this is most of the speed of the sparse tier.
        """
        check_is_fitted(self, "word_")
        if len(titles) > _TRANSFORM_CHUNK:  # blocks of rows: the temporaries of one block at a time
            return sp.vstack(list(self.transform_blocks(titles, contexts)), format="csr")
        t_codes, t_norm = _unique_normalized(titles)
        c_codes, c_norm = _unique_normalized(contexts) if contexts is not None else (None, [])
        has_context = c_codes is not None and any(c_norm)
        blocks = []
        for vec in self._indexes():  # each matrix below is new: scaled and normalised in place
            x = _scaled(_rows(vec.transform(t_norm), t_codes), self.title_weight)
            if has_context and c_codes is not None:
                x = l2_normalize(x + _scaled(_rows(vec.transform(c_norm), c_codes), self.context_weight), copy=False)
            blocks.append(x)
        return sp.hstack(blocks, format="csr")

    def transform_blocks(self, titles: Sequence[str], contexts: Sequence[str] | None = None) -> Iterator[sp.csr_matrix]:
        """:meth:`transform` of consecutive blocks of ``_TRANSFORM_CHUNK`` products, one at a time (stacked, they
        are the transform of all of them): a caller can store each block and let it go."""
        step = _TRANSFORM_CHUNK
        for i in range(0, len(titles), step):
            yield self.transform(titles[i:i + step], None if contexts is None else contexts[i:i + step])

    def _indexes(self) -> tuple[Any, Any]:
        """The word and char transforms: scikit-learn's vectorizers, or the same computation without its input
        checks (word n-grams; char_wb with a per-word cache); built once per fitted vocabulary."""
        if isinstance(self.word_, HashingVectorizer):
            hashed = getattr(self, "_hashed", None)
            if hashed is None or hashed[0].vec is not self.word_:
                hashed = self._hashed = (_HashIndex(self.word_, self.sublinear_tf), _HashIndex(self.char_, self.sublinear_tf))
            return hashed
        index = getattr(self, "_index", None)
        if index is None or index[0] is not self.word_.vocabulary_:
            word = self.word_
            char = self.char_
            index = self._index = (word.vocabulary_,
                                   _WordIndex(word) if word.analyzer == "word" else word,
                                   _CharWbIndex(char) if char.analyzer == "char_wb" else char)
        return index[1], index[2]

    def fit_transform(self, titles: Sequence[str], contexts: Sequence[str] | None = None, y: Any = None) -> sp.csr_matrix:
        return self.fit(titles, contexts).transform(titles, contexts)

    def feature_names(self) -> np.ndarray:
        """Feature names in column order: ``w:word n-gram`` or ``c:"char n-gram"`` (a hashed encoder has no
        names of its own: see :meth:`names_of`)."""
        check_is_fitted(self, "word_")
        if self.n_features is not None:
            raise ValueError("a hashed encoder has no vocabulary to name its columns; use names_of(title, context)")
        words = ["w:" + f for f in self.word_.get_feature_names_out()]
        chars = [f"c:\"{f}\"" for f in self.char_.get_feature_names_out()]  # quoted: edge n-grams carry spaces
        return np.asarray(words + chars, dtype=object)

    def known_words(self, titles: Sequence[str]) -> np.ndarray:
        """Whether each title has at least one word in the vocabulary (a title of none, "xqzv wrrk", gives the
        model nothing to go on); always true for a hashed encoder, which has no vocabulary."""
        check_is_fitted(self, "word_")
        if self.n_features is not None:
            return np.ones(len(titles), dtype=bool)
        return np.asarray(self.unknown_word_share(titles) < 1.0)

    def unknown_word_share(self, titles: Sequence[str]) -> np.ndarray:
        """The share of each title's words that are not in the vocabulary (NaN for a title of no word, and for
        a hashed encoder, which has no vocabulary): a catalogue drifting away from the training one shows here
        first."""
        check_is_fitted(self, "word_")
        if self.n_features is not None:
            return np.full(len(titles), np.nan)
        vocab = self.word_.vocabulary_
        tokens = self.word_.build_tokenizer() if self.word_.tokenizer is None else self.word_.tokenizer
        out = np.full(len(titles), np.nan)
        for i, t in enumerate(titles):
            words = tokens(normalize_for_sparse(t or ""))
            if words:
                out[i] = sum(w not in vocab for w in words) / len(words)
        return out

    def names_of(self, title: str, context: str = "") -> dict[int, str]:
        """Names of the columns one product's text fills in a hashed encoder: the n-grams that hash to them,
        written as in :meth:`feature_names` (the first n-gram wins a shared column)."""
        check_is_fitted(self, "word_")
        if self.n_features is None:
            raise ValueError("names_of is for hashed encoders; a vocabulary encoder names all columns with feature_names()")
        doc = " ".join(normalize_for_sparse(v) for v in (title, context) if v)
        one = HashingVectorizer(analyzer=list, n_features=int(self.n_features), alternate_sign=False)
        out: dict[int, str] = {}
        for offset, vec, fmt in ((0, self.word_, "w:{}"), (int(self.n_features), self.char_, 'c:"{}"')):
            grams = vec.build_analyzer()(doc)
            if grams:  # one n-gram per row: the row's one column is where it hashes
                for g, j in zip(grams, one.transform([[g] for g in grams]).indices, strict=True):
                    out.setdefault(offset + int(j), fmt.format(g))
        return out

    # -- safe persistence: JSON vocabularies + float arrays, no pickle -----------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        """(params, arrays, json_objects) that :meth:`from_state` turns back into a fitted encoder."""
        check_is_fitted(self, "word_")
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        params["cjk_"] = self.cjk_
        if self.n_features is not None:
            return params, {}, {}
        arrays = {"word_idf": self.word_.idf_.astype(np.float32), "char_idf": self.char_.idf_.astype(np.float32)}
        vocab = {
            "word": sorted(self.word_.vocabulary_, key=self.word_.vocabulary_.__getitem__),
            "char": sorted(self.char_.vocabulary_, key=self.char_.vocabulary_.__getitem__),
        }
        return params, arrays, vocab

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], vocab: dict[str, list[str]]) -> SparseTextEncoder:
        p = dict(params)
        cjk = bool(p.pop("cjk_"))
        for k in ("word_ngram_range", "char_ngram_range", "cjk_char_ngram_range"):
            p[k] = tuple(p[k])
        enc = cls(**p)
        enc.cjk_ = cjk
        word, char = enc._vectorizers(cjk)
        if enc.n_features is not None:
            enc.word_, enc.char_ = word, char
            enc.n_features_out_ = 2 * int(enc.n_features)
            return enc
        for vec, name in ((word, "word"), (char, "char")):
            vec.vocabulary_ = {term: i for i, term in enumerate(vocab[name])}
            vec.idf_ = np.asarray(arrays[f"{name}_idf"], dtype=np.float64)
        enc.word_, enc.char_ = word, char
        enc.n_features_out_ = len(vocab["word"]) + len(vocab["char"])
        return enc
