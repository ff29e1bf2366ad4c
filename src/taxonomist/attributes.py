"""Product attributes -- colour, target gender, age group -- read from a product's text, normalised to the values a
feed accepts, each with a confidence; unsure answers are left empty.

Two ways, chosen per attribute by what the catalogue has:

- **Learned** (:class:`AttributeModels`): where the catalogue has filled cells of an attribute column, a model per
  attribute learns from them (the attribute's own column hidden from what it reads) and answers for the others.
- **Zero-shot** (:func:`extract`): the attribute's vocabulary matched in the product's text -- its title first, then
  its description and attribute columns -- with synonyms (navy → Navy, charcoal → Gray, "for her" → female) in
  English, French, German, Spanish and Chinese. A value is offered only where the product's category has the
  attribute (:func:`applies`): Shopify's taxonomy defines its attributes per category; in Google's, gender and
  age group belong to apparel and accessories.

Values are those of Google Merchant Center (``gender``: male / female / unisex; ``age_group``: newborn / infant /
toddler / kids / adult) and, for colour, Shopify's colour values (Black, Navy, Rose gold, Multicolor, ...), which a
Merchant feed's free-text ``color`` accepts as they are.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from .products import ProductBatch
from .tables import column_key
from .taxonomy import CategoryPath, parse_path

__all__ = ["ATTRIBUTES", "COLUMN_ALIASES", "Attribute", "AttributeModels", "Match", "applies", "extract", "column_for", "match",
           "normalise", "read_attributes", "score"]

COLORS = ("Beige", "Black", "Blue", "Bronze", "Brown", "Clear", "Gold", "Gray", "Green", "Multicolor", "Navy",
          "Orange", "Pink", "Purple", "Red", "Rose gold", "Silver", "White", "Yellow")
"""Shopify's colour values (taxonomy 2025-08, attribute ``Color``)."""

_COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "Beige": ("beige", "cream", "khaki", "tan", "camel", "nude", "ivory", "taupe", "champagne",
              "米色", "卡其", "杏色", "crème", "crema", "creme", "sable"),
    "Black": ("black", "jet black", "noir", "noire", "schwarz", "negro", "negra", "nero", "黑色", "黑"),
    "Blue": ("blue", "baby blue", "sky blue", "light blue", "dark blue", "royal blue", "turquoise", "turquoise blue", "teal",
             "aqua", "denim blue", "cobalt", "indigo", "bleu", "blau", "azul", "blu", "蓝色", "蓝", "天蓝"),
    "Bronze": ("bronze", "copper", "bronzé", "cuivre", "kupfer", "bronce", "cobre", "古铜色", "铜色"),
    "Brown": ("brown", "coffee brown", "mushroom brown", "mocha", "walnut", "chestnut",
              "marron", "braun", "marrón", "cafe", "café", "棕色", "咖啡色", "褐色"),
    "Clear": ("clear", "transparent", "transparente", "durchsichtig", "透明"),
    "Gold": ("gold", "golden", "doré", "dorée", "dorado", "dorada", "金色"),
    "Gray": ("gray", "grey", "charcoal", "grey melange", "melange grey", "steel", "slate", "gris", "grau",
             "grigio", "灰色", "灰"),
    "Green": ("green", "olive", "sea green", "lime green", "fluorescent green", "emerald", "khaki green",
              "vert", "verte", "grün", "gruen", "verde", "绿色", "绿"),
    "Multicolor": ("multicolor", "multicolour", "multi color", "multi colour", "multi-color", "multi-colour",
                   "multi", "assorted", "multicolore", "bunt", "multicolor", "多色", "彩色"),
    "Navy": ("navy", "navy blue", "dark navy", "bleu marine", "marineblau", "azul marino", "藏青", "藏青色",
             "海军蓝"),
    "Orange": ("orange", "rust", "coral", "peach", "tangerine", "naranja", "arancione", "橙色", "橘色"),
    "Pink": ("pink", "baby pink", "rose", "fuchsia", "magenta", "blush", "hot pink", "rosa", "粉色", "粉红", "粉红色"),
    "Purple": ("purple", "violet", "lavender", "mauve", "lilac", "burgundy purple", "lila", "morado",
               "viola", "紫色", "紫"),
    "Red": ("red", "maroon", "burgundy", "crimson", "scarlet", "rouge", "rot", "rojo", "roja",
            "rosso", "红色", "红", "酒红"),
    "Rose gold": ("rose gold", "rose-gold", "or rose", "roségold", "oro rosa", "玫瑰金"),
    "Silver": ("silver", "metallic", "argent", "argenté", "silber", "plateado", "plata", "argento", "银色"),
    "White": ("white", "off white", "off-white", "snow white", "blanc", "blanche", "weiß", "weiss", "blanco",
              "blanca", "bianco", "白色", "白"),
    "Yellow": ("yellow", "mustard", "jaune", "gelb", "amarillo", "giallo", "黄色", "黄"),
}

# (phrase, gender, age group): "men" says both; "kids" only the age group
_PEOPLE: tuple[tuple[tuple[str, ...], str | None, str | None], ...] = (
    (("male", "masculin", "männlich", "masculino"), "male", None),
    (("female", "féminin", "weiblich", "femenino"), "female", None),
    (("men", "men's", "mens", "gents", "gent's", "for him", "homme", "hommes", "herren", "hombre",
      "hombres", "uomo", "男士", "男款", "男"), "male", "adult"),
    (("women", "women's", "womens", "woman", "ladies", "lady", "for her", "femme", "femmes", "damen",
      "mujer", "mujeres", "donna", "女士", "女款", "女"), "female", "adult"),
    (("boys", "boy", "boy's", "boys'", "garçon", "garçons", "jungen", "niño", "niños", "男童", "男孩"), "male", "kids"),
    (("girls", "girl", "girl's", "girls'", "fille", "filles", "mädchen", "niña", "niñas", "女童", "女孩"),
     "female", "kids"),
    (("unisex", "mixte", "中性"), "unisex", None),
    (("kids", "kid's", "children", "children's", "child", "junior", "enfant", "enfants", "kinder", "niños y niñas",
      "儿童", "童装"), None, "kids"),
    (("toddler", "toddlers", "tout-petit", "幼儿"), None, "toddler"),
    (("baby", "babies", "infant", "infants", "bébé", "bebe", "bebé", "婴儿"), None, "infant"),
    (("newborn", "new born", "nouveau-né", "neugeborene", "recién nacido", "新生儿"), None, "newborn"),
    (("adult", "adults", "adulte", "erwachsene", "adulto", "成人"), None, "adult"),
)


@dataclass(frozen=True)
class Attribute:
    """An attribute taxonomist extracts: its Merchant Center name, its allowed values, the name Shopify's taxonomy
    gives it, and the phrases that say each value (``lexicon``: phrase → value)."""

    name: str
    values: tuple[str, ...]
    shopify: str
    lexicon: Mapping[str, str]


def _lexicon(pairs: Sequence[tuple[Sequence[str], str | None]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for phrases, value in pairs:
        if value is not None:
            for p in phrases:
                out.setdefault(_norm(p), value)
    return out


def _norm(text: str) -> str:
    """Lower case, compatibility forms, one space between words; ``'`` kept (men's)."""
    text = unicodedata.normalize("NFKC", str(text)).lower().replace("’", "'")
    return " ".join(re.sub(r"[^\w'\u4e00-\u9fff]+", " ", text).split())


ATTRIBUTES: dict[str, Attribute] = {
    "color": Attribute("color", COLORS, "Color", _lexicon([(w, c) for c, w in _COLOR_WORDS.items()])),
    "gender": Attribute("gender", ("male", "female", "unisex"), "Target gender",
                        _lexicon([(w, g) for w, g, _ in _PEOPLE])),
    "age_group": Attribute("age_group", ("newborn", "infant", "toddler", "kids", "adult"), "Age group",
                           _lexicon([(w, a) for w, _, a in _PEOPLE])),
}
"""The attributes :func:`extract` knows, by their Merchant Center names."""


@dataclass(frozen=True)
class Match:
    """An attribute's value in one product: the value, how sure (0–1) and the words that said it."""

    value: str
    confidence: float
    evidence: str


CONFIDENCE = {"title": 0.95, "title_several": 0.6, "context": 0.8, "context_several": 0.5}
"""The confidence of a zero-shot value by where it was found: one value in the title, several different ones in the
title (the first is given), one in the description / attribute columns, several there (RESULTS.md, "Product
attributes": the precision each kind of match had on the shared fashion catalogue)."""

MIN_CONFIDENCE = 0.5
"""Zero-shot values below this confidence are left empty."""


_CJK = re.compile(r"[\u4e00-\u9fff]")
_BABY_COLOUR = re.compile(r"\bbaby (?:pink|blue)\b")


@cache
def _pattern(name: str) -> re.Pattern[str]:
    phrases = sorted(ATTRIBUTES[name].lexicon, key=len, reverse=True)  # the longest phrase first: "navy blue"
    latin = [re.escape(p) for p in phrases if not _CJK.search(p)]
    cjk = [re.escape(p) for p in phrases if _CJK.search(p)]
    parts = [rf"(?<![\w'])(?:{'|'.join(latin)})(?![\w'])"] if latin else []  # whole words only
    if cjk:
        parts.append("|".join(cjk))
    return re.compile("|".join(parts))


def _found(name: str, text: str) -> list[tuple[str, str]]:
    """(value, phrase) of each mention of the attribute in ``text``, in order."""
    if not text:
        return []
    lex = ATTRIBUTES[name].lexicon
    text = _norm(text)
    if name != "color":  # "baby pink" is a colour, not a baby
        text = _BABY_COLOUR.sub(" ", text)
    return [(lex[m.group(0)], m.group(0)) for m in _pattern(name).finditer(text)]


def match(name: str, title: str, context: str = "") -> Match | None:
    """The value of attribute ``name`` the product's own words give (the title first, then its ``context``:
    description and attribute columns), or ``None`` when they give none."""
    for where, text in (("title", title), ("context", context)):
        found = _found(name, text)
        if found:
            values = list(dict.fromkeys(v for v, _ in found))
            several = len(values) > 1
            return Match(values[0], CONFIDENCE[f"{where}_several" if several else where],
                         ", ".join(dict.fromkeys(p for _, p in found)))
    return None


@cache
def _shopify_attributes() -> dict[str, frozenset[str]]:
    """Shopify category path → the attributes (Shopify names) it defines, of those taxonomist extracts."""
    path = resources.files("taxonomist") / "datasets" / "taxonomies" / "shopify-2025-08-attributes.tsv.gz"
    out = {}
    with gzip.open(str(path), "rt", encoding="utf-8") as f:
        for line in f:
            cat, _, names = line.rstrip("\n").partition("\t")
            out[cat] = frozenset(names.split(";"))
    return out


def applies(name: str, category: str | CategoryPath | None, taxonomy: str | None = None) -> bool:
    """Whether attribute ``name`` belongs to a product of ``category`` in ``taxonomy`` (``"shopify"``: the
    category defines it -- Shopify lists each category's attributes, inner categories included; ``"google"``:
    colour everywhere but food and drink ("orange juice" has no colour), gender and age group under Apparel &
    Accessories; another taxonomy or no category: yes)."""
    if not category or taxonomy not in ("shopify", "google"):
        return True
    path = parse_path(category) if isinstance(category, str) else tuple(category)
    if taxonomy == "google":
        top = path[0] if path else ""
        return top != "Food, Beverages & Tobacco" if name == "color" else top == "Apparel & Accessories"
    return ATTRIBUTES[name].shopify in _shopify_attributes().get(" > ".join(path), frozenset())


def extract(products: Any, names: Sequence[str] = ("color", "gender", "age_group"),
            categories: Sequence[str | None] | None = None, taxonomy: str | None = None,
            min_confidence: float = MIN_CONFIDENCE) -> pd.DataFrame:
    """Zero-shot attributes of ``products`` (anything a :class:`~taxonomist.products.ProductBatch` accepts): one
    row per product, columns ``attr_<name>`` and ``attr_<name>_confidence`` per attribute (empty / NaN where the
    words give no value sure enough, or where the product's category -- ``categories``, in ``taxonomy`` -- does
    not have the attribute)."""
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"expected attributes among {sorted(ATTRIBUTES)}, got {unknown}")
    batch = ProductBatch.from_any(products)
    titles, contexts = batch.titles, batch.contexts(batch.text_columns(), 1000)
    cats = list(categories) if categories is not None else [None] * len(titles)
    if len(cats) != len(titles):
        raise ValueError(f"expected one category per product: {len(titles)} products, {len(cats)} categories")
    out: dict[str, list[Any]] = {}
    for name in names:
        values: list[str] = []
        confs: list[float] = []
        for t, c, cat in zip(titles, contexts, cats, strict=True):
            m = match(name, t, c) if applies(name, cat, taxonomy) else None
            ok = m is not None and m.confidence >= min_confidence
            values.append(m.value if ok and m is not None else "")
            confs.append(m.confidence if ok and m is not None else float("nan"))
        out[f"attr_{name}"], out[f"attr_{name}_confidence"] = values, confs
    return pd.DataFrame(out)


def normalise(name: str, value: str) -> str:
    """A catalogue's own value of a known attribute as the feed value (``"Men"`` → ``"male"``, ``"Navy Blue"`` →
    ``"Navy"``; ``""`` when the words name none); another attribute's value as it is."""
    if name not in ATTRIBUTES:
        return value
    if value in ATTRIBUTES[name].values:
        return value
    m = match(name, value)
    return m.value if m is not None else ""


def _without(batch: ProductBatch, column: str) -> ProductBatch:
    """The products with one attribute column hidden (what a model of that attribute may read)."""
    return ProductBatch(titles=batch.titles, descriptions=batch.descriptions,
                        attributes={c: v for c, v in batch.attributes.items() if c != column}, images=batch.images,
                        root=batch.root, ids=batch.ids)


class AttributeModels:
    """Learned attributes: for each attribute column, a classifier fitted on the products whose cell is filled
    (reading the title, description and the other attribute columns, never the attribute's own column), which
    answers for every product with a calibrated confidence.

    Args:
        columns: the attribute columns to learn (each needs ``min_products`` filled cells and two values).
        min_products: filled cells an attribute needs to be learned.
        min_confidence: answers below it are left empty.
        params: :class:`~taxonomist.TaxonomyClassifier` parameters of each model (default: the sparse tier).
    """

    def __init__(self, columns: Sequence[str], min_products: int = 20, min_confidence: float = MIN_CONFIDENCE,
                 **params: Any) -> None:
        self.columns = list(columns)
        self.min_products = min_products
        self.min_confidence = min_confidence
        self.params = {"tier": "sparse", **params}
        self.models_: dict[str, Any] = {}
        self.skipped_: dict[str, str] = {}

    def fit(self, products: Any) -> AttributeModels:
        from .classifier import TaxonomyClassifier

        batch = ProductBatch.from_any(products)
        for col in self.columns:
            if col not in batch.attributes:
                raise ValueError(f"expected an attribute column {col!r}; the products have {sorted(batch.attributes)}")
            values = [v.strip().replace(">", "/") for v in batch.attributes[col]]
            filled = [i for i, v in enumerate(values) if v]
            n_values = len({values[i] for i in filled})
            if len(filled) < self.min_products or n_values < 2:
                self.skipped_[col] = f"{len(filled)} filled cells, {n_values} values"
                continue
            train = _without(batch, col).subset(filled)
            self.models_[col] = TaxonomyClassifier(**self.params).fit(train, [values[i] for i in filled])
        return self

    def predict(self, products: Any) -> pd.DataFrame:
        """Columns ``attr_<column>`` and ``attr_<column>_confidence`` for each learned column (empty / NaN below
        ``min_confidence``)."""
        batch = ProductBatch.from_any(products)
        out: dict[str, list[Any]] = {}
        for col, model in self.models_.items():
            preds = model.predict_products(_without(batch, col), top_k=1)
            ok = [p.leaf_confidence >= self.min_confidence for p in preds]
            out[f"attr_{col}"] = [" > ".join(p.leaf) if k else "" for p, k in zip(preds, ok, strict=True)]
            out[f"attr_{col}_confidence"] = [p.leaf_confidence if k else float("nan") for p, k in zip(preds, ok, strict=True)]
        return pd.DataFrame(out, index=range(len(batch)))


COLUMN_ALIASES = {"color": ("color", "colour", "colors", "colours", "g:color", "Google Shopping / Color"),
                  "gender": ("gender", "sex", "target_gender", "g:gender", "Google Shopping / Gender"),
                  "age_group": ("age_group", "agegroup", "g:age_group", "Google Shopping / Age Group")}
"""Columns a catalogue may hold an attribute's own values in."""


def column_for(columns: Sequence[str], name: str) -> int | None:
    """The position of the column among ``columns`` that holds attribute ``name``'s own values (its name or one of
    :data:`COLUMN_ALIASES`, case and spacing aside), or ``None``."""
    keys = {column_key(a) for a in COLUMN_ALIASES.get(name, (name,))}
    return next((i for i, c in enumerate(columns) if column_key(c) in keys), None)


def _own_column(batch: ProductBatch, name: str) -> str | None:
    columns = list(batch.attributes)
    i = column_for(columns, name)
    return None if i is None else columns[i]


def read_attributes(products: Any, names: Sequence[str], categories: Sequence[str | None] | None = None,
                    taxonomy: str | None = None, min_products: int = 50,
                    seed: int = 0) -> tuple[pd.DataFrame, dict[str, str]]:
    """The attributes of a catalogue, each the better of two ways on the catalogue's own filled cells: where an
    attribute's column (``colour``, ``gender``, ...: :data:`COLUMN_ALIASES`) has at least ``min_products`` values
    the feed accepts, a model learnt on 80 % of them (:class:`AttributeModels`) and the zero-shot reading
    (:func:`extract`) answer the other 20 %; the one with more right answers is kept (the model then learnt on all
    of them). Otherwise, and for every product of a category without the attribute, zero-shot.

    An attribute taxonomist has no vocabulary for (``material``, a shop's own ``fit``, ...) is learnt from the
    catalogue's column of that name, which must have ``min_products`` values.

    Returns the columns of :func:`extract` and, per attribute, how it was read (a sentence)."""
    batch = ProductBatch.from_any(products)
    out = extract(batch, [n for n in names if n in ATTRIBUTES], categories, taxonomy)
    how: dict[str, str] = {}
    for name in [n for n in names if n not in ATTRIBUTES]:
        how[name] = _learn_own(batch, name, min_products, out)
    for name in [n for n in names if n in ATTRIBUTES]:
        col = _own_column(batch, name)
        values = [normalise(name, v) for v in batch.attributes[col]] if col else []
        filled = [i for i, v in enumerate(values) if v]
        if col is None or len(filled) < min_products or len(set(values[i] for i in filled)) < 2:
            how[name] = "zero-shot (from the products' words)" + (
                f"; its column {col!r} has {len(filled)} values, {min_products} are needed to learn" if col else "")
            continue
        own = ProductBatch(titles=batch.titles, descriptions=batch.descriptions,
                           attributes={**batch.attributes, col: values}, images=batch.images, ids=batch.ids)
        rng = np.random.default_rng(seed)
        held = set(rng.choice(filled, size=max(1, len(filled) // 5), replace=False).tolist())
        fit = [i for i in filled if i not in held]
        learnt = AttributeModels([col]).fit(own.subset(fit)).predict(own.subset(sorted(held)))[f"attr_{col}"]
        cats = list(categories) if categories is not None else [None] * len(batch)
        zero = extract(_without(batch, col).subset(sorted(held)), [name], [cats[i] for i in sorted(held)],
                       taxonomy)[f"attr_{name}"]  # (the column's own value hidden, as from the learnt model)
        right = [int(sum(a == values[i] for a, i in zip(answers, sorted(held), strict=True)))
                 for answers in (learnt.tolist(), zero.tolist())]
        if right[0] <= right[1]:
            how[name] = (f"zero-shot: right on {right[1]} of {len(held)} held-out values of the column {col!r} "
                         f"(learnt: {right[0]})")
            continue
        models = AttributeModels([col]).fit(own.subset(filled))
        got = models.predict(own)
        ok = np.array([applies(name, c, taxonomy) for c in cats])
        out[f"attr_{name}"] = np.where(ok, got[f"attr_{col}"].to_numpy(), "")
        out[f"attr_{name}_confidence"] = np.where(ok, got[f"attr_{col}_confidence"].to_numpy(), np.nan)
        how[name] = (f"learnt from the column {col!r} ({len(filled):,} values): right on {right[0]} of "
                     f"{len(held)} held-out values (zero-shot: {right[1]})")
    return out, how


def _learn_own(batch: ProductBatch, name: str, min_products: int, out: pd.DataFrame) -> str:
    """An attribute without a vocabulary, learnt from the catalogue's own column into ``out``; how (a sentence)."""
    col = _own_column(batch, name)
    if col is None:
        raise ValueError(f"expected attributes among {sorted(ATTRIBUTES)}, or a column {name!r} of the catalogue to "
                         f"learn it from; the catalogue has {sorted(batch.attributes)}")
    models = AttributeModels([col], min_products=min_products).fit(batch)
    if col in models.skipped_:
        raise ValueError(f"the column {col!r} has too few values to learn {name!r} from ({models.skipped_[col]}; "
                         f"{min_products} filled cells and two values are needed)")
    got = models.predict(batch)
    out[f"attr_{name}"] = got[f"attr_{col}"].to_numpy()
    out[f"attr_{name}_confidence"] = got[f"attr_{col}_confidence"].to_numpy()
    return f"learnt from the column {col!r} ({int(sum(bool(v.strip()) for v in batch.attributes[col])):,} values)"


def score(products: Any, names: Sequence[str], categories: Sequence[str | None] | None = None,
          taxonomy: str | None = None) -> dict[str, Any]:
    """How :func:`extract` reads the attributes of labelled products: for each attribute whose column the products
    have (:data:`COLUMN_ALIASES`), its values taken as the truth (normalised to the feed's values) and hidden from
    the reading. Per attribute: products with a truth, precision (answers right), coverage (products answered),
    precision of the surest 70 % of them, and the same per value."""
    batch = ProductBatch.from_any(products)
    out: dict[str, Any] = {}
    for name in names:
        col = _own_column(batch, name)
        if col is None or name not in ATTRIBUTES:
            continue
        truth = [normalise(name, v) for v in batch.attributes[col]]
        rows = [i for i, t in enumerate(truth) if t]
        if not rows:
            continue
        cats = [(categories[i] if categories is not None else None) for i in rows]
        got = extract(_without(batch, col).subset(rows), [name], cats, taxonomy)
        value, conf = got[f"attr_{name}"].tolist(), got[f"attr_{name}_confidence"].to_numpy()
        t = [truth[i] for i in rows]
        answered = [j for j, v in enumerate(value) if v]
        surest = sorted(answered, key=lambda j: -conf[j])[: int(np.ceil(0.7 * len(rows)))]
        per_value = []
        for v in sorted(set(t) | {value[j] for j in answered}):
            said = [j for j in answered if value[j] == v]
            per_value.append({"value": v, "n": t.count(v), "answered": len(said),
                              "precision": float(np.mean([t[j] == v for j in said])) if said else None,
                              "recall": float(np.mean([value[j] == v for j, tv in enumerate(t) if tv == v]))
                              if v in t else None})
        out[name] = {"column": col, "n": len(rows), "coverage": len(answered) / len(rows),
                     "precision": float(np.mean([value[j] == t[j] for j in answered])) if answered else None,
                     "precision_at_70_coverage": (float(np.mean([value[j] == t[j] for j in surest]))
                                                  if len(surest) >= 0.7 * len(rows) else None),
                     "values": per_value}
    return out
