from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from taxonomist.datasets import sample_path

from .test_bad_inputs import run_cli


def test_train_evaluate_predict_roundtrip(tmp_path, capsys, monkeypatch) -> None:
    cat = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(800)
    f = tmp_path / "cat.csv"
    cat.to_csv(f, index=False)
    model = tmp_path / "model"
    code, out = run_cli(["train", str(f), "-o", str(model), "--tier", "sparse", "--json", str(tmp_path / "held.json")], capsys, monkeypatch)
    assert code == 0, out
    assert "held-out evaluation" in out and "model saved to" in out
    # each stage's seconds (issue 33: nobody could tell from train's output where the time went)
    assert re.search(r"time: fit [\d.]+ s, evaluate [\d.]+ s, drift reference [\d.]+ s, refit [\d.]+ s", out), out
    held = json.loads((tmp_path / "held.json").read_text())
    assert held["seen_in_training_share"] == 0.0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["metrics"]["macro_f1"] == held["macro_f1"]
    # back-off is on by default: the threshold at 90 % held-out precision is stored and shown
    threshold = held["threshold_at_90_precision"]
    assert 0 < threshold <= 1 and manifest["config"]["min_confidence"] == threshold
    assert f"back off to the parent below confidence {threshold:.2f}" in out
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "m0"), "--tier", "sparse", "--min-confidence", "0",
                         "--n-jobs", "1"], capsys, monkeypatch)
    config = json.loads((tmp_path / "m0" / "manifest.json").read_text())["config"]
    assert code == 0 and config["min_confidence"] == 0 and config["n_jobs"] == 1

    code, out = run_cli(["evaluate", str(model), str(f), "--json", str(tmp_path / "m.json"),
                         "--report", str(tmp_path / "r.html")], capsys, monkeypatch)
    assert code == 0, out
    metrics = json.loads((tmp_path / "m.json").read_text())
    for key in ("accuracy", "macro_f1", "weighted_f1", "hierarchical_f1", "top_level_accuracy", "coverage_at_95_precision", "levels"):
        assert key in metrics
    assert "inflated" in out  # most of these products were in training
    assert (tmp_path / "r.html").stat().st_size > 10_000
    # issue 36: the terminal warned, the HTML showed "titles seen 100 %" beside accuracy 0.99: the same warning
    # heads the report, before any figure
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "class=warning" in page and page.index("inflated") < page.index("<h2>Summary")

    for ext in ("csv", "jsonl", "parquet"):
        out_file = tmp_path / f"pred.{ext}"
        code, out = run_cli(["predict", str(model), str(f), "-o", str(out_file), "--top-k", "2", "--min-confidence", "0.6"],
                            capsys, monkeypatch)
        assert code == 0, out
    pred = pd.read_parquet(tmp_path / "pred.parquet")
    assert len(pred) == 800 and set(pred.columns) >= {"id", "title", "category", "confidence", "backed_off", "alternatives"}
    assert pred["id"].tolist() == cat["id"].tolist()
    assert all(len(a) == 2 for a in pred["alternatives"])
    again = pd.read_json(tmp_path / "pred.jsonl", lines=True, dtype={"id": str})
    assert again["category"].tolist() == pred["category"].tolist()

    code, out = run_cli(["predict", str(model), "--text", "Nike Men Running Shoes", "--explain"], capsys, monkeypatch)
    assert code == 0 and "Footwear" in out


def test_predict_to_stdout_is_machine_readable(saved_sample_model, capsys, monkeypatch) -> None:
    """`-o -` writes JSON Lines to stdout and nothing else there (messages go to stderr), for pipes."""
    import sys

    from taxonomist import cli

    monkeypatch.setattr(sys, "argv", ["taxonomist", "predict", str(saved_sample_model), "--text", "Nike Men Running Shoes",
                                      "--text", "Levis Blue Jeans", "-o", "-"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert not e.value.code
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["title"] for r in rows] == ["Nike Men Running Shoes", "Levis Blue Jeans"]
    assert "Footwear" in rows[0]["category"]


def test_long_work_prints_progress_lines_where_there_is_no_terminal(saved_sample_model, tmp_path, capsys,
                                                                   monkeypatch) -> None:
    """In a CI log or under nohup a progress bar shows nothing: lines say what runs and how far it got."""
    cat = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(300)
    cat.to_csv(tmp_path / "cat.csv", index=False)
    code, out = run_cli(["predict", str(saved_sample_model), str(tmp_path / "cat.csv"), "-o", str(tmp_path / "p.csv"),
                         "--batch-size", "100"], capsys, monkeypatch)
    assert code == 0, out
    assert "reading cat.csv ..." in out and "reading cat.csv: done in" in out
    assert "classifying: 300 / 300" in out


def test_train_refits_on_every_row_after_the_held_out_evaluation(tmp_path, capsys, monkeypatch) -> None:
    """The saved model must see every labelled product: the held-out part is for the figures, not lost."""
    cat = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(600)
    f = tmp_path / "cat.csv"
    cat.to_csv(f, index=False)
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "m"), "--tier", "sparse", "--report",
                         str(tmp_path / "r.html")], capsys, monkeypatch)
    assert code == 0, out
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["training_data"]["n_rows"] == 600
    split = manifest["metrics"]["split"]
    assert split["refit"] is True and split["n_train"] + split["n_test"] == 600 and split["n_test"] > 0
    assert "refitted on all 600 products" in out
    assert "refitted on all 600 products" in (tmp_path / "r.html").read_text()
    # the drift reference (GET /v1/monitor compares served answers with it) is the held-out products'
    reference = manifest["drift_reference"]
    assert reference["source"] == "held-out" and reference["summary"]["n"] == split["n_test"]
    code, out = run_cli(["train", str(f), "-o", str(tmp_path / "kept"), "--tier", "sparse", "--no-refit"],
                        capsys, monkeypatch)
    assert code == 0, out
    kept = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert kept["training_data"]["n_rows"] == kept["metrics"]["split"]["n_train"] < 600
    assert kept["metrics"]["macro_f1"] == manifest["metrics"]["macro_f1"]  # the same evaluation either way


def test_taxonomy_show_and_check(tmp_path, capsys, monkeypatch) -> None:
    tax = tmp_path / "categories.txt"
    tax.write_text("gid://shopify/TaxonomyCategory/aa : Apparel & Accessories\n"
                   "gid://shopify/TaxonomyCategory/aa-1 : Apparel & Accessories > Clothing\n", encoding="utf-8")
    code, out = run_cli(["taxonomy", "show", str(tax)], capsys, monkeypatch)
    assert code == 0 and "2 categories, 1 leaves, depth 2" in out
    code, out = run_cli(["taxonomy", "show", str(tax), "--search", "cloth"], capsys, monkeypatch)
    assert "Apparel & Accessories > Clothing" in out
    cat = tmp_path / "c.csv"
    cat.write_text("title,category\nDress,Apparel & Accessories > Clothing\n", encoding="utf-8")
    code, out = run_cli(["taxonomy", "check", str(tax), str(cat)], capsys, monkeypatch)
    assert code == 0 and "all 1 labels are categories" in out


def test_version_and_help(capsys, monkeypatch) -> None:
    code, out = run_cli(["--version"], capsys, monkeypatch)
    assert code == 0 and "taxonomist 0." in out
    code, out = run_cli(["--help"], capsys, monkeypatch)
    assert code == 0 and "train" in out and "evaluate" in out


def test_debug_shows_traceback(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "taxonomist.cli", "--debug", "predict", str(tmp_path / "x"), "--text", "a"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "BundleError" in proc.stderr


@pytest.mark.slow
def test_demo_end_to_end(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "taxonomist.cli", "demo", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={"COLUMNS": "200", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "macro F1" in proc.stdout and "HTML report:" in proc.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.9
    assert (tmp_path / "model" / "manifest.json").is_file()
    photos = json.loads((tmp_path / "metrics-photos.json").read_text())["modalities"]
    assert photos["with_image"] > 30 and {"text", "image", "fused"} <= set(photos)
    assert "Misclassified products with a photo" in (tmp_path / "report-photos.html").read_text() or \
        photos["image"]["accuracy"] == 1.0


def test_taxonomy_format_option(tmp_path, capsys, monkeypatch) -> None:
    tax = tmp_path / "paths.txt"
    tax.write_text("1 - odd but plain > path\n", encoding="utf-8")
    code, out = run_cli(["taxonomy", "show", str(tax), "--format", "paths"], capsys, monkeypatch)
    assert code == 0 and "2 categories" in out
    code, out = run_cli(["taxonomy", "show", str(tax), "--format", "yaml"], capsys, monkeypatch)
    assert code == 1 and "unknown taxonomy format 'yaml'; choose one of ['auto', 'google', 'shopify', 'bestbuy', 'paths']" in " ".join(out.split())


def test_train_with_taxonomy_skips_unknown_labels_and_keeps_the_tree(tmp_path, capsys, monkeypatch) -> None:
    from tests.conftest import TINY

    cat = tmp_path / "c.csv"
    rows = [f'{i},"{t}",{c}' for i, (t, c) in enumerate(TINY)] + ['99,"Mystery gadget",Gadgets > Unknown']
    cat.write_text("id,title,category\n" + "\n".join(rows) + "\n", encoding="utf-8")
    tax = tmp_path / "tax.txt"
    paths = sorted({c for _, c in TINY}) + ["Apparel > Bottomwear > Shorts"]
    tax.write_text("\n".join(paths) + "\n", encoding="utf-8")
    code, out = run_cli(["train", str(cat), "-o", str(tmp_path / "m"), "--tier", "sparse", "--taxonomy", str(tax), "--test-size", "0"],
                        capsys, monkeypatch)
    assert code == 0, out
    assert "1 rows whose category is not in the taxonomy [skipped] e.g. row 25: 'Gadgets > Unknown'" in " ".join(out.split())
    import taxonomist as tx

    model = tx.load(tmp_path / "m")
    assert ("Apparel", "Bottomwear", "Shorts") in model.taxonomy_  # the whole tree, not only the labels seen
    assert "Gadgets > Unknown" not in model.classes_


def test_predictions_written_as_csv_are_safe_to_open_in_a_spreadsheet(saved_sample_model, tmp_path, capsys,
                                                                      monkeypatch) -> None:
    """Issue 34 row 6: titles beginning = + - @ (or a tab / carriage return) were written verbatim for a
    spreadsheet to run as formulas; OWASP's rule prefixes them with a quote, unless --no-spreadsheet-safe."""
    import pandas as pd

    from .test_bad_inputs import run_cli

    titles = ['=HYPERLINK("http://evil.example","x")', "+1+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "\t=1+1",
              "Nike Men Running Shoes"]
    src = tmp_path / "in.csv"
    pd.DataFrame({"title": titles}).to_csv(src, index=False)
    code, out = run_cli(["predict", str(saved_sample_model), str(src), "-o", str(tmp_path / "out.csv")], capsys,
                        monkeypatch)
    assert code == 0, out
    got = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert all(t[:1] not in "=+-@\t\r" for t in got["title"]), got["title"].tolist()
    assert got["title"].iloc[0] == "'" + titles[0] and got["title"].iloc[-1] == "Nike Men Running Shoes"
    # round trip through our own reader: the quote a spreadsheet hides is dropped, the titles are those read
    import taxonomist as tx

    assert tx.read_catalog(tmp_path / "out.csv").titles == tx.read_catalog(src).titles
    code, out = run_cli(["predict", str(saved_sample_model), str(src), "-o", str(tmp_path / "raw.csv"),
                         "--no-spreadsheet-safe"], capsys, monkeypatch)
    assert code == 0, out
    assert pd.read_csv(tmp_path / "raw.csv", dtype=str, keep_default_na=False)["title"].iloc[0] == titles[0]


def test_global_options_work_after_the_command(tmp_path, capsys, monkeypatch) -> None:
    """Issue 36: `taxonomist predict … --debug` answered "No such option: --debug"."""
    from taxonomist.exceptions import BundleError

    from .test_bad_inputs import run_cli

    with pytest.raises(BundleError):  # --debug lets the error escape with its traceback
        run_cli(["predict", str(tmp_path / "nope"), "--text", "jeans", "--debug"], capsys, monkeypatch)
    code, out = run_cli(["predict", str(tmp_path / "nope"), "--text", "jeans", "--verbose"], capsys, monkeypatch)
    assert code == 1 and "No such option" not in out


def test_classify_queues_what_it_says_under_the_version_it_saves(tiny_encoder_dir, tmp_path, capsys,
                                                                  monkeypatch) -> None:
    """Issue 36: `classify` said 475 queued while the database held 465 (identical products share one item), and
    the items named the model "zero-shot:ours.txt" while /v1/model said v0001."""
    from taxonomist.serving.store import ReviewStore

    from .conftest import TINY
    from .test_bad_inputs import run_cli

    (tmp_path / "ours.txt").write_text("\n".join(sorted({c for _, c in TINY})) + "\n", encoding="utf-8")
    titles = [t for t, _ in TINY] + [TINY[0][0], TINY[1][0]]  # two products listed twice
    (tmp_path / "shop.csv").write_text("id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(titles)),
                                       encoding="utf-8")  # (another id, the same product: one review item)
    code, out = run_cli(["classify", str(tmp_path / "shop.csv"), "--taxonomy", str(tmp_path / "ours.txt"),
                         "--encoder", str(tiny_encoder_dir), "--save", str(tmp_path / "models" / "v0001"),
                         "--review-db", str(tmp_path / "review.db"), "--review-below", "1.0",
                         "-o", str(tmp_path / "out.csv")], capsys, monkeypatch)
    assert code == 0, out
    store = ReviewStore(tmp_path / "review.db")
    pending = store.pending(limit=100)
    store.close()
    flat = " ".join(out.split())
    assert len(pending) == len(TINY) and f"{len(TINY)} review items" in flat, flat
    assert {p["model_version"] for p in pending} == {"v0001"}


def test_the_reading_options_are_parsed_once_into_one_object() -> None:
    from taxonomist.cli.common import CliError, Reading

    r = Reading.of(["title=name"], "a, b", " / ", None, "utf-8", True, "id,name", True, "tab", "Sheet1")
    assert r.catalog_options() == {"delimiter": "\t", "sheet": "Sheet1", "mapping": {"title": "name"},
                                   "label_columns": ["a", "b"], "sep": " / ", "encoding": "utf-8", "header": False,
                                   "columns": ["id", "name"], "strict": True}
    assert Reading.of(with_columns=[Path("x.csv")]).without_columns() == Reading()
    with pytest.raises(CliError, match="--delimiter"):
        Reading.of(delimiter=";;")
    with pytest.raises(CliError, match="--map"):
        Reading.of(["title"])


def test_predict_attributes_fill_a_shop_table_learning_from_its_own_column(saved_sample_model, tmp_path, capsys,
                                                                           monkeypatch) -> None:
    """issue 37: `predict --attributes --fill` on a plain table: the colour column's own values decide between
    learning and reading the words (the command says which), only empty cells are filled, with feed values."""
    sample = pd.read_csv(sample_path("products"), dtype=str, keep_default_na=False).head(400)
    shop = sample[["id", "title", "colour", "gender"]].copy()
    empty = shop.index[::7]
    shop.loc[empty, "colour"] = ""
    shop.to_csv(tmp_path / "shop.csv", index=False)
    code, out = run_cli(["predict", str(saved_sample_model), str(tmp_path / "shop.csv"), "--attributes",
                         "color,gender", "--fill", str(tmp_path / "filled.csv")], capsys, monkeypatch)
    assert code == 0, out
    said = " ".join(out.split())
    assert "color:" in said and "column 'colour'" in said and ("learnt from" in said or "zero-shot:" in said)
    filled = pd.read_csv(tmp_path / "filled.csv", dtype=str, keep_default_na=False)
    kept = filled.index.difference(empty)
    assert (filled.loc[kept, "colour"] == shop.loc[kept, "colour"]).all()  # the shop's own cells untouched
    from taxonomist.attributes import COLORS

    new = filled.loc[empty, "colour"]
    assert (new != "").mean() > 0.7 and set(new[new != ""]) <= set(COLORS)
    changes = pd.read_csv(tmp_path / "filled.changes.csv", dtype=str, keep_default_na=False)
    assert set(changes.loc[changes["column"] == "colour", "action"]) <= {"filled", "kept", "disagree", "no_answer"}
