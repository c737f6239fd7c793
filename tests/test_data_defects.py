"""Issue 19 item 6: defects found when the on-disk loaders met the datasets' published files.
One regression test each (the fixtures are test_datasets.py's)."""

import pytest

from autopmf.data.registry import load_dataset
from autopmf.errors import AutopmfError
from tests.test_datasets import SIZE, make_food101


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
    assert f"first missing image: {first} (from {root / 'texts' / 'train_titles.csv'}:1)" in message
