"""On-disk datasets: each loader reads a small fixture in its published layout; bad data is
handled as documented; multi-label F1 matches scikit-learn; JSONL and MM-IMDB run through
search and retrain on tiny encoders."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sklearn.metrics import f1_score

from autopmf.cli import main
from autopmf.data.registry import load_dataset
from autopmf.errors import AutopmfError
from autopmf.metrics import f1_scores, loss_fn, score
from tests.conftest import budget_between

SIZE = 16  # image_size the fixtures load at: small and fast


def save_image(path, seed, size=(24, 18)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3))
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def corrupt(path):
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")


# ----- fixtures in the published layouts ----------------------------------------------------
FOOD_CLASSES = ["apple_pie", "baklava", "ramen"]


def make_food101(root, per_class=(4, 2)):
    """images/{train,test}/<class>/<class>_<i>.jpg + texts/{train,test}_titles.csv."""
    for split, count in zip(("train", "test"), per_class):
        rows = []
        for c, name in enumerate(FOOD_CLASSES):
            for i in range(count):
                file_name = f"{name}_{i}.jpg"
                save_image(root / "images" / split / name / file_name, seed=100 * c + i)
                rows.append([file_name, f"best {name.replace('_', ' ')} recipe {i}", name])
        (root / "texts").mkdir(parents=True, exist_ok=True)
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


MOVIES = {  # id -> (genres, plots)
    "0000001": (["Drama", "Romance"], ["A short plot.", "A much longer plot about love."]),
    "0000002": (["Comedy"], ["Jokes."]),
    "0000003": (["Action", "Thriller", "News"], ["Explosions and a chase."]),
    "0000004": (["Horror"], ["A house."]),
    "0000005": (["Drama", "Comedy"], ["A family dinner."]),
    "0000006": (["Sci-Fi", "Action"], ["Robots."]),
    "0000007": (["Documentary"], ["Penguins."]),
    "0000008": (["Comedy", "Romance"], ["A wedding."]),
    "0000009": (["Drama"], ["A trial."]),
    "0000010": (["Thriller"], ["A heist."]),
}
MMIMDB_SPLIT = {"train": ["0000001", "0000002", "0000003", "0000004", "0000005", "0000006"],
                "dev": ["0000007", "0000008"], "test": ["0000009", "0000010"]}


def make_mmimdb(root):
    """split.json + dataset/<id>.jpeg + dataset/<id>.json, as in the published archive."""
    (root / "dataset").mkdir(parents=True)
    for i, (movie, (genres, plots)) in enumerate(MOVIES.items()):
        save_image(root / "dataset" / f"{movie}.jpeg", seed=i)
        (root / "dataset" / f"{movie}.json").write_text(json.dumps(
            {"title": f"Movie {movie}", "genres": genres, "plot": plots}))
    (root / "split.json").write_text(json.dumps(MMIMDB_SPLIT))
    return root


def make_snlive(root):
    """snli_ve_{train,dev,test}.jsonl + flickr30k_images/<id>.jpg; several hypotheses share an
    image; the test file uses the older "Flikr30kID" key."""
    labels = ["entailment", "neutral", "contradiction"]
    for split, image_ids in (("train", [11, 12, 13]), ("dev", [14]), ("test", [15])):
        lines = []
        for image_id in image_ids:
            save_image(root / "flickr30k_images" / f"{image_id}.jpg", seed=image_id)
            for k, label in enumerate(labels):
                key = ({"Flikr30kID": f"{image_id}.jpg"} if split == "test"
                       else {"Flickr30K_ID": str(image_id)})
                lines.append(json.dumps({**key, "sentence1": "a caption",
                                         "sentence2": f"hypothesis {k} about {image_id}",
                                         "gold_label": label,
                                         "pairID": f"{image_id}.jpg#0r1{label[0]}"}))
        (root / f"snli_ve_{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def make_jsonl(root, n_train=24, multilabel=False):
    """train/val/test.jsonl with image paths relative to root, and labels.txt. The label is
    written into the text, so that a model can learn it."""
    names = ["cat", "dog", "bird"]
    root.mkdir(parents=True)
    (root / "labels.txt").write_text("\n".join(names) + "\n")
    for split, n in (("train", n_train), ("val", 6), ("test", 6)):
        lines = []
        for i in range(n):
            image = f"images/{split}_{i}.png"
            save_image(root / image, seed=1000 * len(split) + i)
            label = ([names[i % 3], names[(i + 1) % 3]] if multilabel and i % 2
                     else [names[i % 3]] if multilabel else names[i % 3])
            lines.append(json.dumps({"image": image, "text": f"a photo of a {names[i % 3]}",
                                     "label": label}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


# ----- the loaders ---------------------------------------------------------------------------
def test_food101_reads_the_published_layout(tmp_path):
    root = make_food101(tmp_path / "upmc")
    data = load_dataset(f"food101:{root},image_size={SIZE},val_fraction=0.25")
    assert data.label_names == FOOD_CLASSES and data.metric == "accuracy"
    assert not data.multilabel
    assert len(data.train) + len(data.val) == 12 and len(data.val) == 3 and len(data.test) == 6
    assert data.train.images.shape[1:] == (SIZE, SIZE, 3)
    for split in data.splits().values():  # every text names its class: labels line up
        for text, label in zip(split.texts, split.labels):
            assert FOOD_CLASSES[label].replace("_", " ") in text
    assert sorted(data.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    spec = f"food101:{root},image_size={SIZE},val_fraction=0.25"
    assert load_dataset(spec, seed=0).fingerprint() == data.fingerprint()  # val by seed
    assert load_dataset(spec, seed=1).fingerprint() != data.fingerprint()
    small = load_dataset(spec + ",image_fraction=0.5")  # half of every split's images
    assert [len(s.images) for s in small.splits().values()] == [4, 2, 3]


def test_mmimdb_reads_multi_hot_genres_and_the_published_split(tmp_path):
    data = load_dataset(f"mmimdb:{make_mmimdb(tmp_path / 'mmimdb')},image_size={SIZE}")
    assert len(data.label_names) == 23 and data.multilabel and data.metric == "f1_macro"
    assert [len(s) for s in data.splits().values()] == [6, 2, 2]
    assert data.train.labels.shape == (6, 23) and data.train.labels.dtype == np.float32
    for split, ids in zip(data.splits().values(), MMIMDB_SPLIT.values()):
        for row, movie in enumerate(ids):
            genres, plots = MOVIES[movie]
            on = {data.label_names[j] for j in np.flatnonzero(split.labels[row])}
            assert on == set(genres) - {"News"}  # genres outside the 23 are ignored
            assert split.texts[row] == max(plots, key=len)  # the longest plot summary


def test_snlive_shares_images_between_hypotheses(tmp_path):
    data = load_dataset(f"snlive:{make_snlive(tmp_path / 'snli-ve')},image_size={SIZE}")
    assert data.label_names == ["entailment", "neutral", "contradiction"]
    assert [len(s) for s in data.splits().values()] == [9, 3, 3]
    assert [len(s.images) for s in data.splits().values()] == [3, 1, 1]
    assert data.train.labels.tolist() == [0, 1, 2] * 3
    assert data.test.texts[0] == "hypothesis 0 about 15"


def test_jsonl_and_csv_single_and_multi_label(tmp_path):
    data = load_dataset(f"jsonl:{make_jsonl(tmp_path / 'j')},image_size={SIZE}")
    assert data.label_names == ["cat", "dog", "bird"]
    assert [len(s) for s in data.splits().values()] == [24, 6, 6]
    assert data.train.labels[:4].tolist() == [0, 1, 2, 0]

    multi = load_dataset(f"jsonl:{make_jsonl(tmp_path / 'm', multilabel=True)},"
                         f"multilabel=1,image_size={SIZE}")
    assert multi.multilabel and multi.metric == "f1_macro"
    assert multi.train.labels[:2].tolist() == [[1, 0, 0], [0, 1, 1]]

    root = tmp_path / "c"
    rows = [["image", "text", "label"]]
    for split in ("train", "test"):
        for i in range(4):
            save_image(root / f"{split}{i}.png", seed=i)
            rows.append([f"{split}{i}.png", f"text, with a comma {i}", "x|y" if i % 2 else "y"])
        with open(root / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        rows = rows[:1]
    data = load_dataset(f"csv:{root},multilabel=1,val_fraction=0.25,image_size={SIZE}")
    assert data.label_names == ["x", "y"]  # no labels.txt: the train labels, sorted
    assert len(data.train) + len(data.val) == 4 and len(data.val) == 1
    assert data.test.labels.tolist() == [[0, 1], [1, 1], [0, 1], [1, 1]]
    assert data.test.texts[1] == "text, with a comma 1"


def test_metric_option_follows_the_labels(tmp_path):
    root = make_mmimdb(tmp_path / "mmimdb")
    assert load_dataset(f"mmimdb:{root},metric=f1_micro,image_size={SIZE}").metric == "f1_micro"
    with pytest.raises(AutopmfError, match="does not fit mmimdb's multi-label labels"):
        load_dataset(f"mmimdb:{root},metric=accuracy,image_size={SIZE}")
    with pytest.raises(AutopmfError, match="unknown metric 'auc'"):
        load_dataset(f"mmimdb:{root},metric=auc")


# ----- bad data --------------------------------------------------------------------------
def test_corrupt_images_and_missing_texts_are_counted_and_skipped(tmp_path, capsys):
    root = make_food101(tmp_path / "upmc")
    corrupt(root / "images" / "test" / "ramen" / "ramen_1.jpg")
    (root / "images" / "test" / "baklava" / "baklava_0.jpg").unlink()
    titles = root / "texts" / "test_titles.csv"
    titles.write_text(titles.read_text().replace("best apple pie recipe 1", ""))
    spec = f"food101:{root},image_size={SIZE}"
    data = load_dataset(spec)
    assert len(data.test) == 3 and sorted(data.test.labels.tolist()) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "autopmf: warning: food101 test: skipped 3 of 6 examples (" in err
    assert "unreadable image: 1" in err and "missing image: 1" in err
    assert "missing text: 1" in err
    with pytest.raises(AutopmfError, match=r"test_titles.csv:2: missing text.*without strict"):
        load_dataset(spec + ",strict=1")


def test_text_that_is_not_utf8_is_counted_and_skipped_or_fails_under_strict(tmp_path, capsys):
    root = make_jsonl(tmp_path / "j")
    test_file = root / "test.jsonl"
    lines = test_file.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"a photo of a", b"une photo d\xe9j\xe0")  # Latin-1 bytes
    test_file.write_bytes(b"".join(lines))
    spec = f"jsonl:{root},image_size={SIZE}"
    data = load_dataset(spec)
    assert len(data.test) == 5 and all("\ufffd" not in t and "une" not in t
                                       for t in data.test.texts)
    err = capsys.readouterr().err
    assert "test: skipped 1 of 6 examples (text not UTF-8: 1); first: " in err
    assert f"{test_file}:3: text not UTF-8" in err
    with pytest.raises(AutopmfError, match=r"test.jsonl:3: text not UTF-8 \(re-save"):
        load_dataset(spec + ",strict=1")
    # A label list that is not UTF-8 cannot be skipped around: one line naming the file.
    (root / "labels.txt").write_bytes(b"cat\ndog\nbird\xff\n")
    with pytest.raises(AutopmfError, match=r"labels.txt: not UTF-8 text \(bad byte at offset "
                                           r"12\); re-save it as UTF-8"):
        load_dataset(spec)


def test_corrupt_image_fails_under_strict_naming_the_file(tmp_path):
    root = make_mmimdb(tmp_path / "mmimdb")
    corrupt(root / "dataset" / "0000009.jpeg")
    with pytest.raises(AutopmfError, match=r"0000009.json: unreadable image \(.*0000009.jpeg"):
        load_dataset(f"mmimdb:{root},strict=1,image_size={SIZE}")
    assert len(load_dataset(f"mmimdb:{root},image_size={SIZE}").test) == 1


def test_missing_root_or_split_file_names_the_expected_path(tmp_path):
    with pytest.raises(AutopmfError, match=f"data folder {tmp_path / 'nope'} not found"):
        load_dataset(f"mmimdb:{tmp_path / 'nope'}")
    root = make_mmimdb(tmp_path / "mmimdb")
    (root / "split.json").unlink()
    with pytest.raises(AutopmfError, match=f"split file {root / 'split.json'} not found; "
                                           "expected ROOT/split.json") as info:
        load_dataset(f"mmimdb:{root}")
    assert "\n" not in str(info.value)
    snli = make_snlive(tmp_path / "snli")
    (snli / "snli_ve_dev.jsonl").unlink()
    with pytest.raises(AutopmfError, match="snli_ve_dev.jsonl not found"):
        load_dataset(f"snlive:{snli}")
    with pytest.raises(AutopmfError, match="test_titles.csv not found"):
        food = make_food101(tmp_path / "upmc")
        (food / "texts" / "test_titles.csv").unlink()
        load_dataset(f"food101:{food}")


def test_label_outside_the_label_list_names_file_and_line(tmp_path):
    root = make_jsonl(tmp_path / "j")
    lines = (root / "test.jsonl").read_text().splitlines()
    lines[3] = lines[3].replace('"label": "cat"', '"label": "lion"')
    (root / "test.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(AutopmfError, match=r"test.jsonl:4: label 'lion' is not in the label "
                                           r"list \(.*labels.txt"):
        load_dataset(f"jsonl:{root}")
    snli = make_snlive(tmp_path / "snli")
    train = snli / "snli_ve_train.jsonl"
    train.write_text(train.read_text().replace('"neutral"', '"-"', 1))
    with pytest.raises(AutopmfError, match=r"snli_ve_train.jsonl:2: label '-'"):
        load_dataset(f"snlive:{snli}")


# ----- metrics ---------------------------------------------------------------------------
def test_multilabel_f1_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    for trial in range(5):
        labels = (rng.random((50, 7)) < 0.3).astype(np.float32)
        labels[:, 3] = 0  # a class nobody has: F1 0 by convention (zero_division=0)
        logits = rng.normal(size=(50, 7)).astype(np.float32)
        ours = f1_scores(torch.from_numpy(logits), torch.from_numpy(labels))
        predicted = (logits > 0).astype(int)
        for average in ("macro", "micro"):
            expected = f1_score(labels.astype(int), predicted, average=average, zero_division=0)
            assert ours[f"f1_{average}"] == pytest.approx(expected, abs=1e-9)
            assert score(f"f1_{average}", torch.from_numpy(logits),
                         torch.from_numpy(labels)) == pytest.approx(expected, abs=1e-9)


def test_multilabel_loss_is_binary_cross_entropy():
    logits, labels = torch.randn(4, 3), torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1],
                                                       [0, 1, 0]])
    expected = torch.nn.functional.binary_cross_entropy(logits.sigmoid(), labels)
    assert loss_fn("f1_macro", logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


# ----- end to end on tiny encoders ----------------------------------------------------------
def budget_for(space_name, num_classes):
    """A budget that the largest architecture does not fit and the smallest does."""
    from autopmf.space import load_space

    space = load_space(space_name)
    return budget_between(space, num_classes=num_classes)


def search_and_retrain(data, out, num_classes, extra=(), baselines=False):
    common = ["--epochs", "1", "--quiet", "--threads", "1", "--device", "cpu", *extra]
    assert main(["search", "--space", "tiny", "--data", data, "--out", str(out),
                 "--budget-gb", f"{budget_for('tiny', num_classes):.6f}", "--trials", "3",
                 "--population", "2", *common]) == 0
    assert main(["retrain", "--arch", str(out / "best_arch.yaml"), *common,
                 *([] if baselines else ["--no-baselines"])]) == 0
    return json.loads((out / "retrain" / "metrics.json").read_text())


def predicted_test_split(run, data):
    """`autopmf predict` with the finished run on every pair of the test split of `data`:
    (predicted labels, true labels, label names)."""
    from autopmf.predict import predict
    from autopmf.space import load_space

    test = load_dataset(data, image_size=load_space("tiny").image_size).test
    labels = json.loads((run / "metrics.json").read_text())["label_names"]
    predicted = predict(run, [test.images[i] for i in test.image_index], list(test.texts))
    return [r["label"] for r in predicted], test.labels, labels


def test_search_and_retrain_on_jsonl(tmp_path, capsys):
    root = make_jsonl(tmp_path / "j")
    metrics = search_and_retrain(f"jsonl:{root},image_size=28", tmp_path / "run", 3)
    assert metrics["metric"] == "accuracy" and metrics["label_names"] == ["cat", "dog", "bird"]
    assert metrics["examples"] == {"train": 24, "val": 6, "test": 6}
    # The recorded score is the saved model's accuracy on the test split, pair by pair.
    predicted, truth, labels = predicted_test_split(tmp_path / "run" / "retrain",
                                                    f"jsonl:{root},image_size=28")
    right = sum(p == labels[t] for p, t in zip(predicted, truth))
    assert metrics["test_score"] == pytest.approx(right / 6, abs=1e-6)
    assert yaml.safe_load((tmp_path / "run" / "best_arch.yaml").read_text())["data"] == (
        f"jsonl:{root},image_size=28")


def test_multilabel_mmimdb_through_search_retrain_and_log(tmp_path, capsys):
    root = make_mmimdb(tmp_path / "mmimdb")
    metrics = search_and_retrain(f"mmimdb:{root},image_size=28", tmp_path / "run", 23,
                                 baselines=True)
    assert metrics["metric"] == "f1_macro"
    assert set(metrics["scores"]["test"]) == {"f1_macro", "f1_micro"}
    assert metrics["test_score"] == metrics["scores"]["test"]["f1_macro"]
    # Both F1s are scikit-learn's on what the saved model predicts for the test split.
    predicted, truth, labels = predicted_test_split(tmp_path / "run" / "retrain",
                                                    f"mmimdb:{root},image_size=28")
    hot = np.array([[name in p for name in labels] for p in predicted])
    for average in ("macro", "micro"):
        expected = f1_score(truth > 0.5, hot, average=average, zero_division=0)
        assert metrics["scores"]["test"][f"f1_{average}"] == pytest.approx(expected, abs=1e-6)
    assert set(metrics["baselines"]) == {"text_only", "image_only", "late_fusion"}
    capsys.readouterr()
    assert main(["log", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "best f1_macro" in out and "f1_macro vs memory" in out

    from autopmf.predict import predict  # a set of genres per pair, with a sigmoid each

    result = predict(tmp_path / "run" / "retrain", [np.zeros((30, 20, 3), np.uint8)], ["A plot."])
    assert isinstance(result[0]["label"], list) and len(result[0]["probabilities"]) == 23
    assert all(result[0]["probabilities"][genre] >= 0.5 for genre in result[0]["label"])


def test_metric_flag_reaches_the_search_and_the_retrain(tmp_path, capsys):
    root = make_mmimdb(tmp_path / "mmimdb")
    metrics = search_and_retrain(f"mmimdb:{root},image_size=28", tmp_path / "run", 23,
                                 extra=("--metric", "f1_micro"))
    assert metrics["metric"] == "f1_micro"
    assert metrics["test_score"] == metrics["scores"]["test"]["f1_micro"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["metric"] == "f1_micro"
    assert main(["search", "--space", "tiny", "--data", f"mmimdb:{root}", "--out",
                 str(tmp_path / "bad"), "--budget-gb", "1", "--metric", "accuracy"]) == 2
    assert "does not fit mmimdb's multi-label labels" in capsys.readouterr().err


# ----- preprocessing from the encoders' own configuration ----------------------------------
def test_image_preprocessing_follows_the_encoders_processor_config(tmp_path):
    from transformers import ViTConfig, ViTModel

    from autopmf.encoders.vision import load_hf_vision, tiny_timm_vit

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, image_size=28, patch_size=7)).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2}))  # as ViT-B/16 in21k
    encoder = load_hf_vision(tmp_path, "vit")
    assert encoder.mean == (0.5,) * 3 and encoder.interpolation == "bilinear"
    pixels = encoder.preprocess(np.full((1, 8, 8, 3), 255, np.uint8), 28)
    assert pixels.shape == (1, 3, 28, 28) and torch.allclose(pixels, torch.ones_like(pixels))
    timm_vit = tiny_timm_vit()  # timm's data config: ImageNet statistics, bicubic
    assert timm_vit.interpolation == "bicubic" and timm_vit.mean == (0.485, 0.456, 0.406)


def test_texts_are_truncated_to_max_text_len_and_the_tokenizers_limit(tmp_path):
    from transformers import BertTokenizer

    from autopmf.encoders.text import BertTextEncoder, tiny_bert

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "long", "plot"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"), model_max_length=10)
    encoder = BertTextEncoder(tiny_bert().model, tokenizer, "bert")
    text = "a long long long long long long long long long long long plot"
    assert encoder.tokenize([text], 6)["input_ids"].shape == (1, 6)  # the space's max_text_len
    ids = encoder.tokenize([text], 64)["input_ids"]
    assert ids.shape == (1, 10) and ids[0, -1] == words.index("[SEP]")  # the tokenizer's limit


def test_disk_datasets_load_at_the_space_image_size_unless_the_spec_says(tmp_path):
    root = make_jsonl(tmp_path / "j")
    assert load_dataset(f"jsonl:{root}", image_size=20).train.images.shape[1:3] == (20, 20)
    spec = f"jsonl:{root},image_size={SIZE}"
    assert load_dataset(spec, image_size=20).train.images.shape[1:3] == (SIZE, SIZE)
