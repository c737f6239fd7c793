import importlib

import numpy as np
import pytest
import torch

from autopmf.build import build_backbone, build_pmf
from autopmf.space import space_from_dict

# Imported before any test captures stderr: huggingface_hub adds a logging handler bound to
# the sys.stderr of the moment it is imported; bound to one test's capsys (closed after that
# test), a later offline-download warning prints "--- Logging error ---" into another test.
importlib.import_module("huggingface_hub.utils.logging")

torch.set_num_threads(1)  # 2-core CI: one thread is faster and steadier for tiny models

TEXTS = ["this is a seven", "the digit shown is not even", "a three or an eight",
         "at most four"]


def tiny_space(**overrides):
    spec = dict(name="tiny", text_encoder="tiny-bert:depth=3",
                image_encoder="tiny-dinov2:depth=4", fusable_slots=[0, 1, 2],
                prompt_lengths=[1, 2, 4], image_size=28, max_text_len=12, batch_size=4)
    spec.update(overrides)
    return space_from_dict(spec)


def budget_between(space, share=0.75, **profile_options) -> float:
    """A training-memory budget (GiB) `share` of the way from the space's smallest design's
    peak to its largest's: at 0.75 the largest does not fit."""
    from autopmf.memory import GIB, load_profile, max_memory_arch, min_memory_arch

    profile = load_profile(space, **profile_options)
    low, high = min_memory_arch(space, profile)[1], max_memory_arch(space, profile)[1]
    return (low + share * (high - low)) / GIB


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One feature/profile cache per test module, shared with its child processes (a module
    may override it, e.g. with one per test)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOPMF_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def space():
    return tiny_space()


@pytest.fixture(scope="session")
def backbone(space):
    return build_backbone(space)


@pytest.fixture(scope="session")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(len(TEXTS), 8, 8, 3), dtype=np.uint8)


def make_batch(backbone, space, images, texts=TEXTS, max_len=None):
    tokens = backbone.text.tokenize(texts, max_len or space.max_text_len)
    return dict(tokens, pixels=backbone.image.preprocess(images[: len(texts)], space.image_size))


@pytest.fixture()
def batch(backbone, space, images):
    return make_batch(backbone, space, images)


def model_for(space, backbone, arch, num_classes=3, seed=0):
    torch.manual_seed(seed)
    return build_pmf(space, arch, backbone, num_classes)
