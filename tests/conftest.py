from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import taxonomist as tx
from taxonomist.datasets import sample_path

from .live_server import LiveServer
from .postgres import new_database, postgres_cluster

TINY = [
    ("Levis Men Blue Slim Jeans", "Apparel > Bottomwear > Jeans"),
    ("Wrangler Women Black Skinny Jeans", "Apparel > Bottomwear > Jeans"),
    ("Pepe Jeans Men Grey Denim Jeans", "Apparel > Bottomwear > Jeans"),
    ("Flying Machine Men Indigo Jeans", "Apparel > Bottomwear > Jeans"),
    ("Nike Men Red Printed T-shirt", "Apparel > Topwear > Tshirts"),
    ("Puma Women White Polo T-shirt", "Apparel > Topwear > Tshirts"),
    ("Adidas Men Black Round Neck T-shirt", "Apparel > Topwear > Tshirts"),
    ("United Colors of Benetton Men Green T-shirt", "Apparel > Topwear > Tshirts"),
    ("Arrow Men Checked Formal Shirt", "Apparel > Topwear > Shirts"),
    ("Van Heusen Men White Formal Shirt", "Apparel > Topwear > Shirts"),
    ("Louis Philippe Men Blue Striped Shirt", "Apparel > Topwear > Shirts"),
    ("Peter England Men Navy Casual Shirt", "Apparel > Topwear > Shirts"),
    ("Nike Men Running Sports Shoes", "Footwear > Shoes > Sports Shoes"),
    ("Adidas Women Training Sports Shoes", "Footwear > Shoes > Sports Shoes"),
    ("Reebok Men Black Running Shoes", "Footwear > Shoes > Sports Shoes"),
    ("Asics Men Gel Sports Shoes", "Footwear > Shoes > Sports Shoes"),
    ("Bata Women Brown Flats", "Footwear > Flats > Flats"),
    ("Catwalk Women Gold Ballerina Flats", "Footwear > Flats > Flats"),
    ("Rocia Women Pink Flats", "Footwear > Flats > Flats"),
    ("Carlton London Women Black Flats", "Footwear > Flats > Flats"),
    ("Titan Men Silver Analog Watch", "Accessories > Watches > Watches"),
    ("Fastrack Women Black Digital Watch", "Accessories > Watches > Watches"),
    ("Casio Men Steel Chronograph Watch", "Accessories > Watches > Watches"),
    ("Timex Women Rose Gold Watch", "Accessories > Watches > Watches"),
]


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory):
    """One cache folder per test session (embeddings, the rebuilt e5 model): never the user's own cache."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, cache_root) -> None:
    for k in list(os.environ):
        if k.startswith("TAXONOMIST_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("TAXONOMIST_CACHE_DIR", str(cache_root))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random-initialised BERT + WordPiece tokenizer saved as a Hugging Face folder (fast stand-in for
    a pretrained encoder: the code paths are the same, the embeddings are not meaningful)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = sorted({w.lower() for t, c in TINY for w in (t + " " + c).replace(">", " ").split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    folder = tmp_path_factory.mktemp("tiny-bert")
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    import torch

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": [str(i) for i in range(len(TINY))], "title": [t for t, _ in TINY],
                         "category": [c for _, c in TINY]})


@pytest.fixture
def tiny_catalog(tiny_frame: pd.DataFrame) -> tx.Catalog:
    return tx.Catalog.from_frame(tiny_frame, require_labels=True)


@pytest.fixture(scope="session")
def tiny_model() -> tx.TaxonomyClassifier:
    df = pd.DataFrame({"title": [t for t, _ in TINY], "category": [c for _, c in TINY]})
    return tx.TaxonomyClassifier(tier="sparse").fit(df)


@pytest.fixture(scope="session")
def sample_catalog() -> tx.Catalog:
    return tx.read_catalog(sample_path("products"), require_labels=True)


@pytest.fixture(scope="session")
def sample_split(sample_catalog: tx.Catalog) -> tuple[tx.Catalog, tx.Catalog]:
    return tx.split_catalog(sample_catalog, test_size=0.2, seed=0)


@pytest.fixture(scope="session")
def sample_model(sample_split: tuple[tx.Catalog, tx.Catalog]) -> tx.TaxonomyClassifier:
    return tx.TaxonomyClassifier(tier="sparse").fit(sample_split[0])


@pytest.fixture(scope="session")
def saved_sample_model(sample_model: tx.TaxonomyClassifier, tmp_path_factory: pytest.TempPathFactory):
    return sample_model.save(tmp_path_factory.mktemp("bundle") / "model")


# -- a live `taxonomist serve` process (tests/live_server.py) ----------------------------------------------
@pytest.fixture(scope="session")
def live_store(saved_sample_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("live") / "models"
    shutil.copytree(saved_sample_model, store / "v0001")
    return store


@pytest.fixture(scope="session")
def live_server(live_store: Path, tmp_path_factory: pytest.TempPathFactory, tiny_encoder_dir: Path):
    from taxonomist.apps import MessageRouter, SearchIndex
    from taxonomist.apps.profiles import ProfileStore, read_events, synthetic_events

    d = tmp_path_factory.mktemp("fuzz")
    images = d / "images"
    images.mkdir()
    reviews = pd.read_csv(sample_path("reviews_zh"), dtype=str, keep_default_na=False)
    router = MessageRouter.fit(reviews["title"].tolist(), reviews["category"].tolist(), reviews["sentiment"].tolist())
    router.save(d / "router")  # so the fuzzing reaches /v1/messages/route, /v1/search and /v1/users too
    products = tx.read_catalog(sample_path("products"))
    SearchIndex.build(products, d / "search", encoder=str(tiny_encoder_dir))
    ProfileStore.fit(read_events(synthetic_events(products, n_users=30)), catalog=products).save(d / "profiles")
    with LiveServer(live_store, d / "review.db", d / "server.log", review_threshold=0.6, image_root=images,
                    audit_rate=0.0, router_dir=d / "router", search_dir=d / "search",
                    profiles_dir=d / "profiles") as server:
        yield server




# -- one local Ray instance for the whole test session (started on first use, dashboard off) -----------------
@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)
    yield ray
    ray.shutdown()


# -- a real PostgreSQL (tests/postgres.py) ------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server():
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_ref(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a review store lives, once per backend: a SQLite file, and a new database on a real PostgreSQL
    (skipped where PostgreSQL is not installed)."""
    if request.param == "sqlite":
        return tmp_path / "review.db"
    server = request.getfixturevalue("postgres_server")
    if server is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    pytest.importorskip("psycopg")
    return new_database(server)


def synonym_catalog(n_per: int = 40, seed: int = 0, root: Path | None = None, informative: bool = False) -> pd.DataFrame:
    """Six categories whose titles name them in one of ten words mostly spelt unlike each other (one title in
    twenty names none): words a sentence encoder relates and character n-grams mostly do not. With ``root``,
    each product has a photo there whose colour is drawn at random, whatever the category (photos that cannot
    help); ``informative``: the colour is the category's and half the titles do not name it."""
    rng = np.random.default_rng(seed)
    words = {"Apparel > Jeans": ["jeans", "denims", "jeggings", "levis 501", "bootcut", "mom fit", "flares",
                                 "selvedge", "dungarees", "capri"],
             "Apparel > Shirts": ["shirt", "blouse", "button-down", "oxford", "flannel", "tunic", "polo", "chambray",
                                  "henley", "camisole"],
             "Kitchen > Kettles": ["kettle", "teapot", "samovar", "water boiler", "gooseneck", "hot water jug",
                                   "tea maker", "stovetop whistler", "cezve", "percolator"],
             "Home > Pillows": ["pillow", "cushion", "bolster", "pillowcase", "headrest", "duvet", "eiderdown",
                                "throw", "beanbag", "futon"],
             "Tools > Drills": ["drill", "impact driver", "rotary hammer", "auger", "gimlet", "bradawl", "jigsaw",
                                "router", "sander", "angle grinder"],
             "Books > Novels": ["novel", "paperback", "thriller", "fiction", "whodunit", "saga", "romance", "memoir",
                                "anthology", "bestseller"]}
    generic = ["classic", "new", "premium", "basic", "grey", "large", "gift", "pack", "blue", "deluxe"]
    rows = []
    for c, (cat, names) in enumerate(words.items()):
        for i in range(n_per):
            title = " ".join(rng.choice(generic, 2, replace=False))
            if rng.random() < (0.5 if informative else 0.95):
                title = f"{title} {rng.choice(names)}"
            row = {"id": f"{c}-{i}", "title": title, "category": cat}
            colour = (c * 40, 255 - c * 40, (c * 97) % 255) if informative else rng.integers(0, 255, 3)
            if root is not None:
                row["image"] = f"{c}-{i}.jpg"
                Image.new("RGB", (40, 60), tuple(int(v) for v in colour)).save(root / row["image"], format="JPEG")
            rows.append(row)
    return pd.DataFrame(rows)
