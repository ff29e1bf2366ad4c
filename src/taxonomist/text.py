"""Text normalisation for English and Chinese product text.

Two levels:

* :func:`clean_text` keeps the text readable (for display, explanations, encoders): HTML unescaped and tags
  stripped, invisible characters (zero-width, bidi controls, soft hyphens) removed, Unicode NFKC (which also
  turns full-width ``ＡＢＣ１２３`` into ``ABC123`` and the ideographic space into a space), Cyrillic / Greek
  look-alike letters inside Latin words mapped to Latin (``Nіkе`` with Cyrillic і е is ``Nike``), whitespace
  collapsed. The last three undo the usual tricks sellers use to game category placement.
* :func:`normalize_for_sparse` adds what sparse features want: lower-case, numbers joined to their units
  (``64 GB`` → ``64gb``, ``500 克`` → ``500克``) so a size is one token.

:func:`tokenize` segments CJK runs with jieba and keeps Latin words whole; :func:`scrub_pii` removes e-mail
addresses and phone numbers and is applied before any product text is logged or stored in a report or bundle.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

__all__ = [
    "field_text",
    "clean_text",
    "cjk_share",
    "detect_language",
    "has_cjk",
    "main_language",
    "html_to_text",
    "normalize_for_sparse",
    "scrub_pii",
    "scrub_product",
    "tokenize",
]

_MARKUP_RE = re.compile(r"<(?:[A-Za-z!/?])")  # where a tag, comment or declaration could start


class _HtmlText(HTMLParser):
    """Text of an HTML fragment: tags become spaces, entities are decoded once, the contents of script, style
    and other non-text elements and comments are dropped; text that only looks like markup ("a < b") is kept."""

    SKIP = frozenset({"script", "style", "template", "noscript", "head", "title", "svg", "math", "iframe", "object"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(s: str) -> str:
    """The readable text of an HTML fragment (a product description): see :class:`_HtmlText`."""
    parser = _HtmlText()
    parser.feed(s)
    parser.close()
    return "".join(parser.parts)
_WS_RE = re.compile(r"\s+")
# CJK Unified Ideographs (+ extension A, compatibility ideographs), kana and hangul: scripts with no spaces
_CJK_CHAR = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_RE = re.compile(f"[{_CJK_CHAR}]")
_CJK_RUN_RE = re.compile(f"[{_CJK_CHAR}]+")
_LATIN_WORD_RE = re.compile(r"[^\W_]+(?:[.'][^\W_]+)*", re.UNICODE)

_UNITS = (
    "tb|gb|mb|kb|mah|ghz|mhz|hz|kw|w|v|kg|mg|g|ml|l|ltr|cm|mm|m|inch|inches|in|ft|oz|lb|lbs|pcs|pc|pack|"
    "gsm|cc|px|mp|°c|°f|"
    "克|千克|公斤|斤|毫升|升|厘米|毫米|米|寸|英寸|片|包|瓶|盒|件|只|个|袋|支|双"
)
_UNIT_RE = re.compile(rf"(\d+(?:[.,]\d+)?)\s+({_UNITS})(?![^\W\d_])", re.IGNORECASE)

_DIGIT_RE = re.compile(r"\d")
# linear on any text: a match starts only where no address character precedes it, and every part is bounded (an
# address's local part is at most 64 characters, a domain label 63) -- "a"*20000 + "@" tried every start position
# and scanned to the "@" from each (quadratic: 0.7 s on 5,000 characters)
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}(?![\w-])")
# Phones: an international number (+ and 8-15 digits with separators), a Chinese mobile (11 digits starting
# 1[3-9]), or the common grouped shapes (555) 123-4567 / 555-123-4567 / 020-12345678. Plain digit runs of other
# lengths (EANs, model numbers) are left alone on purpose.
_PHONE_RE = re.compile(
    r"(?<![0-9A-Za-z+])(?:"
    r"\+\d[\d\s().-]{6,18}\d"
    r"|1[3-9]\d{9}"
    r"|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}"
    r"|0\d{2,3}-\d{7,8}"
    r")(?![0-9A-Za-z])"
)


# invisible characters a seller can slip into a word to split it for the model and not for the reader: zero-width
# spaces, word joiners, bidi controls, the soft hyphen, BOMs (ZWNJ / ZWJ only between Latin letters: elsewhere
# they are orthography or emoji sequences)
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u180e\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                  "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"))
_JOINER_RE = re.compile("(?<=[A-Za-z])[\u200c\u200d](?=[A-Za-z])")
# Cyrillic and Greek letters that Unicode's confusables (TR39) map to one Latin letter
_LOOKALIKES = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X", "ο": "o", "ν": "v",
}
_LOOKALIKE_MAP = str.maketrans(_LOOKALIKES)
_LOOKALIKE_RE = re.compile(f"[{''.join(_LOOKALIKES)}]")
_WORD_RE = re.compile(r"\w+")
_ASCII_LETTER_RE = re.compile(r"[A-Za-z]")


def _unconfuse(s: str) -> str:
    """Look-alike Cyrillic / Greek letters mapped to Latin inside words that mix them with Latin letters, and in
    words made only of look-alikes when the text has Latin words (a homoglyph attack); Cyrillic and Greek words
    with letters that look like nothing Latin are left alone."""
    latin_text = any(w.isascii() and _ASCII_LETTER_RE.search(w) for w in _WORD_RE.findall(s))

    def fix(m: re.Match[str]) -> str:
        w = m.group(0)
        if w.isascii() or not any(c in _LOOKALIKES for c in w):
            return w
        if _ASCII_LETTER_RE.search(w) or (latin_text and all(c in _LOOKALIKES or not c.isalpha() for c in w)):
            return w.translate(_LOOKALIKE_MAP)
        return w

    return _WORD_RE.sub(fix, s)


def clean_text(text: object) -> str:
    """Readable cleaning: HTML unescape, tags stripped, invisible characters removed, NFKC, look-alike letters
    inside Latin words mapped to Latin, whitespace collapsed.

    Example:
        >>> clean_text("<b>Ｎｉｋｅ</b>&amp;Co  Shoes ")
        'Nike &Co Shoes'
    """
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    if not s:
        return ""
    if "<" in s and _MARKUP_RE.search(s):
        s = html_to_text(s)
    elif "&" in s:
        s = html.unescape(s)
    if not s.isascii():
        s = s.translate(_INVISIBLE)
        if "\u200c" in s or "\u200d" in s:
            s = _JOINER_RE.sub("", s)
        s = unicodedata.normalize("NFKC", s)
        if _LOOKALIKE_RE.search(s):
            s = _unconfuse(s)
    return _WS_RE.sub(" ", s).strip()


def normalize_for_sparse(text: object) -> str:
    """:func:`clean_text`, lower-cased, with numbers joined to their units.

    Example:
        >>> normalize_for_sparse("Apple iPhone 8 Plus 64 GB")
        'apple iphone 8 plus 64gb'
    """
    s = clean_text(text).lower()
    if _DIGIT_RE.search(s):
        s = _UNIT_RE.sub(r"\1\2", s)
    return s


def has_cjk(text: str) -> bool:
    """Whether ``text`` contains any CJK ideograph, kana or hangul."""
    return _CJK_RE.search(text) is not None


def cjk_share(texts: Iterable[str]) -> float:
    """Share of non-space characters that are CJK, over all ``texts`` (0.0 for empty input)."""
    cjk = total = 0
    for t in texts:
        if not t:
            continue
        total += len(t) - t.count(" ")
        cjk += len(_CJK_RE.findall(t))
    return cjk / total if total else 0.0


@lru_cache(maxsize=1)
def _langid():  # type: ignore[no-untyped-def]
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str:
    """The ISO 639-1 code of ``text``'s language (py3langid; ``""`` for text without letters). A short title
    alone is often misread ("Tide Mini Speaker": Estonian): give a product's title with its description, or use
    :func:`main_language` over a catalogue."""
    text = clean_text(text)
    if not any(ch.isalpha() for ch in text):
        return ""
    return str(_langid().classify(text)[0])


def main_language(texts: Iterable[str], chunk: int = 8, sample: int = 400) -> tuple[str, float]:
    """A catalogue's language and the share of its text that is in it: ``texts`` (titles, or titles with
    their descriptions) read in chunks of ``chunk`` products -- a chunk is long enough to be recognised where one
    title is not -- and the language of most chunks wins. ``("", 0.0)`` for no text."""
    items = [t for t in (clean_text(t)[:300] for t in texts) if t]
    if not items:
        return "", 0.0
    step = max(1, len(items) // sample)
    items = items[::step]
    votes = [detect_language(" . ".join(items[i:i + chunk])) for i in range(0, len(items), chunk)]
    votes = [v for v in votes if v]
    if not votes:
        return "", 0.0
    best = max(set(votes), key=votes.count)
    return best, votes.count(best) / len(votes)


@lru_cache(maxsize=1)
def _jieba():  # type: ignore[no-untyped-def]
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def tokenize(text: str) -> list[str]:
    """Words of already normalised text: jieba words for CJK runs, whole Latin/digit words elsewhere.

    Example:
        >>> tokenize("小米 redmi note12 5g手机 8gb")
        ['小米', 'redmi', 'note12', '5g', '手机', '8gb']
    """
    if not has_cjk(text):
        return _LATIN_WORD_RE.findall(text)
    out: list[str] = []
    pos = 0
    jieba = _jieba()
    for m in _CJK_RUN_RE.finditer(text):
        out.extend(_LATIN_WORD_RE.findall(text[pos : m.start()]))
        out.extend(w for w in jieba.lcut(m.group(), HMM=True) if w.strip())
        pos = m.end()
    out.extend(_LATIN_WORD_RE.findall(text[pos:]))
    return out


# order numbers: "order #A12345", "order number: 1234-5678", "订单号：2023112900" (an id with a digit, 5+ long)
_ORDER_RE = re.compile(r"(?i)\b(order)\s*(?:(?:no\.?|number|num|id)\s*[:#]?\s*|#\s*)(?=[a-z0-9-]*\d)[a-z0-9][a-z0-9-]{4,}")
_ORDER_ZH_RE = re.compile(r"订单(?:号|编号)?[:：\s]*[A-Za-z0-9-]*\d{5,}")
# street addresses: "221B Baker Street", "12 Via Roma" is not caught; Chinese "北京市朝阳区建国路88号"
_ADDRESS_RE = re.compile(r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][a-z]+\s+){1,3}"
                         r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl)\b\.?")
_ADDRESS_ZH_RE = re.compile(r"(?:[\u4e00-\u9fff]{2}(?:省|市))?(?:[\u4e00-\u9fff]{2,3}(?:区|县))?"
                            r"[\u4e00-\u9fff]{1,6}(?:路|街|道|巷)\d+号")


def scrub_pii(text: str) -> str:
    """Replace e-mail addresses with ``<email>``, phone numbers with ``<phone>``, order numbers with ``<order>``
    and street addresses with ``<address>``.

    Example:
        >>> scrub_pii("mail jo@example.com or call +44 20 7946 0958, 13812345678")
        'mail <email> or call <phone>, <phone>'
    """
    if not text:
        return text
    if "@" in text:
        text = _EMAIL_RE.sub("<email>", text)
    if _DIGIT_RE.search(text):
        text = _ORDER_RE.sub(r"\1 <order>", text)
        text = _ORDER_ZH_RE.sub("订单<order>", text)
        text = _ADDRESS_RE.sub("<address>", text)
        text = _ADDRESS_ZH_RE.sub("<address>", text)
        text = _PHONE_RE.sub("<phone>", text)
    return text


STORED_CHARS = {"title": 500, "description": 2000}
"""The most characters of a product's title and description stored for review or as feedback."""
STORED_ATTRIBUTES, STORED_ATTRIBUTE_CHARS = 30, 300
"""The most attributes of a stored product, and characters of each attribute's name and value."""


def _stored_text(text: str, limit: int) -> str:
    return scrub_pii(text[: 2 * limit])[:limit]  # cut before scrubbing (its cost), an address across the cut whole


def scrub_product(product: Mapping[str, Any]) -> dict[str, Any]:
    """A product (a dict with ``title``, ``description``, ``attributes``) with personal data replaced in its
    texts by :func:`scrub_pii` and bounded in size (:data:`STORED_CHARS`, :data:`STORED_ATTRIBUTES`), before it is
    stored for review or as feedback."""
    out = dict(product)
    for k, limit in STORED_CHARS.items():
        if isinstance(out.get(k), str):
            out[k] = _stored_text(out[k], limit)
    if isinstance(out.get("attributes"), dict):
        out["attributes"] = {_stored_text(str(a), STORED_ATTRIBUTE_CHARS):
                             v if v is None or isinstance(v, (bool, int, float)) else
                             _stored_text(v if isinstance(v, str) else str(v), STORED_ATTRIBUTE_CHARS)
                             for a, v in list(out["attributes"].items())[:STORED_ATTRIBUTES]}
    return out


def field_text(value: Any) -> str:
    """A product field as text: missing or NaN is empty, anything else ``str``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)
