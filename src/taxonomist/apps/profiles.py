"""Shopper profiles and recommendations from behaviour events.

Events are rows ``user, item, category, event, timestamp`` (CSV/TSV/JSONL/Parquet, with or without a header;
header-less files are read in that column order, as Taobao's UserBehavior.csv is). ``event`` is view / fav / cart
/ buy (``pv``, ``click``, ``favorite``, ``add_to_cart``, ``purchase``, ... are understood); ``timestamp`` is Unix
seconds (or milliseconds) or an ISO date. ``category`` may be empty when a catalogue is given: the item's label
there, else the model's prediction for it.

A :class:`ProfileStore` holds, per user, a **category affinity** (each event weighted by its type — view 1, fav 2,
cart 3, buy 5 — and halved every ``half_life_days`` before the newest event of the log), the recently seen items and
the items bought; per item, its category, its (decayed, weighted) popularity and, when the catalogue has titles
and an encoder is given, a title embedding. Recommendations score every item as

    category · affinity(user, category of item) · popularity within that category
  + similar  · max over the recent items r of decay(r) · similarity(item, r)
  + popular  · global popularity

(similarity: embedding cosine when the items have embeddings, else co-visitation — how often other shoppers had
both items, normalised), excluding the items the user bought. The popularity and category-only baselines are the
same scorer with one term (``mix={"popular": 1}``, ``mix={"category": 1}``), so evaluations compare like with like.

A store is a folder of JSON, Parquet and NumPy/SciPy arrays (read without pickle).

Example:
    >>> events = read_events("UserBehavior.csv")                              # doctest: +SKIP
    >>> store = ProfileStore.fit(events)                                       # doctest: +SKIP
    >>> store.recommend("1", k=5)[0].item                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..exceptions import CatalogError, TaxonomistError
from ..tables import load_table
from ..validation import ValidationReport

__all__ = [
    "EVENT_WEIGHTS", "Events", "ProfileStore", "Recommendation", "UserProfile", "catalog_categories",
    "evaluate_leave_last_out", "fill_categories",
    "read_events", "synthetic_events",
]

logger = logging.getLogger(__name__)

EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "fav": 2.0, "cart": 3.0, "buy": 5.0}
DEFAULT_MIX: dict[str, float] = {"category": 1.0, "similar": 1.0, "popular": 0.1}
FIELDS = ("user", "item", "category", "event", "timestamp")
_ALIASES = {
    "user": ("user", "user_id", "userid", "visitorid", "visitor_id", "customer", "customer_id", "shopper"),
    "item": ("item", "item_id", "itemid", "product", "product_id", "productid", "sku"),
    "category": ("category", "category_id", "categoryid", "cat", "cat_id"),
    "event": ("event", "event_type", "behavior", "behaviour", "behavior_type", "behaviour_type", "action", "type"),
    "timestamp": ("timestamp", "time", "ts", "datetime", "date", "event_time"),
}
_EVENTS = {"pv": "view", "view": "view", "click": "view", "page_view": "view", "fav": "fav", "favorite": "fav",
           "favourite": "fav", "like": "fav", "wishlist": "fav", "cart": "cart", "add_to_cart": "cart",
           "addtocart": "cart", "buy": "buy", "purchase": "buy", "order": "buy", "transaction": "buy"}


# -- reading events ------------------------------------------------------------------------------------------
@dataclass
class Events:
    """Validated behaviour events: ``frame`` has user, item, category, event (view/fav/cart/buy), timestamp
    (int64 Unix seconds), in time order; ``report`` says what was skipped and why."""

    frame: pd.DataFrame
    report: ValidationReport = field(default_factory=ValidationReport)

    def __len__(self) -> int:
        return len(self.frame)


def _timestamps(values: pd.Series) -> np.ndarray:
    """Unix seconds (float; NaN where unreadable) from seconds, milliseconds or date strings."""
    num = pd.to_numeric(values, errors="coerce")
    out = num.to_numpy(dtype=float)
    out = np.where(out > 1e11, out / 1000.0, out)  # milliseconds
    text = num.isna() & values.astype(str).str.strip().ne("")
    if text.any():
        parsed = pd.to_datetime(values[text], errors="coerce", utc=True, format="mixed")
        secs = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        out[text.to_numpy()] = secs.to_numpy(dtype=float)
    return out


def read_events(source: str | Path | pd.DataFrame, columns: Sequence[str] | None = None, header: bool | None = None,
                strict: bool = False, encoding: str | None = None) -> Events:
    """Read and validate behaviour events (see the module docs).

    Args:
        source: a file (CSV, TSV, JSONL, Parquet; compressed too) or a DataFrame.
        columns: names for a header-less file, in file order (default ``user,item,category,event,timestamp``).
        header: whether the first row names the columns (default: detected from the names).
        strict: raise a :class:`~taxonomist.CatalogError` instead of skipping bad rows.
    """
    if isinstance(source, pd.DataFrame):
        report = ValidationReport(source="events", n_read=len(source))
        df = source.astype(object).where(source.notna(), "").astype(str)
        df["row"] = np.arange(1, len(df) + 1)
    else:
        path = Path(source)
        report = ValidationReport(source=path.name)
        df = load_table(path, encoding, header is not False, columns, report)
        if header is None and columns is None and not (_find_columns(df.columns)["user"]):
            report = ValidationReport(source=path.name)  # no recognisable header: the documented column order
            df = load_table(path, encoding, False, FIELDS, report)
    cols = _find_columns(df.columns)
    missing = [f for f in ("user", "item", "event") if not cols[f]]
    if missing:
        raise CatalogError(f"{report.source}: expected event columns user, item, event (+ category, timestamp); found "
                           f"{[c for c in df.columns if c != 'row']} with no column for {missing}. Rename them, or pass "
                           "columns=[...] for a file without a header", options=("columns",))
    report.n_read = len(df) + report.issue("malformed_line").count
    frame = pd.DataFrame({f: (df[cols[f]].astype(str).str.strip() if cols[f] else "") for f in FIELDS[:4]})
    frame["event"] = frame["event"].str.lower().map(_EVENTS)
    ts = _timestamps(df[cols["timestamp"]]) if cols["timestamp"] else np.arange(len(df), dtype=float)
    rows = df["row"].to_numpy()
    bad = np.zeros(len(df), dtype=bool)
    for kind, mask in (("missing_user_item", (frame["user"] == "") | (frame["item"] == "")),
                       ("unknown_event", frame["event"].isna()),
                       ("bad_timestamp", pd.Series(~np.isfinite(ts), index=frame.index))):
        hit = mask.to_numpy() & ~bad
        for i in np.flatnonzero(hit):
            report.issue(kind).add(int(rows[i]), ",".join(str(v) for v in df.iloc[i].drop("row").tolist()))
        bad |= hit
    if strict and (bad.any() or report.issue("malformed_line").count):
        raise CatalogError("strict mode: the events have bad rows:\n" + report.summary()
                           + "\nFix them, or read without strict=True to skip them.", options=("strict",))
    frame = frame[~bad].copy()
    frame["timestamp"] = ts[~bad].astype(np.int64)
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    report.n_kept = len(frame)
    if not len(frame):
        raise CatalogError(f"{report.source}: no usable events left after validation:\n{report.summary()}")
    return Events(frame, report)


def _find_columns(names: Any) -> dict[str, str | None]:
    norm = {str(n).strip().lower().replace(" ", "_").replace("-", "_"): str(n) for n in names if str(n) != "row"}
    return {f: next((norm[a] for a in aliases if a in norm), None) for f, aliases in _ALIASES.items()}


def catalog_categories(catalog: Any, model: Any = None) -> pd.Series:
    """Each catalogue item's category (index: item id): its label, else ``model``'s prediction, else ``""``."""
    cat = catalog.frame.drop_duplicates("id").set_index("id")
    labels = cat["category"].astype(str).copy()
    if model is not None and (labels == "").any():
        todo = labels.index[labels == ""]
        labels.loc[todo] = [str(c) for c in model.predict(cat.loc[todo].reset_index())]
    labels.index = labels.index.astype(str)
    return pd.Series(labels, dtype=str)


def fill_categories(events: Events, catalog: Any = None, model: Any = None,
                    labels: pd.Series | None = None) -> Events:
    """Events whose category is empty take their item's catalogue label, else ``model``'s prediction for it
    (``labels``: :func:`catalog_categories` already computed)."""
    frame = events.frame
    empty = frame["category"] == ""
    if not empty.any() or (catalog is None and labels is None):
        return events
    labels = catalog_categories(catalog, model) if labels is None else labels
    frame = frame.copy()
    frame.loc[empty, "category"] = frame.loc[empty, "item"].map(labels).fillna("")
    return Events(frame, events.report)


# -- the store -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserProfile:
    user: str
    events: int
    last_seen: int  # Unix seconds
    categories: list[tuple[str, float]]  # category affinity, shares summing to 1, strongest first
    recent_items: list[str]
    bought: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    item: str
    score: float
    category: str
    reason: str  # the term that contributed most: category, similar or popular
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recent_items(ui: np.ndarray, ii: np.ndarray, n_u: int, n_i: int, recent: int
                  ) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """From the events' (user, item) codes, oldest first: (each user's items seen, each user's last ``recent``
    distinct items weighted by recency -- halving every 5 steps back --, the co-visitation of items among users'
    recent items, binary, its diagonal removed)."""
    pairs = pd.DataFrame({"u": ui, "i": ii}).iloc[::-1].drop_duplicates(["u", "i"])
    seen = sp.csr_matrix((np.ones(len(pairs)), (pairs["u"], pairs["i"])), shape=(n_u, n_i))
    rank = pairs.groupby("u").cumcount().to_numpy()
    last = pairs[rank < recent]
    recent_m = sp.csr_matrix((0.5 ** (rank[rank < recent] / 5.0), (last["u"], last["i"])), shape=(n_u, n_i))
    recent_bin = sp.csr_matrix((np.ones(len(last)), (last["u"], last["i"])), shape=(n_u, n_i))
    covisit = (recent_bin.T @ recent_bin).tocsr()
    covisit.setdiag(0)
    covisit.eliminate_zeros()
    return seen, recent_m, covisit


def _title_embeddings(texts: list[str], encoder: str, show_progress_bar: bool | None) -> tuple[np.ndarray, str]:
    """(the items' title embeddings, zeros for items without a title; the encoder's name)."""
    from ..encoders import load_text_encoder, pick_encoder

    name = pick_encoder(texts) if encoder == "auto" else str(encoder)
    embeddings = load_text_encoder(name).encode(texts, show_progress_bar=show_progress_bar).astype(np.float32)
    embeddings[[not t for t in texts]] = 0.0
    return embeddings, name


class ProfileStore:
    """Profiles and recommendations (see the module docs). Build with :meth:`fit`; :meth:`save` / :meth:`load`."""

    def __init__(self, meta: dict[str, Any], items: pd.DataFrame, users: list[str], affinity: sp.csr_matrix,
                 bought: sp.csr_matrix, seen: sp.csr_matrix, recent: sp.csr_matrix, covisit: sp.csr_matrix,
                 embeddings: np.ndarray | None, stats: pd.DataFrame) -> None:
        self.meta = meta
        self.categories: list[str] = list(meta["categories"])
        self.item_ids = items["item"].to_numpy(dtype=object)
        self.item_titles = items["title"].to_numpy(dtype=object)
        self.item_category = items["category_code"].to_numpy(dtype=np.int64)
        self.popularity = items["popularity"].to_numpy(dtype=float)
        self.users = list(users)
        self._user_index = {u: i for i, u in enumerate(self.users)}
        self.affinity, self.bought, self.seen, self.recent, self.covisit = affinity, bought, seen, recent, covisit
        self.embeddings = embeddings
        self.stats = stats  # per user: events, last_seen
        self._items_frame = items
        lp = np.log1p(self.popularity)
        self._pop = lp / lp.max() if lp.max() > 0 else lp
        cat_max = np.zeros(len(self.categories) + 1)
        np.maximum.at(cat_max, self.item_category + 1, lp)  # slot 0: items without a category
        self._pop_in_cat = np.where(self.item_category >= 0, lp / np.maximum(cat_max[self.item_category + 1], 1e-12), 0.0)

    def __repr__(self) -> str:
        return (f"ProfileStore(users={len(self.users)}, items={len(self.item_ids)}, categories={len(self.categories)}, "
                f"embeddings={self.embeddings is not None})")

    def __contains__(self, user: object) -> bool:
        return str(user) in self._user_index

    # -- fitting -------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, events: Events | pd.DataFrame, catalog: Any = None, model: Any = None, encoder: str | None = None,
            half_life_days: float = 14.0, weights: Mapping[str, float] | None = None, recent: int = 20,
            mix: Mapping[str, float] | None = None, show_progress_bar: bool | None = None) -> ProfileStore:
        """Build profiles from events.

        Args:
            catalog: a :class:`~taxonomist.Catalog` of the items: fills empty categories (labels, else ``model``'s
                predictions), gives titles, and makes items recommendable that nobody touched yet.
            encoder: a text encoder (preset, folder, ``"auto"``) for title embeddings (needs ``catalog``); without
                one, similarity is co-visitation.
            half_life_days: an event's weight halves every this many days before the log's newest event.
            weights: event weights (default view 1, fav 2, cart 3, buy 5).
            recent: how many recent items per user feed the similarity term.
            mix: default weights of the terms (``category``, ``similar``, ``popular``).
        """
        ev = events if isinstance(events, Events) else read_events(events)
        labels = catalog_categories(catalog, model) if catalog is not None else None
        ev = fill_categories(ev, labels=labels)
        w = {**EVENT_WEIGHTS, **(weights or {})}
        df = ev.frame
        if half_life_days <= 0:
            raise TaxonomistError(f"half_life_days must be positive, got {half_life_days}")
        # items: the catalogue's, then any only seen in events
        titles: dict[str, str] = {}
        item_cat: dict[str, str] = {}
        if catalog is not None:
            cf = catalog.frame.drop_duplicates("id")
            titles = dict(zip(cf["id"].astype(str), cf["title"].astype(str), strict=True))
            assert labels is not None
            item_cat = {str(k): str(v) for k, v in labels.items()}  # labels, else the model's predictions
        for it, c in zip(df["item"], df["category"], strict=True):
            if c:
                item_cat[it] = c  # the events' own category wins (the newest one seen)
        item_ids = list(dict.fromkeys([*titles, *df["item"]]))
        item_index = {it: i for i, it in enumerate(item_ids)}
        categories = sorted({c for c in item_cat.values() if c})
        cat_index = {c: i for i, c in enumerate(categories)}
        users = list(dict.fromkeys(df["user"]))
        user_index = {u: i for i, u in enumerate(users)}
        ui = df["user"].map(user_index).to_numpy()
        ii = df["item"].map(item_index).to_numpy()
        t_ref = int(df["timestamp"].max())
        decay = 0.5 ** ((t_ref - df["timestamp"].to_numpy()) / (half_life_days * 86400.0))
        ew = df["event"].map(w).to_numpy(dtype=float) * decay
        ci = df["category"].map(cat_index).fillna(-1).to_numpy(dtype=np.int64)
        has = ci >= 0
        n_u, n_i, n_c = len(users), len(item_ids), len(categories)
        affinity = sp.csr_matrix((ew[has], (ui[has], ci[has])), shape=(n_u, n_c))
        popularity = np.bincount(ii, weights=ew, minlength=n_i)
        buy = df["event"].to_numpy() == "buy"
        bought = sp.csr_matrix((np.ones(buy.sum()), (ui[buy], ii[buy])), shape=(n_u, n_i))
        bought.data[:] = 1.0
        seen, recent_m, covisit = _recent_items(ui, ii, n_u, n_i, recent)
        embeddings, enc_name = None, None
        if encoder is not None:
            if catalog is None:
                raise TaxonomistError("title embeddings need the catalogue (catalog=...) for the item titles")
            embeddings, enc_name = _title_embeddings([titles.get(it, "") for it in item_ids], encoder,
                                                     show_progress_bar)
        stats = df.groupby(df["user"].map(user_index)).agg(events=("item", "size"), last_seen=("timestamp", "max"))
        items = pd.DataFrame({"item": item_ids, "title": [titles.get(it, "") for it in item_ids],
                              "category_code": [cat_index.get(item_cat.get(it, ""), -1) for it in item_ids],
                              "popularity": popularity})
        meta = {"format": 1, "categories": categories, "weights": w, "half_life_days": half_life_days,
                "reference_time": t_ref, "recent": recent, "mix": {**DEFAULT_MIX, **(mix or {})}, "encoder": enc_name,
                "events": len(df), "report": ev.report.to_dict()}
        logger.info("profiles: %d users, %d items, %d categories from %d events", n_u, n_i, n_c, len(df))
        return cls(meta, items, users, affinity, bought, seen, recent_m, covisit, embeddings,
                   stats.reindex(range(n_u)).reset_index(drop=True))

    # -- queries -------------------------------------------------------------------------------------------
    def _user(self, user: object) -> int:
        key = str(user)
        if key not in self._user_index:
            raise KeyError(key)
        return self._user_index[key]

    def profile(self, user: object, top: int = 10) -> UserProfile:
        """The user's category affinity (shares), recent items and purchases; ``KeyError`` for an unknown user."""
        u = self._user(user)
        row = self.affinity.getrow(u)
        total = row.sum()
        order = np.argsort(-row.data, kind="stable")[:top]
        cats = [(self.categories[row.indices[j]], round(float(row.data[j] / total), 4)) for j in order] if total else []
        rec = self.recent.getrow(u)
        recent = [str(self.item_ids[i]) for i in rec.indices[np.argsort(-rec.data, kind="stable")]]
        stats = self.stats.iloc[u]
        return UserProfile(user=str(user), events=int(stats["events"]), last_seen=int(stats["last_seen"]), categories=cats, recent_items=recent[:top],
                           bought=[str(self.item_ids[i]) for i in self.bought.getrow(u).indices][:top])

    def scores(self, user: object, mix: Mapping[str, float] | None = None,
               exclude_seen: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Every item's score for ``user`` (``-inf`` for items bought, or with ``exclude_seen`` touched at all) and
        which term gave most of it (0 category, 1 similar, 2 popular)."""
        m = {**self.meta["mix"], **(mix or {})}
        unknown = set(m) - set(DEFAULT_MIX)
        if unknown:
            raise TaxonomistError(f"unknown recommendation terms {sorted(unknown)}; expected {sorted(DEFAULT_MIX)}")
        u = self._user(user)
        terms = np.zeros((3, len(self.item_ids)))
        if m.get("category"):
            aff = self.affinity.getrow(u).toarray().ravel()
            share = aff / aff.sum() if aff.sum() > 0 else aff
            per_item = np.where(self.item_category >= 0, share[np.maximum(self.item_category, 0)], 0.0)
            terms[0] = m["category"] * per_item * self._pop_in_cat
        if m.get("similar"):
            rec = self.recent.getrow(u)
            if rec.nnz:
                if self.embeddings is not None:
                    sims = self.embeddings @ self.embeddings[rec.indices].T  # (items, recent)
                    sim = (np.clip(sims, 0.0, None) * rec.data).max(axis=1)
                else:
                    cv = self.covisit[rec.indices].tocsr()  # (recent, items), kept sparse: items may be millions
                    norm = np.maximum(cv.max(axis=1).toarray().ravel(), 1e-12)
                    scaled = sp.diags(rec.data / norm) @ cv  # each row: its counts / its max x the item's decay
                    sim = scaled.max(axis=0).toarray().ravel()
                    sim[rec.indices] = np.maximum(sim[rec.indices], rec.data)  # an item is most similar to itself
                terms[1] = m["similar"] * sim
        if m.get("popular"):
            terms[2] = m["popular"] * self._pop
        total = terms.sum(axis=0)
        total[(self.seen if exclude_seen else self.bought).getrow(u).indices] = -np.inf
        return total, terms.argmax(axis=0)

    def recommend(self, user: object, k: int = 10, mix: Mapping[str, float] | None = None,
                  exclude_seen: bool = False) -> list[Recommendation]:
        """The ``k`` best items for ``user`` not yet bought (with ``exclude_seen``: not yet touched); ``KeyError`` for
        an unknown user."""
        if k < 1:
            raise TaxonomistError(f"k must be at least 1, got {k}")
        total, why = self.scores(user, mix, exclude_seen)
        k = min(k, int(np.isfinite(total).sum()))
        if k <= 0:
            return []
        top = np.argpartition(-total, k - 1)[:k]
        top = top[np.lexsort((top, -total[top]))]
        names = ("category", "similar", "popular")
        return [Recommendation(item=str(self.item_ids[i]), score=round(float(total[i]), 6),
                               category=self.categories[c] if (c := self.item_category[i]) >= 0 else "",
                               reason=names[why[i]], title=str(self.item_titles[i])) for i in top]

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        out = Path(folder)
        if out.exists() and any(out.iterdir()) and not (out / "profiles.json").is_file():
            raise TaxonomistError(f"{out} exists and is not a profile store; choose an empty or new folder")
        out.mkdir(parents=True, exist_ok=True)
        self._items_frame.to_parquet(out / "items.parquet", index=False)
        pd.DataFrame({"user": self.users, "events": self.stats["events"].to_numpy(),
                      "last_seen": self.stats["last_seen"].to_numpy()}).to_parquet(out / "users.parquet", index=False)
        for name, m in (("affinity", self.affinity), ("bought", self.bought), ("seen", self.seen),
                        ("recent", self.recent), ("covisit", self.covisit)):
            sp.save_npz(out / f"{name}.npz", m)
        (out / "embeddings.npy").unlink(missing_ok=True)
        if self.embeddings is not None:
            np.save(out / "embeddings.npy", self.embeddings, allow_pickle=False)
        (out / "profiles.json").write_text(json.dumps(self.meta, indent=2, ensure_ascii=False))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> ProfileStore:
        src = Path(folder)
        if not (src / "profiles.json").is_file():
            raise TaxonomistError(f"{src}: not a profile store (no profiles.json); build one with taxonomist users build")
        meta = json.loads((src / "profiles.json").read_text())
        users = pd.read_parquet(src / "users.parquet")
        mats = {name: sp.load_npz(src / f"{name}.npz").tocsr()
                for name in ("affinity", "bought", "seen", "recent", "covisit")}
        emb = np.load(src / "embeddings.npy", allow_pickle=False) if (src / "embeddings.npy").is_file() else None
        return cls(meta, pd.read_parquet(src / "items.parquet"), users["user"].astype(str).tolist(), mats["affinity"],
                   mats["bought"], mats["seen"], mats["recent"], mats["covisit"], emb, users[["events", "last_seen"]])


# -- evaluation ----------------------------------------------------------------------------------------------
def evaluate_leave_last_out(events: Events, catalog: Any = None, model: Any = None, encoder: str | None = None,
                            k: int = 10, mixes: Mapping[str, Mapping[str, float]] | None = None,
                            new_items: bool = False, **fit_kwargs: Any) -> dict[str, dict[str, float]]:
    """Hold out each user's last event (users with at least two), fit on the rest, and score the held-out item:
    hit-rate@k and nDCG@k per mix (default: the recommender, the popularity and the category-only baselines).

    ``new_items=True`` holds out each user's last *new* item instead (the last item the user had not touched
    before, with all of the user's events on it): what is left to predict is discovery, not a return to an item
    just seen; every method then leaves out the items the user already touched."""
    mixes = mixes or {"recommender": {}, "popularity": {"category": 0.0, "similar": 0.0, "popular": 1.0},
                      "category only": {"category": 1.0, "similar": 0.0, "popular": 0.0}}
    df = events.frame
    if new_items:
        first = df.drop_duplicates(["user", "item"])  # time-sorted: each pair's first event
        n_items = first["user"].value_counts()
        target = first[first["user"].isin(n_items.index[n_items >= 2])].groupby("user").tail(1)[["user", "item"]]
        pair = df.merge(target.assign(_held=True), on=["user", "item"], how="left")["_held"].fillna(False).to_numpy(bool)
        train_frame, held = df[~pair], target
    else:
        counts = df["user"].value_counts()
        last_idx = df[df["user"].isin(counts.index[counts >= 2])].groupby("user").tail(1).index  # time-sorted: the last
        train_frame, held = df.drop(index=last_idx), df.loc[last_idx, ["user", "item"]]
    train = Events(train_frame.reset_index(drop=True), events.report)
    store = ProfileStore.fit(train, catalog=catalog, model=model, encoder=encoder, **fit_kwargs)
    out: dict[str, dict[str, float]] = {}
    for name, mix in mixes.items():
        hits, gains = [], []
        for user, item in zip(held["user"], held["item"], strict=True):
            ranked = [r.item for r in store.recommend(user, k=k, mix=mix, exclude_seen=new_items)]
            rank = ranked.index(item) + 1 if item in ranked else 0
            hits.append(rank > 0)
            gains.append(1.0 / np.log2(rank + 1) if rank else 0.0)
        out[name] = {f"hit_rate@{k}": float(np.mean(hits)), f"ndcg@{k}": float(np.mean(gains)), "users": len(held)}
    return out


# -- a synthetic log ---------------------------------------------------------------------------------------
def synthetic_events(catalog: Any, n_users: int = 1000, events_per_user: tuple[int, int] = (10, 60),
                     seed: int = 0) -> pd.DataFrame:
    """A behaviour log generated from a labelled catalogue, with a stated generator:

    - item popularity is Zipf-like (weight ``1 / rank^0.8`` over a random order of the items);
    - each user favours 1–3 leaf categories (picked by category size; preference shares from Dirichlet(1));
    - a user's visit is a session of 2–8 steps; each step goes, with probability 0.5, to one of the 10 items
      whose titles are most similar to the current one (TF-IDF of title words — not the recommender's encoder),
      with 0.4 to a popular item of a favourite category, and with 0.1 to a popular item of any category;
    - every viewed item is also faved with probability 0.08, carted with 0.10 and bought with 0.04;
    - sessions are hours to days apart over 30 days; steps within one are minutes apart.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    cf = catalog.frame.drop_duplicates("id")
    cf = cf[cf["category"] != ""].reset_index(drop=True)
    if len(cf) < 20:
        raise TaxonomistError("a synthetic log needs a labelled catalogue of at least 20 products")
    ids, cats = cf["id"].astype(str).to_numpy(), cf["category"].to_numpy()
    pop = np.empty(len(cf))
    pop[rng.permutation(len(cf))] = 1.0 / np.arange(1, len(cf) + 1) ** 0.8
    x = TfidfVectorizer(ngram_range=(1, 2), min_df=1).fit_transform(cf["title"].astype(str))
    nn = NearestNeighbors(n_neighbors=min(11, len(cf)), metric="cosine").fit(x)
    neighbours = nn.kneighbors(x, return_distance=False)[:, 1:]
    cat_names, cat_of = np.unique(cats, return_inverse=True)
    members = [np.flatnonzero(cat_of == c) for c in range(len(cat_names))]
    sizes = np.array([len(m) for m in members], dtype=float)
    rows = []
    t0 = 1_700_000_000
    for u in range(n_users):
        fav = rng.choice(len(cat_names), size=min(int(rng.integers(1, 4)), len(cat_names)), replace=False, p=sizes / sizes.sum())
        share = rng.dirichlet(np.ones(len(fav)))
        n = int(rng.integers(*events_per_user))
        t = t0 + int(rng.integers(0, 5 * 86400))
        current = None
        step_left = 0
        while n > 0:
            if step_left == 0:  # a new session
                step_left = int(rng.integers(2, 9))
                t += int(rng.exponential(86400))
                current = None
            r = rng.random()
            if current is not None and r < 0.5:
                item = int(rng.choice(neighbours[current]))
            else:
                pool = members[int(rng.choice(fav, p=share))] if r < 0.9 else np.arange(len(cf))
                item = int(rng.choice(pool, p=pop[pool] / pop[pool].sum()))
            t += int(rng.exponential(120)) + 5
            rows.append((f"u{u}", ids[item], cats[item], "view", t))
            for event, p in (("fav", 0.08), ("cart", 0.10), ("buy", 0.04)):
                if rng.random() < p:
                    t += int(rng.integers(5, 60))
                    rows.append((f"u{u}", ids[item], cats[item], event, t))
            current = item
            step_left -= 1
            n -= 1
    return pd.DataFrame(rows, columns=list(FIELDS))
