"""A shop without labels: the zero-shot pieces that do not need a model (coverage of category names, the catalogue
adaptation, the shop's existing categories, language, shipped taxonomies and category vectors), and the command
line on the real offline encoder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from taxonomist.models.label_vectors import VECTORS_DIR, leaves_key, lookup, store
from taxonomist.models.transduction import GENERAL, OWN, Adaptation, adapt, allowed_classes
from taxonomist.models.zeroshot import name_coverage
from taxonomist.shop import agreement, agrees, known_categories
from taxonomist.taxonomy import BUILTIN, Taxonomy, load_taxonomy, parse_path, shopify_to_google
from taxonomist.text import main_language


def test_a_title_that_names_the_product_covers_its_category_not_the_accessory() -> None:
    cov = name_coverage(["Alpine Hiking Boot", "Linen Shirts", "Cordless drill kit with batteries"],
                        ["Boots", "Boot Liners", "Shirts & Tops", "Power Tool Batteries", "Drills"])
    assert cov[0, 0] == 1.0 and cov[0, 1] == 0.5  # the boot, not its liner
    assert cov[1, 2] == 1.0  # one alternative of "Shirts & Tops" is enough
    assert cov[2, 4] == 1.0 and cov[2, 3] == pytest.approx(1 / 3)
    assert not cov[0, 2:].any()


def _shop_proba(rng: np.random.Generator, n: int = 40) -> np.ndarray:
    """A shop that sells class 0; the zero-shot answers split its products between class 0 and the look-alike 1,
    with the rest of the mass spread over 20 classes."""
    p = rng.random((n, 20)) * 0.02
    p[:, 0] = rng.uniform(0.2, 0.5, n)
    p[:, 1] = rng.uniform(0.2, 0.5, n)
    return p / p.sum(axis=1, keepdims=True)


def test_a_leaf_under_the_branch_the_product_resembles_wins_a_tie_of_leaf_names() -> None:
    """Zero-shot scored each leaf by its own label vector alone; a leaf name that fits two branches ("Cases" under
    Phones and under Cameras) was a coin toss. The parent's similarity joins the logit (``hierarchy``); a
    top-level leaf, which has no parent, counts its own similarity, so it is not pushed down for lacking one."""
    from taxonomist.models.zeroshot import TaxonomyScorer

    def scorer(hierarchy: float) -> TaxonomyScorer:
        s = TaxonomyScorer(temperature=0.1, hierarchy=hierarchy)
        s.classes_ = [("Phones", "Cases"), ("Cameras", "Cases"), ("Gift Cards",)]
        nodes = [("Cameras",), ("Gift Cards",), ("Phones",), ("Cameras", "Cases"), ("Phones", "Cases")]
        vecs = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0], [0.6, 0.8, 0], [0.6, 0.8, 0]], np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        s._set_nodes(nodes, vecs)
        return s

    product = np.array([[0.8, 0.6, 0.0]], np.float32)  # like both "Cases", closer to Phones than to Cameras
    flat = np.exp(scorer(0.0).log_proba(product))[0]
    assert flat[0] == pytest.approx(flat[1])
    p = np.exp(scorer(0.5).log_proba(product))[0]
    assert p[0] > p[1] + 0.2
    gift = np.array([[0.0, 0.0, 1.0]], np.float32)
    assert np.exp(scorer(0.5).log_proba(gift))[0].argmax() == 2
    params, arrays = scorer(0.5).get_state()
    assert TaxonomyScorer.from_state(params, arrays).hierarchy == 0.5


def test_the_catalogue_prior_pulls_look_alikes_to_what_the_shop_sells() -> None:
    rng = np.random.default_rng(0)
    p = _shop_proba(rng)
    p[: len(p) // 4, 1] *= 0.5  # a quarter is clearly class 0
    p /= p.sum(axis=1, keepdims=True)
    before = (p.argmax(axis=1) == 0).mean()
    texts = [f"garden pot model {i}" for i in range(len(p))]
    q = adapt(p, texts, Adaptation(self_train=0.0))
    assert (q.argmax(axis=1) == 0).mean() > before
    assert np.allclose(q.sum(axis=1), 1.0)
    # a handful of products is answered as it is: no prior can be read from it
    assert np.allclose(adapt(p[:5], texts[:5], GENERAL), p[:5])
    # the catalogue's own taxonomy: a weaker pull
    weak = adapt(p, texts, Adaptation(strength=OWN.strength, smoothing=OWN.smoothing, self_train=0.0))
    assert (q[:, 0] >= weak[:, 0] - 1e-9).mean() > 0.9


def test_unsure_products_join_the_category_whose_sure_products_they_resemble_in_embedding_space() -> None:
    """Into a catalogue's own taxonomy, a product the category names cannot place (0.5 / 0.5) is placed by the
    catalogue's own sure products: the (centred) mean embedding of each category's confident half, cross-fitted so
    no product votes for itself. Off for Google's and Shopify's taxonomies (it cost the shops there)."""
    rng = np.random.default_rng(0)
    n = 80
    a_dir, b_dir = np.eye(8)[0], np.eye(8)[1]
    emb = rng.normal(0, 0.05, (n, 8))
    emb[: n // 2] += a_dir
    emb[n // 2:] += b_dir
    proba = np.full((n, 2), 0.5)
    proba[: n // 4] = [0.9, 0.1]  # a sure quarter in each category
    proba[n // 2: 3 * n // 4] = [0.1, 0.9]
    texts = ["item"] * n
    plain = adapt(proba, texts, Adaptation(strength=0.0, self_train=0.0))
    assert np.allclose(plain[n // 4: n // 2], 0.5)
    how = Adaptation(strength=0.0, self_train=0.0, prototypes=0.05)
    q = adapt(proba, texts, how, embeddings=emb.astype(np.float32), temperature=0.03)
    assert (q[n // 4: n // 2].argmax(axis=1) == 0).all() and (q[3 * n // 4:].argmax(axis=1) == 1).all()
    assert np.allclose(adapt(proba, texts, how), plain)  # without embeddings: as before
    assert OWN.prototypes > 0 and GENERAL.prototypes == 0


def test_self_training_raises_what_the_catalogue_repeats_and_leaves_unique_products_alone() -> None:
    rng = np.random.default_rng(1)
    n = 40
    p = np.full((n, 6), 0.05)
    texts = []
    for i in range(n):
        if i % 2 == 0:  # "trough" products: most clearly class 0, some that zero-shot takes for class 2
            p[i, 0], p[i, 2] = (0.7, 0.1) if i % 6 else (0.3, 0.4)
            texts.append(f"stone trough planter {i}")
        else:
            p[i, 3] = 0.8
            texts.append(f"ceramic mug {i}")
    p /= p.sum(axis=1, keepdims=True)
    q = adapt(p, texts, Adaptation(strength=0.0, self_train=1.0))
    unsure = np.arange(0, n, 6)
    assert (p[unsure].argmax(axis=1) == 2).all()
    assert (q[unsure].argmax(axis=1) == 0).mean() > 0.5  # most troughs the zero-shot answer had as class 2
    assert (q[1::2].argmax(axis=1) == 3).all()
    assert q.max() < 0.999  # cross-fitted: no product confirms its own pseudo-label into certainty
    del rng


def test_a_shops_own_categories_constrain_and_teach_the_adaptation() -> None:
    classes = [parse_path(c) for c in ("A > X", "A > Y", "B > Z", "B > W")]
    allowed = allowed_classes(classes, ["A > Y", "B", "", "Nowhere > Else"])
    assert allowed is not None
    assert allowed.tolist() == [[False, True, False, False], [False, False, True, True], [True] * 4, [True] * 4]
    assert allowed_classes(classes, ["", None]) is None  # type: ignore[list-item]
    p = np.full((4, 4), 0.25)
    q = adapt(p, ["a", "b", "c", "d"], GENERAL, allowed)
    assert q[0].argmax() == 1 and q[0, 1] == 1.0
    assert q[1, :2].sum() == 0 and q[1, 2:].sum() == pytest.approx(1.0)


def test_depth_tolerant_agreement() -> None:
    truth = parse_path("Health & Beauty > Personal Care")
    assert agrees(parse_path("Health & Beauty > Personal Care > Oral Care"), truth)  # a descendant
    assert agrees(truth, parse_path("Health & Beauty > Personal Care > Oral Care"))  # an ancestor at depth 2
    assert not agrees(("Health & Beauty",), parse_path("Health & Beauty > Personal Care"))  # depth 1 says little
    assert not agrees((), truth) and not agrees(parse_path("Health & Beauty > Health Care"), truth)


def test_known_categories_read_ids_paths_and_shopify_paths_into_google() -> None:
    google = Taxonomy.builtin("google")
    fountain = ("Office Supplies > Office Instruments > Writing & Drawing Instruments > Pens & Pencils > Pens > "
                "Fountain Pens")
    got = known_categories(["212", "Electronics > Audio", fountain, "Not > A > Category", "", None, float("nan")],
                           google)
    assert got[0] == "Apparel & Accessories > Clothing > Shirts & Tops"
    assert got[1] == "Electronics > Audio"
    assert got[2] == "Office Supplies > Office Instruments > Writing & Drawing Instruments > Pens & Pencils > Pens"
    assert got[3:] == ["", "", "", ""]
    shopify = Taxonomy.builtin("shopify")
    assert known_categories([fountain, "212"], shopify) == [fountain, ""]


def test_agreement_hides_each_products_own_category() -> None:
    class Echo:
        """Answers each product with the category it is told it has, else nothing."""

        def predict_products(self, products, top_k=1, known=None):  # noqa: ANN001, ANN201
            from taxonomist.models.hierarchy import Prediction

            return [Prediction(parse_path(k) if k else (), [], (), 0.0) for k in known]

    known = ["A > B"] * 12
    assert agreement(Echo(), list(range(12)), known) == {"n": 12, "agree": 0.0, "exact": 0.0}
    assert agreement(Echo(), list(range(12)), known[:5] + [""] * 7)["n"] == 0


def test_the_language_of_a_catalogue_decides_between_english_and_multilingual() -> None:
    from taxonomist.encoders.transformer import pick_zero_shot_encoder

    english = ["Tide Mini Speaker", "Harbour Fountain Pen with a steel nib", "Catnip Mice (3 pack) for indoor cats"]
    spanish = ["Crema hidratante para la cara con ácido hialurónico", "Zapatillas de running para hombre",
               "Bolso de cuero para mujer con cremallera"]
    assert main_language(english)[0] == "en"
    assert main_language(spanish)[0] == "es"
    assert main_language([]) == ("", 0.0)
    assert pick_zero_shot_encoder(english) == "minilm-en+e5-multilingual"
    assert pick_zero_shot_encoder(spanish) == "e5-multilingual"
    assert pick_zero_shot_encoder(["男士修身牛仔裤 黑色"]) == "e5-multilingual"


def test_google_and_shopify_ship_with_the_package() -> None:
    google, shopify = load_taxonomy("google"), load_taxonomy("shopify")
    assert (len(google), google.kind, len(shopify), shopify.kind) == (5595, "google", 10595, "shopify")
    assert google.path_of_id("212") == parse_path("Apparel & Accessories > Clothing > Shirts & Tops")
    mapping = shopify_to_google()
    assert len(mapping) > 10_000
    assert sum(v in google for v in mapping.values()) / len(mapping) > 0.99
    assert Taxonomy.from_dict(google.to_dict()).kind == "google"
    google.add("Mine > New")  # a copy: the shipped one is unchanged
    assert parse_path("Mine > New") not in Taxonomy.builtin("google")
    assert set(BUILTIN) == {"google", "shopify"}


class _FakeEncoder:
    identity = "fake:1.0|torch|bf16|mean|len64|"


def test_shipped_category_vectors_are_used_only_when_everything_matches(tmp_path: Path) -> None:
    leaves = [parse_path("A > B"), parse_path("A > C")]
    vecs = np.array([[0.6, 0.8, 0.0], [0.0, 0.6, -0.8]], np.float32)
    store("t", leaves, _FakeEncoder(), vecs, "test 1", folder=tmp_path)
    got = lookup(leaves, _FakeEncoder(), folder=tmp_path)
    assert got is not None and np.allclose(got, vecs, atol=0.01)

    class Fp32(_FakeEncoder):
        identity = "fake:1.0|torch|fp32|mean|len64|"  # another precision: the same vectors

    class Other(_FakeEncoder):
        identity = "other:1.0|torch|fp32|mean|len64|"

    assert lookup(leaves, Fp32(), folder=tmp_path) is not None
    assert lookup(leaves, Other(), folder=tmp_path) is None
    assert lookup(leaves[::-1], _FakeEncoder(), folder=tmp_path) is None  # another leaf list
    raw = bytearray((tmp_path / "t.npz").read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / "t.npz").write_bytes(bytes(raw))
    assert lookup(leaves, _FakeEncoder(), folder=tmp_path) is None  # damaged: computed instead


def test_the_shipped_vectors_match_the_shipped_taxonomies() -> None:
    index = json.loads((VECTORS_DIR / "index.json").read_text(encoding="utf-8"))
    keys = {name: leaves_key(Taxonomy.builtin(name).leaves()) for name in BUILTIN}
    seen = set()
    for entry in index:
        name = entry["file"].split("-")[0]
        assert entry["leaves_sha256"] == keys[name]
        assert hashlib.sha256((VECTORS_DIR / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
        seen.add((name, entry["encoder"].split(":")[0]))
    assert seen == {(t, e) for t in BUILTIN for e in ("minilm-en", "e5-multilingual")}


def test_classify_into_google_with_no_file_learns_from_the_shops_categories(tmp_path: Path, capsys,
                                                                               monkeypatch) -> None:
    from .test_bad_inputs import run_cli

    rows = ["title,description,category"]
    for i in range(12):
        rows.append(f"Terracotta Plant Pot {i},Garden pot for plants,"
                    "Home & Garden > Lawn & Garden > Gardening > Pots & Planters")
    for i in range(12):
        rows.append(f"Stone Trough {i},Planter trough for the garden,")
    shop = tmp_path / "shop.csv"
    shop.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, out = run_cli(["classify", str(shop), "--taxonomy", "google", "-o", str(tmp_path / "out.csv")], capsys,
                        monkeypatch)
    assert code == 0, out
    said = " ".join(out.split())
    assert "12 of 24 products already have a category of google: learnt from" in said
    assert "an estimate of this run's accuracy" in said
    import pandas as pd

    got = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert (got["category"].head(12) == "Home & Garden > Lawn & Garden > Gardening > Pots & Planters").all()
    assert (got["category"].tail(12) != "").all()


def test_the_service_answers_each_product_of_a_zero_shot_model_alone() -> None:
    """The micro-batcher pools different clients' requests: a zero-shot model's catalogue adaptation must not
    let one client's products move another's answers."""
    import taxonomist as tx

    tax = Taxonomy.from_paths(["Garden > Pots", "Garden > Stepping Stones", "Kitchen > Mugs", "Kitchen > Teapots"])
    clf = tx.TaxonomyClassifier.from_taxonomy(tax, encoder="minilm-en")
    a = [f"Stone trough planter {i}" for i in range(25)]
    b = ["Ceramic mug", "Cast iron teapot"]
    alone = [clf.predict_products([t], top_k=1)[0].leaf for t in a + b]
    pending = [clf.defer(a, top_k=1)[1], clf.defer(b, top_k=1)[1]]
    served = clf.complete(pending)  # type: ignore[arg-type]
    assert [p.leaf for p in served[0] + served[1]] == alone
    # the same 25 products classified together as one catalogue are adapted to it
    together = clf.predict_proba(a)
    assert not np.allclose(together, clf.proba_of(clf.reader_.texts(a), adapt_to_batch=False)[0])


def test_long_encoding_logs_progress_lines_where_there_is_no_terminal(caplog) -> None:
    import logging

    from taxonomist.encoders.transformer import progress

    with caplog.at_level(logging.INFO, logger="taxonomist.progress"):
        with progress(3000, None, "encoding (x)") as bar:  # pytest's stderr is not a terminal
            for _ in range(3):
                bar.update(1000)
    assert "encoding (x): 3,000 of 3,000 texts" in caplog.text
