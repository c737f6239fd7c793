"""Few-shot supernets split on the highest or lowest fused slot, or on whether a subnet fuses
one slot (supernet.few_shot)."""

import argparse
import random
from dataclasses import replace

import pytest
import torch

from autopmf.build import build_backbone
from autopmf.errors import AutopmfError
from autopmf.files import load_tensors
from autopmf.run_dir import run_settings
from autopmf.supernet_train import SupernetConfig, shared_head_subnets, train_supernet
from supernet.few_shot import FewShotSupernet, build_supernet
from supernet.optim import step_used_only
from supernet.sampling import ArchSampler
from supernet.supernet import Supernet
from tests.conftest import make_batch, tiny_space

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module")
def few_shot():
    space = tiny_space()
    torch.manual_seed(0)
    return space, FewShotSupernet(space, build_backbone(space), num_classes=3)


def top_slot_archs(space, top, n=3, seed=0):
    """Subnets whose highest fused slot is `top`."""
    rng, archs = random.Random(seed), []
    while len(archs) < n:
        arch = space.random_arch(rng)
        if max(space.fused_slots(arch), default=None) == top:
            archs.append(arch)
    return archs


def test_every_shot_starts_from_the_same_weights_and_routes_by_the_top_fused_slot(few_shot,
                                                                                  images):
    space, supernet = few_shot
    assert sorted(supernet.shots) == ["0", "1", "2"]
    states = [shot.trainable_state_dict() for shot in supernet.all_shots()]
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in states[0])
    # Backbone shared, not copied: the trainable weights are the shots' own, nothing else.
    assert all(shot.backbone is supernet.backbone for shot in supernet.all_shots())
    assert set(supernet.trainable_state_dict()) == {
        f"shots.{name}.{key}" for name in supernet.shots for key in states[0]}

    nothing = {key: min(values) for key, values in space.choices().items()}
    assert supernet.shot(nothing) is supernet.shots["0"]
    batch = make_batch(supernet.backbone, space, images)
    for top in space.fusable_slots:
        for arch in top_slot_archs(space, top):
            assert supernet.shot(arch) is supernet.shots[str(top)]
            model = supernet.extract(arch)
            with torch.no_grad():
                torch.testing.assert_close(model(batch), supernet.forward_batch(batch, arch),
                                           atol=0, rtol=0)


def test_a_bottom_slot_split_routes_by_the_lowest_fused_slot(images):
    space = tiny_space()
    torch.manual_seed(0)
    supernet = build_supernet(space, build_backbone(space), 3, "bottom-slot")
    assert isinstance(supernet, FewShotSupernet) and sorted(supernet.shots) == ["0", "1", "2"]
    batch = make_batch(supernet.backbone, space, images)
    rng, seen = random.Random(3), set()
    while len(seen) < len(space.fusable_slots):
        arch = space.random_arch(rng)
        fused = space.fused_slots(arch)
        if not fused:
            continue
        seen.add(min(fused))
        assert supernet.shot(arch) is supernet.shots[str(min(fused))]
        with torch.no_grad():
            torch.testing.assert_close(supernet.extract(arch)(batch),
                                       supernet.forward_batch(batch, arch), atol=0, rtol=0)
    # Two subnets with one top slot and different bottoms train different weights.
    assert supernet.shot({**arch, "fusion_0": 1, "fusion_2": 1}) is supernet.shots["0"]
    assert supernet.shot({**arch, "fusion_0": 0, "fusion_1": 1, "fusion_2": 1}) is \
        supernet.shots["1"]


def test_a_slot_split_routes_by_whether_the_subnet_fuses_that_slot(images):
    space = tiny_space()
    torch.manual_seed(0)
    supernet = build_supernet(space, build_backbone(space), 3, "slot-1")
    assert isinstance(supernet, FewShotSupernet) and list(supernet.shots) == ["without", "with"]
    states = [shot.trainable_state_dict() for shot in supernet.all_shots()]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    batch = make_batch(supernet.backbone, space, images)
    rng, seen = random.Random(4), set()
    while len(seen) < 2:
        arch = space.random_arch(rng)
        fuses = 1 in space.fused_slots(arch)
        seen.add(fuses)
        assert supernet.shot(arch) is supernet.shots["with" if fuses else "without"]
        with torch.no_grad():
            torch.testing.assert_close(supernet.extract(arch)(batch),
                                       supernet.forward_batch(batch, arch), atol=0, rtol=0)
    nothing = {key: min(values) for key, values in space.choices().items()}
    assert supernet.shot(nothing) is supernet.shots["without"]


@pytest.mark.parametrize("split", ["slot-3", "slot-", "slot-x", "lowest", "Slot-1"])
def test_a_split_the_space_cannot_take_is_refused_naming_the_fusable_slots(split):
    with pytest.raises(ValueError,
                       match=f"few-shot split '{split}' .*fusable slot \\(0, 1, 2\\)"):
        build_supernet(tiny_space(), build_backbone(tiny_space()), 2, split)


def test_supernet_training_refuses_a_slot_outside_the_space_before_claiming_its_folder(
        tmp_path):
    out = tmp_path / "run"
    with pytest.raises(AutopmfError,
                       match="--few-shot: few-shot split 'slot-5'.*\\(0, 1, 2\\)"):
        train_supernet(tiny_space(), DATA, out, SupernetConfig(epochs=1, few_shot="slot-5"))
    assert not out.exists()


def test_a_step_moves_only_the_routed_shot_and_in_it_only_what_the_subnet_used(images):
    space = tiny_space()
    torch.manual_seed(1)
    supernet = FewShotSupernet(space, build_backbone(space), num_classes=3)
    batch = make_batch(supernet.backbone, space, images)
    labels = torch.tensor([0, 1, 2, 0])
    trainable = [p for p in supernet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)

    def step(arch):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(supernet.forward_batch(batch, arch), labels).backward()
        step_used_only(optimizer, supernet, supernet.used_regions(arch))

    for top in space.fusable_slots:  # momentum and state in every shot
        step(top_slot_archs(space, top, n=1)[0])
    arch = top_slot_archs(space, 1, n=1, seed=5)[0]
    before = supernet.trainable_state_dict()
    before = {k: v.clone() for k, v in before.items()}
    step(arch)
    after = supernet.trainable_state_dict()
    regions = supernet.used_regions(arch)
    moved = set()
    for name, value in after.items():
        unused = torch.ones_like(value, dtype=torch.bool)
        if regions[name] is not None:
            unused[regions[name]] = False
        assert torch.equal(value[unused], before[name][unused]), f"{name} moved where unused"
        if not torch.equal(value, before[name]):
            moved.add(name.split(".")[1])
    assert moved == {"1"}
    assert regions["shots.1.heads.text.weight"] is not None
    assert regions["shots.0.heads.text.weight"] is None


def test_the_heads_fit_reaches_every_shot_with_its_own_subnets():
    space = tiny_space()
    supernet = FewShotSupernet(space, build_backbone(space), num_classes=2)
    sampler = ArchSampler(space, "sandwich", seed=0)  # the sandwich's draws favour slot 2
    groups = shared_head_subnets(sampler, supernet)
    assert [shot for shot, _ in groups] == supernet.all_shots()
    for shot, archs in groups:  # several each (slot 0 alone has three prompt lengths)
        assert len(archs) >= 2 and all(supernet.shot(arch) is shot for arch in archs)
        assert len({str(sorted(a.items())) for a in archs}) == len(archs)


def test_a_few_shot_supernet_trains_resumes_and_gives_its_weights_to_a_retrain(
        tmp_path, cache_dir, monkeypatch):
    from autopmf import cli

    space, out = tiny_space(), tmp_path / "run"
    cfg = SupernetConfig(epochs=1, batch_size=16, lr=5e-3, progress=False,
                         sampling="top-slot", few_shot="top-slot")
    run = train_supernet(space, DATA, out, cfg)
    assert isinstance(run.supernet, FewShotSupernet)
    saved = load_tensors(out / "supernet.safetensors")
    assert all(name.startswith("shots.") for name in saved)
    # Trained apart: after one epoch no two shots hold the same prompts.
    prompts = [saved[f"shots.{j}.fusion.0.text_query"] for j in run.supernet.shots]
    assert not any(torch.equal(a, b) for i, a in enumerate(prompts) for b in prompts[i + 1:])

    again = train_supernet(space, DATA, out, cfg, resume=True)  # finished: loaded as it is
    assert again.metrics["fingerprint"] == run.metrics["fingerprint"]
    arch = space.reference_arch(1, 2)
    expected = run.supernet.extract(arch).trainable_state_dict()
    weights = cli._inherited_weights(out, space, arch, DATA, argparse.Namespace(seed=0))
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in weights)


def test_a_slot_split_trains_its_slot_only_in_the_shot_that_fuses_it(tmp_path, cache_dir):
    space = tiny_space()
    cfg = SupernetConfig(epochs=1, batch_size=16, lr=5e-3, progress=False,
                         sampling="sandwich", distill=True, few_shot="slot-2")
    run = train_supernet(space, DATA, tmp_path / "run", cfg)
    # No epochs: the same supernet as initialised, before any step.
    start = train_supernet(space, DATA, tmp_path / "start", replace(cfg, epochs=0)
                           ).supernet.trainable_state_dict()
    saved = load_tensors(tmp_path / "run" / "supernet.safetensors")
    assert saved.keys() == start.keys()
    for key in ("fusion.2.text_query", "fusion.0.text_query", "heads.text.weight"):
        without, with_ = saved[f"shots.without.{key}"], saved[f"shots.with.{key}"]
        assert not torch.equal(with_, start[f"shots.with.{key}"]), key
        if key.startswith("fusion.2."):  # no subnet of its shot reads slot 2
            assert torch.equal(without, start[f"shots.without.{key}"])
        else:
            assert not torch.equal(without, start[f"shots.without.{key}"]), key
            assert not torch.equal(without, with_), key
    assert run.metrics["config"]["few_shot"] == "slot-2"


def test_the_default_leaves_every_earlier_supernets_fingerprint_as_it_was():
    assert "few_shot" not in run_settings(SupernetConfig())
    assert run_settings(SupernetConfig(few_shot="top-slot"))["few_shot"] == "top-slot"
    assert isinstance(build_supernet(tiny_space(), build_backbone(tiny_space()), 2), Supernet)
    with pytest.raises(ValueError, match="few-shot split 'lowest'"):
        build_supernet(tiny_space(), build_backbone(tiny_space()), 2, "lowest")


def test_cli_few_shot_reaches_the_supernet_config():
    from autopmf.cli import _supernet_config, _UsageError, build_parser

    def config(*extra):
        args = build_parser().parse_args(["supernet", "--space", "tiny", "--data", "digits",
                                          "--out", "x", *extra])
        return _supernet_config(args, tiny_space())
    assert config().few_shot == "none"
    assert config("--few-shot", "top-slot").few_shot == "top-slot"
    assert config("--few-shot", "bottom-slot").few_shot == "bottom-slot"
    assert config("--few-shot", "slot-2").few_shot == "slot-2"
    for wrong in ("lowest", "slot-", "slot-two"):
        with pytest.raises(_UsageError, match=f"invalid choice: '{wrong}' .*slot-J"):
            config("--few-shot", wrong)


def test_every_shots_heads_train_at_the_heads_rate(few_shot):
    from autopmf.train import TrainConfig, param_groups

    space, supernet = few_shot
    rest, heads = param_groups(supernet, TrainConfig(lr=1e-3, head_lr_scale=0.01))
    names = {id(p): n for n, p in supernet.named_parameters()}
    assert heads["lr"] == pytest.approx(1e-5) and rest["lr"] == 1e-3
    assert {names[id(p)] for p in heads["params"]} == {
        n for n in supernet.trainable_state_dict() if ".heads." in n}
    assert len(heads["params"]) == 2 * 2 * len(supernet.shots)  # text and image, w and b
    plain = supernet.shots["0"]
    assert len(param_groups(plain, TrainConfig())[1]["params"]) == 4
