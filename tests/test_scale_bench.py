"""bench/scale.py: its synthetic data is what the food101 loader reads, and one tiny run of
`autopmf search` on it yields every figure the benchmark records."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from scale import run_one  # noqa: E402
from scale_data import NUM_CLASSES, class_names, count_images, generate  # noqa: E402

from autopmf.data.registry import load_dataset  # noqa: E402


def test_generated_data_is_read_by_the_food101_loader(tmp_path):
    root = generate(tmp_path / "food", 150, seed=3)
    assert count_images(root) == 150
    data = load_dataset(f"food101:{root},image_size=16")
    assert data.label_names == class_names() and len(data.label_names) == NUM_CLASSES
    assert sum(len(split) for split in data.splits().values()) == 150
    assert 0 < len(data.test) < len(data.train) + len(data.val)
    assert all("recipe" in text for text in data.train.texts)
    marker = (root / "generated.json").stat().st_mtime_ns
    assert generate(root, 150, seed=3) == root  # reused, not written again
    assert (root / "generated.json").stat().st_mtime_ns == marker


def test_a_tiny_run_records_every_figure(tmp_path):
    row = run_one(ROOT, 60, tmp_path, threads=1, cap_gib=8, timeout_min=5, space="tiny")
    assert row["status"] == "ok", row.get("stderr_tail")
    assert row["images"] == 60
    for key in ("peak_rss_gib", "peak_pss_gib", "peak_rss_anon_gib", "peak_rss_file_gib",
                "cache_bytes", "images_per_s", "seconds_per_supernet_epoch"):
        assert row[key] > 0, key
    assert row["peak_rss_gib"] < 8
    # Each part's peak is at most the whole's (read a moment apart: a little slack).
    assert max(row["peak_rss_anon_gib"], row["peak_rss_file_gib"]) <= row["peak_rss_gib"] + 0.05
