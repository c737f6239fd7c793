"""Data: shapes, splits by image, determinism, and the digits task's unimodal ceilings."""

import importlib.util

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from autopmf.data import digits
from autopmf.data.registry import load_dataset
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError

HAS_EASYVQA = importlib.util.find_spec("easy_vqa") is not None
needs_easyvqa = pytest.mark.skipif(
    not HAS_EASYVQA, reason="easy-vqa not installed (pip install --no-deps easy-vqa)"
)


@pytest.fixture(scope="module")
def digits_task() -> digits.DigitsTask:
    # The hardest mix: every family, negated wordings half the time.
    return digits.build(seed=0, family_weights={f: 1.0 for f in digits.FAMILIES},
                        negation=0.5)


@pytest.fixture(scope="module")
def easyvqa() -> Dataset:
    return load_dataset("easyvqa")


def check_well_formed(dataset: Dataset, image_shape: tuple[int, int, int]) -> None:
    for split in dataset.splits().values():
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == image_shape
        assert split.image_index.dtype == np.int64 and split.labels.dtype == np.int64
        assert len(split.texts) == len(split) == len(split.image_index)
        assert all(isinstance(text, str) and text for text in split.texts)
        assert 0 <= split.labels.min() and split.labels.max() < len(dataset.label_names)
        # every stored image is used by some example
        assert set(np.unique(split.image_index)) == set(range(len(split.images)))


def check_no_shared_images(dataset: Dataset) -> None:
    seen: dict[bytes, str] = {}
    for name, split in dataset.splits().items():
        for image in split.images:
            assert seen.setdefault(image.tobytes(), name) == name, f"image in {name} and another"


def test_digits_shapes_and_sizes(digits_task):
    dataset = digits_task.dataset
    check_well_formed(dataset, (8, 8, 3))
    assert dataset.label_names == ["false", "true"] and dataset.metric == "accuracy"
    # 1,797 images split 60/20/20; ~4 examples per split image
    assert 2500 < len(dataset.train) < 5000 and 1000 < len(dataset.test) < 2000
    image = dataset.train.images[0]
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()


def test_digits_splits_by_image_and_covers_every_digit(digits_task):
    check_no_shared_images(digits_task.dataset)
    for name, image_digits in digits_task.image_digits.items():
        assert set(image_digits.tolist()) == set(range(10)), name


def test_digits_labels_balanced(digits_task):
    for split in digits_task.dataset.splits().values():
        assert abs(split.labels.mean() - 0.5) < 0.01


def test_digits_predicate_pool_closed_under_negation():
    for family in digits.FAMILIES:
        pool = digits.predicate_pool(family)
        assert {(p.args, not p.negated) for p in pool} == {(p.args, p.negated) for p in pool}
        for predicate in pool:  # every predicate is true of some digit and false of another
            assert 0 < sum(digits.holds(predicate, d) for d in range(10)) < 10


def test_digits_oracle_labels(digits_task):
    """Knowing the true digit and parsing the statement gives every label (accuracy 1.0)."""
    meaning_of = digits.all_statements()  # also checks no statement is ambiguous
    for name, split in digits_task.dataset.splits().items():
        image_digits = digits_task.image_digits[name]
        for text, row, label, predicate in zip(
            split.texts, split.image_index, split.labels, digits_task.predicates[name]
        ):
            assert meaning_of[text] == predicate
            assert digits.holds(predicate, int(image_digits[row])) == bool(label)
    families = {p.family for p in digits_task.predicates["train"]}
    assert families == set(digits.FAMILIES)


def test_digits_text_only_and_image_only_are_at_chance(digits_task):
    train, test = digits_task.dataset.train, digits_task.dataset.test
    words = CountVectorizer(ngram_range=(1, 2)).fit(train.texts)
    text_only = LogisticRegression(max_iter=2000).fit(words.transform(train.texts), train.labels)
    assert text_only.score(words.transform(test.texts), test.labels) <= 0.55

    def pixels(split):
        return split.images[split.image_index, :, :, 0].reshape(len(split), -1) / 255.0

    image_only = LogisticRegression(max_iter=2000).fit(pixels(train), train.labels)
    assert image_only.score(pixels(test), test.labels) <= 0.55


def test_digits_deterministic_by_seed(digits_task):
    mix = "digits:identity=1,parity=1,comparison=1,membership=1,negation=0.5"
    assert load_dataset(mix, seed=0).fingerprint() == digits_task.dataset.fingerprint()
    assert load_dataset(mix, seed=1).fingerprint() != digits_task.dataset.fingerprint()
    assert load_dataset("digits", seed=0).fingerprint() == load_dataset(
        "digits:identity=1,negation=0", seed=0).fingerprint()  # the documented default


def test_digits_spec_options():
    dataset = load_dataset("digits:examples_per_image=2,identity=1")
    assert 1000 < len(dataset.train) < 2500
    meaning_of = digits.all_statements()
    assert {meaning_of[text].family for text in dataset.train.texts} == {"identity"}


@needs_easyvqa
def test_easyvqa_counts(easyvqa):
    check_well_formed(easyvqa, (64, 64, 3))
    assert len(easyvqa.label_names) == 13 and easyvqa.label_names == sorted(easyvqa.label_names)
    assert len(easyvqa.train) + len(easyvqa.val) == 38575 and len(easyvqa.test) == 9673
    assert [len(s.images) for s in easyvqa.splits().values()] == [3600, 400, 1000]
    check_no_shared_images(easyvqa)


@needs_easyvqa
def test_easyvqa_deterministic_by_seed_and_subset_options():
    spec = "easyvqa:max_questions_per_image=2,image_fraction=0.1"
    small = load_dataset(spec, seed=0)
    assert [len(s.images) for s in small.splits().values()] == [360, 40, 100]
    assert np.bincount(small.train.image_index).max() <= 2
    assert load_dataset(spec, seed=0).fingerprint() == small.fingerprint()
    assert load_dataset(spec, seed=1).fingerprint() != small.fingerprint()


def test_easyvqa_missing_data_names_the_fix(tmp_path):
    with pytest.raises(AutopmfError, match="pip install --no-deps easy-vqa"):
        load_dataset(f"easyvqa:{tmp_path}")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mnist", "known: digits, easyvqa"),
        ("digits:colour=red", "accepts examples_per_image"),
        ("digits:examples_per_image=many", "must be a number"),
        ("digits:examples_per_image=0", "examples_per_image must be"),
        ("digits:/some/path", "takes no path"),
    ],
)
def test_bad_specs_raise_user_errors(spec, message):
    with pytest.raises(AutopmfError, match=message):
        load_dataset(spec)
