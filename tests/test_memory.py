import argparse
import json

import pytest
import torch

from autopmf.build import build_backbone
from autopmf.errors import AutopmfError
from autopmf.memory import build_profile, check_budget, estimate_bytes, load_profile
from autopmf.memory.estimator import format_bytes, min_memory_arch
from autopmf.memory.cli import add_measure_parser, stratified_sample
from autopmf.memory.measure import measure_full_finetune_bytes, measure_peak_bytes
from tests.conftest import tiny_space

SPACE = tiny_space()


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(SPACE)


@pytest.fixture(scope="module")
def profile(backbone):
    return build_profile(SPACE, backbone, "cpu")


def arch_with(fused: dict[int, int]):
    """Tiny-space architecture fusing slot -> prompt length."""
    arch = SPACE.reference_arch(0, 1)
    for slot, length in fused.items():
        arch[f"fusion_{slot}"], arch[f"prompt_{slot}"] = 1, length
    return SPACE.validate(arch)


def test_estimate_grows_when_a_lower_slot_fuses(profile):
    top_only = estimate_bytes(SPACE, arch_with({2: 2}), profile)
    assert estimate_bytes(SPACE, arch_with({1: 1, 2: 2}), profile) > top_only
    assert estimate_bytes(SPACE, arch_with({0: 1, 2: 2}), profile) > estimate_bytes(
        SPACE, arch_with({1: 1, 2: 2}), profile)
    assert top_only > estimate_bytes(SPACE, arch_with({}), profile)


def test_estimate_grows_with_prompt_length(profile):
    sizes = [estimate_bytes(SPACE, arch_with({1: m, 2: 1}), profile) for m in (1, 2, 4)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_estimate_does_not_depend_on_weight_values(backbone, profile):
    other = build_backbone(tiny_space(text_encoder="tiny-bert:depth=3,seed=5"))
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-3.0).add_(1.0)
    rebuilt = build_profile(SPACE, other, "cpu")
    assert rebuilt.to_json() == profile.to_json()
    arch = arch_with({0: 4, 2: 1})
    assert estimate_bytes(SPACE, arch, rebuilt) == estimate_bytes(SPACE, arch, profile)


@pytest.mark.parametrize("fused", [{}, {2: 1}, {1: 4}, {0: 2, 2: 4}, {0: 1, 1: 1, 2: 1}])
def test_estimate_matches_a_measured_step(backbone, profile, fused):
    arch = arch_with(fused)
    measured = measure_peak_bytes(SPACE, arch, backbone)
    assert abs(estimate_bytes(SPACE, arch, profile) - measured) <= 0.03 * measured


def test_full_finetune_estimate_matches_a_measured_step(backbone, profile):
    measured = measure_full_finetune_bytes(SPACE, backbone)
    assert abs(profile.full_finetune - measured) <= 0.03 * measured
    assert not any(p.requires_grad for p in backbone.parameters())  # frozen again


def test_measurement_is_real(backbone):
    arch = arch_with({1: 2})
    small = measure_peak_bytes(SPACE, arch, backbone)
    big = measure_peak_bytes(tiny_space(batch_size=16), arch, backbone)
    assert big > small * 1.5  # activations scale with the batch; the weights do not


def test_budget_that_nothing_fits_says_what_is_needed(profile):
    arch, nbytes = min_memory_arch(SPACE, profile)
    assert SPACE.fused_slots(arch) == []
    assert check_budget(SPACE, nbytes, profile) == (arch, nbytes)
    with pytest.raises(AutopmfError) as err:
        check_budget(SPACE, nbytes - 1, profile)
    message = str(err.value)
    assert "\n" not in message
    assert format_bytes(nbytes) in message and "no slot fused" in message
    assert "batch_size" in message and "budget" in message


def test_cuda_prediction_adds_allocator_granule_and_workspaces(backbone, profile):
    cuda = build_profile(SPACE, backbone, "cuda")
    arch = arch_with({1: 2, 2: 2})
    assert estimate_bytes(SPACE, arch, cuda) > estimate_bytes(SPACE, arch, profile) + 2**20
    assert cuda.full_finetune > profile.full_finetune


def test_profile_cache_round_trip(tmp_path, monkeypatch, backbone, profile):
    monkeypatch.setenv("AUTOPMF_CACHE", str(tmp_path))
    built = load_profile(SPACE, "cpu", backbone=backbone)
    assert list(tmp_path.rglob("*.json"))
    cached = load_profile(SPACE, "cpu")  # no backbone: must come from the cache
    assert cached == built and cached.to_json() == profile.to_json()


def test_samples_span_first_fused_slots():
    archs = stratified_sample(SPACE, 8, seed=0)
    assert len({tuple(sorted(a.items())) for a in archs}) == 8
    firsts = {min(SPACE.fused_slots(a), default=None) for a in archs}
    assert firsts == {0, 1, 2, None}


def test_measure_command_prints_one_json_object(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOPMF_CACHE", str(tmp_path))
    parser = argparse.ArgumentParser()
    add_measure_parser(parser.add_subparsers())
    args = parser.parse_args(["measure", "--space", "tiny", "--samples", "3", "--json",
                              "--device", "cpu"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    summary = report["summary"]
    assert summary["n"] == 3 and summary["max_rel_err"] <= 0.03
    assert 0 <= summary["median_rel_err"] <= summary["max_rel_err"]


def test_reference_within_budget_is_the_most_top_slots_then_the_longest_prompts(profile):
    from autopmf.memory import reference_within_budget

    space = tiny_space()
    lengths = sorted(space.prompt_lengths)
    n_slots = len(space.fusable_slots)
    two_short = estimate_bytes(space, space.reference_arch(2, lengths[0]), profile)
    arch, nbytes = reference_within_budget(space, two_short, profile)
    assert arch == space.reference_arch(2, lengths[0]) and nbytes == two_short
    if n_slots > 2:  # the next more-fused design must not have fit
        assert estimate_bytes(space, space.reference_arch(3, lengths[0]), profile) > two_short
    roomy = estimate_bytes(space, space.reference_arch(n_slots, lengths[-1]), profile)
    assert reference_within_budget(space, roomy, profile)[0] == space.reference_arch(
        n_slots, lengths[-1])
    top_only = estimate_bytes(space, space.reference_arch(1, lengths[0]), profile)
    assert reference_within_budget(space, top_only - 1, profile) is None
