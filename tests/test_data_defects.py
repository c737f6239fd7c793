"""Issue 19 item 6: defects found when the on-disk loaders met the datasets' published files.
One regression test each (the fixtures are test_datasets.py's)."""

import csv
import json

import numpy as np
import pytest

from autopmf.data.registry import load_dataset
from autopmf.errors import AutopmfError
from tests.test_datasets import SIZE, make_food101, make_jsonl, make_mmimdb, save_image


def test_no_usable_example_names_the_counts_and_the_first_missing_path(tmp_path):
    root = make_food101(tmp_path / "food")
    (root / "images" / "train").rename(root / "images" / "elsewhere")
    for name in ("apple_pie", "baklava", "ramen"):  # the label list is still there, empty
        (root / "images" / "train" / name).mkdir(parents=True)
    with pytest.raises(AutopmfError) as error:
        load_dataset(f"food101:{root},image_size={SIZE}")
    message = str(error.value)
    assert "\n" not in message
    assert "the train split has no usable example" in message
    assert "train+val: 12 found, 12 skipped (missing image: 12), 0 kept" in message
    assert "test: 6 found, 0 skipped, 6 kept" in message
    first = root / "images" / "train" / "apple_pie" / "apple_pie_0.jpg"
    titles = root / "texts" / "train_titles.csv"
    assert f"first missing image: {first} (from {titles}:1)" in message


def rewrite_jsonl(root, change):
    """Every JSONL file under root, each record passed through change(record)."""
    for path in root.glob("*.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps(change(r)) + "\n" for r in records))


def test_jsonl_accepts_mmbts_img_key_and_names_the_keys_found(tmp_path):
    root = make_jsonl(tmp_path / "j")
    plain = load_dataset(f"jsonl:{root},image_size={SIZE}")
    rewrite_jsonl(root, lambda r: {"img": r["image"], "text": r["text"], "label": r["label"]})
    mmbt = load_dataset(f"jsonl:{root},image_size={SIZE}")
    assert np.array_equal(mmbt.train.images, plain.train.images)
    assert mmbt.train.texts == plain.train.texts

    rewrite_jsonl(root, lambda r: {"picture": r["img"], "text": r["text"], "label": r["label"]})
    with pytest.raises(AutopmfError, match=r"train\.jsonl:1: no image path \(keys found: "
                                           r"picture, text, label\); every line needs image "
                                           r"\(or img\), text, label"):
        load_dataset(f"jsonl:{root},image_size={SIZE}")


def write_csv_dataset(root, image_column: str, prefix: str = "") -> None:
    """train.csv and test.csv of 4 rows each (header image_column,text,label), each file
    starting with `prefix` (e.g. a byte-order mark)."""
    for split in ("train", "test"):
        rows = [[image_column, "text", "label"]]
        for i in range(4):
            save_image(root / f"{split}{i}.png", seed=i)
            rows.append([f"{split}{i}.png", f"text {i}", "xy"[i % 2]])
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            f.write(prefix)
            csv.writer(f).writerows(rows)


def test_csv_accepts_an_img_column(tmp_path):
    root = tmp_path / "c"
    write_csv_dataset(root, "img")
    data = load_dataset(f"csv:{root},val_fraction=0.25,image_size={SIZE}")
    assert data.test.texts == [f"text {i}" for i in range(4)]


def food101_with_test_titles(path, *first_rows: str):
    """A Food-101 tree whose test titles file starts with `first_rows` instead."""
    root = make_food101(path)
    titles = root / "texts" / "test_titles.csv"
    lines = titles.read_text().splitlines()
    lines[:len(first_rows)] = first_rows
    titles.write_text("\n".join(lines) + "\n")
    return root


def test_food101_title_with_unquoted_commas_is_kept_whole(tmp_path):
    root = food101_with_test_titles(
        tmp_path / "food", "apple_pie_0.jpg,Apple pie, with cinnamon, and cream,apple_pie",
        'apple_pie_1.jpg,"Apple pie, quoted",apple_pie')
    data = load_dataset(f"food101:{root},image_size={SIZE}")
    assert data.test.texts[:2] == ["Apple pie, with cinnamon, and cream", "Apple pie, quoted"]
    assert data.test.labels[:2].tolist() == [0, 0]


BOM = "\ufeff"


def with_bom(path):
    path.write_text(BOM + path.read_text(encoding="utf-8"), encoding="utf-8")


def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path):
    food = make_food101(tmp_path / "food")
    plain = load_dataset(f"food101:{food},image_size={SIZE}")
    for split in ("train", "test"):
        with_bom(food / "texts" / f"{split}_titles.csv")
    marked = load_dataset(f"food101:{food},image_size={SIZE},strict=1")
    assert marked.test.texts == plain.test.texts and marked.skipped == 0

    root = make_jsonl(tmp_path / "j")  # JSONL, labels.txt
    for path in (*root.glob("*.jsonl"), root / "labels.txt"):
        with_bom(path)
    data = load_dataset(f"jsonl:{root},image_size={SIZE},strict=1")
    assert data.label_names == ["cat", "dog", "bird"] and len(data.train) == 24

    movies = make_mmimdb(tmp_path / "mmimdb")  # split.json and the movie records
    for path in (movies / "split.json", *(movies / "dataset").glob("*.json")):
        with_bom(path)
    data = load_dataset(f"mmimdb:{movies},image_size={SIZE},strict=1")
    assert [len(s) for s in data.splits().values()] == [6, 2, 2]

    table = tmp_path / "c"  # a CSV header
    write_csv_dataset(table, "image", prefix=BOM)
    data = load_dataset(f"csv:{table},val_fraction=0.25,image_size={SIZE},strict=1")
    assert data.test.texts == [f"text {i}" for i in range(4)]


def test_html_entities_are_unescaped_by_default_and_kept_with_unescape_0(tmp_path):
    root = food101_with_test_titles(
        tmp_path / "food", "apple_pie_0.jpg,Mom&#8217;s Apple Pie &amp; Cream,apple_pie")
    assert load_dataset(f"food101:{root},image_size={SIZE}").test.texts[0] == \
        "Mom\u2019s Apple Pie & Cream"
    assert load_dataset(f"food101:{root},image_size={SIZE},unescape=1").test.texts[0] == \
        "Mom\u2019s Apple Pie & Cream"
    assert load_dataset(f"food101:{root},image_size={SIZE},unescape=0").test.texts[0] == \
        "Mom&#8217;s Apple Pie &amp; Cream"

    jsonl = make_jsonl(tmp_path / "j")  # every on-disk loader takes the option
    rewrite_jsonl(jsonl, lambda r: dict(r, text=r["text"] + " &lt;3"))
    texts = load_dataset(f"jsonl:{jsonl},image_size={SIZE}").test.texts
    assert texts[:2] == ["a photo of a cat <3", "a photo of a dog <3"]
    texts = load_dataset(f"jsonl:{jsonl},image_size={SIZE},unescape=0").test.texts
    assert texts[:2] == ["a photo of a cat &lt;3", "a photo of a dog &lt;3"]
    with pytest.raises(AutopmfError, match="unescape must be 1 .* or 0"):
        load_dataset(f"jsonl:{jsonl},image_size={SIZE},unescape=2")
