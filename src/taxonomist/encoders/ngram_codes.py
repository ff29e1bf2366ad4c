"""The ``char_wb`` n-grams of many words looked up at once: each n-gram a number, not a string.

A char_wb vocabulary's n-grams are short (2–5 characters) over a small alphabet (the characters its terms use), so
each is written exactly as one integer: its characters' ranks in the alphabet as digits in base ``len(alphabet) + 2``
(the digit 0 is never used, so a shorter n-gram never equals a longer one; the last digit stands for every character
outside the alphabet, which no term of the vocabulary has). A batch of new words is then cut and looked up with a
few NumPy operations over all its characters, where a Python string per n-gram and a dict lookup each made most of
the time of a cold prediction on catalogues with long descriptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["NgramCodes"]

_MAX_CODE = 2**63 - 1
_BLOCK = 20_000  # words (or terms) coded together


def _codepoints(text: str) -> np.ndarray:
    """The code points of ``text``, one uint32 each (a lone surrogate kept as its own code point)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class NgramCodes:
    """A char_wb vocabulary (``{term: column}``) as integer codes, and the words of a batch looked up in it.

    ``NgramCodes.of(vocabulary, ngram_range)`` is ``None`` when the alphabet is too large for the longest n-gram
    to fit in 63 bits (more than ~6,200 distinct characters at 5-grams): the caller cuts words one by one then.
    """

    def __init__(self, alphabet: np.ndarray, ngram_range: tuple[int, int]) -> None:
        self.base = len(alphabet) + 2
        # each code point's digit (a table up to the alphabet's last code point; the slot after it: all others)
        self.digit = np.full(int(alphabet[-1]) + 2, self.base - 1, dtype=np.int64)
        self.digit[alphabet] = np.arange(1, len(alphabet) + 1)
        self.codes = pd.Index(np.empty(0, np.int64))  # the vocabulary's terms' codes: a hash table looks them up
        self.columns = np.empty(0, np.intc)  # the vocabulary column of each code
        self.min_n, self.max_n = ngram_range

    @classmethod
    def of(cls, vocabulary: Mapping[str, int], ngram_range: tuple[int, int]) -> NgramCodes | None:
        terms = list(vocabulary)
        if not terms:
            return None
        lo, hi = int(ngram_range[0]), int(ngram_range[1])
        longest = max(hi, max(map(len, terms)))
        alphabet = np.unique(_codepoints("".join(set("".join(terms)))))
        if (len(alphabet) + 2) ** longest > _MAX_CODE:
            return None
        coder = cls(alphabet, (lo, hi))
        lens = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        coder.codes = pd.Index(np.concatenate([coder._whole(coder._digits("".join(terms[i:i + _BLOCK])), lens[i:i + _BLOCK])
                                               for i in range(0, len(terms), _BLOCK)]))  # blocks: small temporaries
        coder.columns = np.fromiter(vocabulary.values(), dtype=np.intc, count=len(terms))
        return coder

    def _digits(self, text: str) -> np.ndarray:
        """Each character's digit: its rank in the alphabet + 1, or ``base - 1`` outside it."""
        digits: np.ndarray = self.digit[np.minimum(_codepoints(text), len(self.digit) - 1)]
        return digits

    def _whole(self, digits: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The code of each of the consecutive strings of ``lens`` characters whose digits are ``digits``."""
        starts = np.cumsum(lens) - lens
        place = np.arange(len(digits)) - np.repeat(starts, lens)
        return np.add.reduceat(digits * self.base ** place, starts) if len(starts) else np.empty(0, np.int64)

    def _columns(self, codes: np.ndarray) -> np.ndarray:
        """The vocabulary column of each code, -1 where the vocabulary does not have it."""
        at = self.codes.get_indexer(pd.Index(codes))
        return np.where(at >= 0, self.columns[at], -1)

    def cut(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(columns, bounds): the vocabulary columns of each word's char_wb n-grams (repeats kept, n-grams outside
        the vocabulary left out), word ``k``'s being ``columns[bounds[k]:bounds[k + 1]]``.

        The n-grams are scikit-learn's: each word padded with a space each side, cut at every length from
        ``min_n`` to ``max_n`` that fits it, and a padded word shorter than ``min_n`` counted once whole. The words
        go ``_BLOCK`` at a time, so the temporaries stay a few MB whatever the batch."""
        parts = [self._cut(words[i:i + _BLOCK]) for i in range(0, len(words), _BLOCK)]
        if not parts:
            return np.empty(0, np.intc), np.zeros(1, np.int64)
        columns = np.concatenate([c for c, _ in parts])
        counts = np.concatenate([n for _, n in parts])
        return columns, np.concatenate([[0], np.cumsum(counts)])

    def _cut(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(columns, counts): :meth:`cut`'s columns, and how many of them each word has."""
        lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words)) + 2
        digits = self._digits(" " + "  ".join(words) + " ")
        total = len(digits)
        ends = np.cumsum(lens)
        room = np.repeat(ends, lens) - np.arange(total)  # characters from each position to its word's end
        padded = np.concatenate([digits, np.zeros(self.max_n, np.int64)])
        code = np.zeros(total, np.int64)
        codes, valid = [], []
        for n in range(1, self.max_n + 1):
            code += padded[n - 1 : n - 1 + total] * self.base ** (n - 1)
            if n >= self.min_n:
                codes.append(code.copy())
                valid.append(room >= n)
        short = np.zeros(total, dtype=bool)  # a padded word shorter than min_n: itself, once, at its start
        short_code = np.zeros(total, np.int64)
        if (lens < self.min_n).any():
            short[(ends - lens)[lens < self.min_n]] = True
            short_code[short] = self._whole(digits, lens)[lens < self.min_n]
        keep = np.column_stack([*valid, short])
        grams = np.column_stack([*codes, short_code])[keep]  # by position, so word by word
        owner = np.broadcast_to(np.repeat(np.arange(len(words)), lens)[:, None], keep.shape)[keep]
        columns = self._columns(grams)
        found = columns >= 0
        return columns[found].astype(np.intc), np.bincount(owner[found], minlength=len(words))
