"""Streaming data and the on-disk frozen-feature cache: images decoded per batch from files,
caches written in shards (resumed after a SIGKILL), stored in the space's precision, and a
clear error when the disk lacks room."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from autopmf import feature_store, train_arch
from autopmf.build import build_backbone
from autopmf.data.images import ImageFiles
from autopmf.data.registry import load_dataset
from autopmf.errors import AutopmfError
from autopmf.feature_shards import MANIFEST, shard_header
from autopmf.feature_store import feature_caches, resolve_mode
from autopmf.features import SlotCaches, build_feature_cache, encode_split
from autopmf.train import TrainConfig
from autopmf.train_arch import train_architecture
from tests.conftest import tiny_space
from tests.test_faults import REPO

SIZE = 20  # the size the fixture images load at
DIGITS = "digits:examples_per_image=1"
TINY_SHARDS = "60000"  # bytes a shard: a batch of 64 tiny-space rows or so, many shards
SHARDS = "*.[0-9][0-9][0-9][0-9][0-9].safetensors"  # the row shards of a cache folder


def write_csv_dataset(root, n_train=40, n_test=12):
    """ROOT/{train,test}.csv and their images, half JPEG and half PNG, two labels; texts that
    name the label, so that something is learnable."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = ["image,text,label"]
        for i in range(n):
            name = f"img/{split}_{i}.{'jpg' if i % 2 else 'png'}"
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            size = (24 + i % 5, 18 + i % 3)  # uneven sizes: resized and cropped at load
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                            ).save(path)
            label = ("cat", "dog")[i % 2]
            rows.append(f"{name},a photo of a {label} number {i},{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def in_memory_twin(dataset):
    """The same dataset with every split's images decoded into a uint8 array."""
    return dataclasses.replace(dataset, **{
        name: dataclasses.replace(split, images=np.asarray(split.images))
        for name, split in dataset.splits().items()})


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPMF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOPMF_SHARD_BYTES", TINY_SHARDS)
    return tmp_path / "cache"


def features_folder(cache_dir):
    folders = list((cache_dir / "features").iterdir())
    assert len(folders) == 1
    return folders[0]


def test_on_disk_images_stream_into_a_disk_cache_equal_to_the_in_memory_one(
        tmp_path, cache, monkeypatch):
    monkeypatch.setenv("AUTOPMF_WORKERS", "1")  # one decoding worker process, as on a server
    space = tiny_space(image_size=SIZE)
    dataset = load_dataset(f"csv:{write_csv_dataset(tmp_path / 'data')},val_fraction=0.25",
                           image_size=SIZE)
    assert all(isinstance(s.images, ImageFiles) for s in dataset.splits().values())
    backbone = build_backbone(space)
    on_disk = feature_caches(space, dataset, backbone, 1, mode="disk")
    assert (features_folder(cache) / MANIFEST).exists()
    reference = in_memory_twin(dataset)
    for name, split in reference.splits().items():
        expected = build_feature_cache(encode_split(split, backbone, space), backbone, 1)
        rows = torch.arange(len(split))
        got, want = on_disk[name].streams(rows), expected.streams(rows)
        assert torch.equal(got.text, want.text) and torch.equal(got.image, want.image)
        assert torch.equal(on_disk[name].labels, expected.labels)
    # A second run reads the finished cache, per batch, without building.
    again = feature_caches(space, dataset, backbone, 1, mode="disk")
    assert torch.equal(again["val"].streams(torch.arange(3)).image,
                       on_disk["val"].streams(torch.arange(3)).image)


def test_training_on_files_scores_as_training_on_the_decoded_arrays(tmp_path, cache,
                                                                     monkeypatch):
    """Same seed, same data, same result: streaming from files through the disk cache gives
    the numbers the in-memory pipeline gives."""
    space = tiny_space(image_size=SIZE, batch_size=8)
    spec = f"csv:{write_csv_dataset(tmp_path / 'data')},val_fraction=0.25"
    cfg = TrainConfig(epochs=2, batch_size=8, progress=False, lr=0.05, head_lr_scale=1)
    arch = space.reference_arch(2, 2)
    streamed = train_architecture(space, arch, spec, tmp_path / "a", cfg, baselines=False,
                                  feature_cache="disk")
    real_load = train_arch.load_dataset
    monkeypatch.setattr(train_arch, "load_dataset",
                        lambda *a, **k: in_memory_twin(real_load(*a, **k)))
    in_memory = train_architecture(space, arch, spec, tmp_path / "b", cfg, baselines=False,
                                   feature_cache="memory")
    for key in ("val_score", "test_score", "history"):
        assert streamed[key] == in_memory[key], key


KILLED_BUILD = """
import os, signal, sys
from autopmf import feature_shards
from autopmf.build import build_backbone
from autopmf.data.registry import load_dataset
from autopmf.feature_store import feature_caches
from tests.conftest import tiny_space

real_write, written = feature_shards.write_shard, []

def write_then_die(path, rows):
    real_write(path, rows)
    written.append(path)
    if len(written) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # killed part-way, like the OOM killer

feature_shards.write_shard = write_then_die
space = tiny_space()
feature_caches(space, load_dataset(sys.argv[1], image_size=space.image_size),
               build_backbone(space), 0, mode="disk")
"""


def test_a_build_killed_part_way_is_resumed_to_the_same_tensors(tmp_path, cache, monkeypatch,
                                                               capsys):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", KILLED_BUILD, DIGITS], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    folder = features_folder(cache)
    assert not (folder / MANIFEST).exists()  # unfinished: never read as a cache
    assert len(list(folder.glob(SHARDS))) == 3
    assert not list(folder.glob(".*.tmp"))  # no partial shard left under its own name

    space = tiny_space()
    dataset = load_dataset(DIGITS, image_size=space.image_size)
    backbone = build_backbone(space)
    from autopmf import feature_shards

    writes = []
    real_write = feature_shards.write_shard
    monkeypatch.setattr(feature_shards, "write_shard",
                        lambda path, rows: (writes.append(path), real_write(path, rows)))
    capsys.readouterr()
    resumed = feature_caches(space, dataset, backbone, 0, mode="disk")
    assert "resuming: 3 of" in capsys.readouterr().out
    total = len(list(folder.glob(SHARDS)))
    assert len(writes) == total - 3  # the finished shards were kept, not written again

    monkeypatch.setenv("AUTOPMF_CACHE", str(tmp_path / "clean"))
    clean = feature_caches(space, dataset, backbone, 0, mode="disk")
    for name in ("train", "val", "test"):
        rows = torch.arange(len(clean[name]))
        a, b = resumed[name].streams(rows), clean[name].streams(rows)
        assert torch.equal(a.text, b.text) and torch.equal(a.image, b.image)
        assert torch.equal(a.text_mask, b.text_mask)


def test_a_bf16_space_stores_its_cache_in_bf16(cache):
    space = tiny_space(precision="bf16")
    dataset = load_dataset(DIGITS, image_size=space.image_size)
    backbone = build_backbone(space)
    caches = feature_caches(space, dataset, backbone, 0, mode="disk")
    folder = features_folder(cache)
    assert json.loads((folder / MANIFEST).read_text())["dtype"] == "bf16"
    dtypes = {shard_header(p)[0] for p in folder.glob(SHARDS)}
    assert dtypes == {torch.bfloat16}
    assert caches["train"].text.dtype == torch.bfloat16
    streams = caches["train"].streams(torch.arange(8))
    assert streams.text.dtype == torch.float32  # handed out as the model computes
    fp32 = build_feature_cache(encode_split(dataset.train, backbone, space), backbone, 0)
    full = fp32.streams(torch.arange(8))
    torch.testing.assert_close(streams.text, full.text, atol=0.05, rtol=1e-2)
    assert caches["train"].nbytes < 0.6 * fp32.nbytes  # half the bytes, plus the mask


def test_too_little_disk_room_is_one_clear_line_before_anything_is_written(cache, monkeypatch):
    space = tiny_space()
    dataset = load_dataset(DIGITS, image_size=space.image_size)
    usage = type("Usage", (), {"total": 10**6, "used": 10**6 - 1000, "free": 1000})
    monkeypatch.setattr(feature_store.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(AutopmfError) as error:
        feature_caches(space, dataset, build_backbone(space), 0, mode="disk")
    message = str(error.value)
    assert "\n" not in message and "needs" in message and "free" in message
    assert "--feature-cache" in message
    assert not list(cache.glob("features/*/*.safetensors"))


def test_feature_cache_off_recomputes_the_same_streams(cache):
    space = tiny_space()
    dataset = load_dataset(DIGITS, image_size=space.image_size)
    backbone = build_backbone(space)
    live = feature_caches(space, dataset, backbone, 0, mode="off")["val"]
    cached = feature_caches(space, dataset, backbone, 0, mode="memory")["val"]
    assert not (cache / "features").exists()  # neither mode writes a cache
    rows = torch.tensor([5, 0, 17, 3])
    for slot in (0, 2):
        a = SlotCaches(live, backbone).at(slot)
        b = SlotCaches(cached, backbone).at(slot)
        assert a.slot == b.slot == slot
        sa, sb = a.streams(rows), b.streams(rows)
        torch.testing.assert_close(sa.text, sb.text, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sa.image, sb.image, atol=1e-5, rtol=1e-5)
    assert torch.equal(live.subset(rows).labels, cached.labels[rows])


def test_auto_is_disk_except_on_cuda_for_images_already_in_memory(tmp_path):
    digits = load_dataset(DIGITS)
    files = load_dataset(f"csv:{write_csv_dataset(tmp_path / 'data', 8, 4)},val_fraction=0.25",
                         image_size=SIZE)
    assert resolve_mode("auto", digits, "cpu") == "disk"
    assert resolve_mode("auto", digits, "cuda") == "off"
    assert resolve_mode("auto", files, "cuda:0") == "disk"
    assert resolve_mode("memory", files, "cuda") == "memory"
    with pytest.raises(AutopmfError, match="--feature-cache"):
        resolve_mode("ram", digits, "cpu")


def test_a_command_parses_a_dataset_once(tmp_path, monkeypatch):
    from autopmf.data import disk
    from autopmf.data.registry import one_load_per_command

    spec = f"csv:{write_csv_dataset(tmp_path / 'data', 8, 4)},val_fraction=0.25"
    checked = []
    real_check = disk.check_image
    monkeypatch.setattr(disk, "check_image", lambda p: (checked.append(p), real_check(p)))
    with one_load_per_command():
        first = load_dataset(spec, image_size=SIZE)
        assert load_dataset(spec, image_size=SIZE) is first  # the search, then its supernet
        assert len(checked) == 12  # each image's header read once
        assert load_dataset(spec, seed=1, image_size=SIZE) is not first
    assert load_dataset(spec, image_size=SIZE) is not first  # a new command loads anew


def test_an_image_that_opens_but_does_not_decode_is_one_line_naming_it(tmp_path, cache,
                                                                       monkeypatch):
    monkeypatch.setenv("AUTOPMF_WORKERS", "1")
    root = write_csv_dataset(tmp_path / "data", 8, 4)
    broken = root / "img" / "train_3.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) - 60])  # the header survives, the pixels do not
    space = tiny_space(image_size=SIZE)
    dataset = load_dataset(f"csv:{root},val_fraction=0.25", image_size=SIZE)  # header only
    with pytest.raises(AutopmfError) as error:
        feature_caches(space, dataset, build_backbone(space), 0, mode="disk")
    assert "\n" not in str(error.value) and "train_3.jpg" in str(error.value)
