"""The weight-sharing supernet: extraction, entanglement, masked steps, cache, resume, DDP."""

import json
import os
import random
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from autopmf import supernet_train
from autopmf.build import build_backbone
from autopmf.errors import AutopmfError
from autopmf.features import build_feature_cache
from autopmf.files import load_tensors
from autopmf.supernet_train import SupernetConfig, train_supernet
from supernet.optim import step_used_only
from supernet.sampling import ArchSampler, largest_arch, reference_subnets, smallest_arch
from supernet.supernet import Supernet
from tests.conftest import TEXTS, make_batch, tiny_space

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module", params=["shared", "split"])
def setup(request):
    if request.param == "shared":
        space = tiny_space()
    else:
        space = tiny_space(prompt_mode="split", prompt_lengths=[0, 1, 3],
                           mapping_hidden=[8, 16])
    backbone = build_backbone(space)
    torch.manual_seed(0)
    return space, backbone, Supernet(space, backbone, num_classes=3)


def random_archs(space, n=6, seed=0):
    rng = random.Random(seed)
    return [largest_arch(space), smallest_arch(space)] + [
        space.random_arch(rng) for _ in range(n)]


def test_extract_gives_exactly_the_supernets_output(setup, images):
    space, backbone, supernet = setup
    batch = make_batch(backbone, space, images)
    for arch in random_archs(space):
        model = supernet.extract(arch)
        own = {n for n, p in model.named_parameters() if p.requires_grad}
        assert own <= set(supernet.trainable_state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model(batch), supernet.forward_batch(batch, arch),
                                       atol=0, rtol=0)


def test_subnets_share_their_first_prompt_rows(setup):
    space, _, supernet = setup
    key = "prompt_2" if space.prompt_mode == "shared" else "qp_2"
    short, long = largest_arch(space), largest_arch(space)
    short[key] = min(v for v in space.choices()[key])
    a, b = supernet.extract(short), supernet.extract(long)
    m = a.fusion["2"].text_query.shape[0]
    assert m < b.fusion["2"].text_query.shape[0]
    torch.testing.assert_close(a.fusion["2"].text_query, b.fusion["2"].text_query[:m])
    torch.testing.assert_close(a.fusion["2"].image_query, b.fusion["2"].image_query[:m])


def test_a_step_moves_only_what_the_subnet_used(setup, images):
    space, backbone, _ = setup
    torch.manual_seed(1)
    supernet = Supernet(space, backbone, num_classes=3)
    batch = make_batch(backbone, space, images)
    labels = torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.AdamW(
        [p for p in supernet.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)

    def step(arch):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(supernet.forward_batch(batch, arch), labels)
        loss.backward()
        step_used_only(optimizer, supernet, supernet.used_regions(arch))

    step(largest_arch(space))  # leaves momentum and state in every row
    arch = smallest_arch(space)
    before = {n: p.detach().clone() for n, p in supernet.named_parameters() if p.requires_grad}
    step(arch)
    regions = supernet.used_regions(arch)
    for name, p in supernet.named_parameters():
        if not p.requires_grad:
            continue
        unused = torch.ones_like(p, dtype=torch.bool)
        if regions[name] is not None:
            unused[regions[name]] = False
        assert torch.equal(p[unused], before[name][unused]), f"{name} moved where unused"
        if regions[name] is not None and p[~unused].numel():
            assert not torch.equal(p[~unused], before[name][~unused]), f"{name} did not move"


def test_cached_path_gives_the_same_loss_as_the_uncached_path(setup, images):
    space, backbone, supernet = setup
    batch = make_batch(backbone, space, images)
    encoded = encode_split_of(backbone, space, images)
    cache = build_feature_cache(encoded, backbone, supernet.lowest_fusable_slot)
    labels = torch.tensor([0, 1, 2, 0])
    rows = torch.arange(len(labels))
    for arch in random_archs(space, n=3, seed=5):
        direct = torch.nn.functional.cross_entropy(supernet.forward_batch(batch, arch), labels)
        cached = torch.nn.functional.cross_entropy(
            supernet(cache.streams(rows), cache.slot, arch), labels)
        torch.testing.assert_close(cached, direct, atol=1e-6, rtol=1e-6)


def encode_split_of(backbone, space, images, texts=TEXTS):
    """The split of `make_batch`'s examples (one image each), encoded as training reads it."""
    from autopmf.data.types import Split
    from autopmf.features import encode_split
    n = len(texts)
    split = Split(images[:n], np.arange(n), list(texts), np.zeros(n, dtype=np.int64))
    return encode_split(split, backbone, space)


def test_sampler_is_a_function_of_seed_and_step():
    space = tiny_space()
    a, b = ArchSampler(space, "sandwich", seed=3), ArchSampler(space, "sandwich", seed=3)
    assert [a.sample(s) for s in range(9)] == [b.sample(s) for s in reversed(range(9))][::-1]
    assert a.sample(0) == space.canonical(largest_arch(space))
    assert a.sample(1) == space.canonical(smallest_arch(space))
    uniform = ArchSampler(space, "uniform", seed=0)
    assert len({tuple(uniform.sample(s).values()) for s in range(30)}) > 5
    off_0 = ArchSampler(space, "uniform", seed=0, fit=lambda arch: {**arch, "fusion_0": 0})
    assert all(off_0.sample(s)["fusion_0"] == 0 for s in range(20))


@pytest.mark.parametrize("rule, edge", [("top-slot", max), ("bottom-slot", min)])
def test_edge_slot_sampling_draws_every_highest_or_lowest_fused_slot_alike(rule, edge):
    space = tiny_space()
    sampler = ArchSampler(space, rule, seed=0)
    draws = [sampler.sample(s) for s in range(400)]
    edges = [edge(space.fused_slots(arch)) for arch in draws]  # every draw fuses some slot
    slots = sorted(space.fusable_slots)
    counts = [edges.count(slot) for slot in slots]
    assert all(abs(n - 400 / len(slots)) < 60 for n in counts), counts
    # Beyond the edge slot, fusion stays a coin flip: the slot farthest from the edge fuses
    # in about half of the draws whose edge is elsewhere.
    far = slots[0] if edge is max else slots[-1]
    others = [arch for arch, e in zip(draws, edges) if e != far]
    share = sum(arch[f"fusion_{far}"] for arch in others) / len(others)
    assert 0.35 < share < 0.65
    assert sampler.sample(7) == ArchSampler(space, rule, seed=0).sample(7)


def test_progressive_sampling_shrinks_the_largest_in_three_stages():
    space = tiny_space()
    # The largest within a made-up budget fuses slots 1 and 2 only.
    largest = space.canonical({**largest_arch(space), "fusion_0": 0})
    sampler = ArchSampler(space, "progressive", seed=0, largest=largest, warmup_steps=6,
                          total_steps=96)
    draws = [sampler.sample(s) for s in range(96)]
    # Warm-up, then the first third of the 90 sampled steps: the largest alone.
    assert all(arch == largest for arch in draws[:36])
    # Then the largest's slots at drawn lengths, the largest itself every third step.
    second = draws[36:66]
    assert all(space.fused_slots(arch) == space.fused_slots(largest) for arch in second)
    assert [arch == largest for arch in second[::3]] == [True] * 10
    assert len({json.dumps(arch, sort_keys=True) for arch in second}) > 5
    # Then the sandwich over every subnet: other slot sets, the smallest among them.
    third = draws[66:]
    assert [arch == largest for arch in third[::3]] == [True] * 10
    assert space.canonical(smallest_arch(space)) in third
    assert len({tuple(space.fused_slots(arch)) for arch in third}) > 2
    assert sampler.sample(50) == ArchSampler(space, "progressive", seed=0, largest=largest,
                                             warmup_steps=6, total_steps=96).sample(50)
    with pytest.raises(ValueError, match="total_steps"):
        ArchSampler(space, "progressive", seed=0)


def test_edges_sampling_gives_every_slot_both_roles_where_one_edge_starves_one():
    from supernet.sampling import steps_by_edge_slot

    space = tiny_space()

    def rarest_role(rule):
        shares = steps_by_edge_slot(ArchSampler(space, rule, seed=0), range(600))
        return min(min(counts.values()) for counts in shares.values())
    # Three slots: top-slot first-fuses slot 2 in a twelfth of its draws, bottom-slot
    # last-fuses slot 0 as rarely; edges mixes the two, about a fifth each at worst.
    assert rarest_role("top-slot") < 80 and rarest_role("bottom-slot") < 80
    assert rarest_role("edges") > 100


def test_steps_by_edge_slot_counts_what_the_sampler_draws_after_the_fit():
    from supernet.sampling import steps_by_edge_slot

    space = tiny_space()
    no_0 = ArchSampler(space, "bottom-slot", seed=0,
                       fit=lambda arch: {**arch, "fusion_0": 0})
    shares = steps_by_edge_slot(no_0, range(300))
    assert shares["bottom"][0] == shares["top"][0] == 0  # the fit never lets slot 0 fuse
    draws = [space.fused_slots(no_0.sample(s)) for s in range(300)]
    for slot in space.fusable_slots:
        assert shares["bottom"][slot] == sum(1 for f in draws if f and min(f) == slot)
        assert shares["top"][slot] == sum(1 for f in draws if f and max(f) == slot)
    assert sum(shares["bottom"].values()) == sum(1 for f in draws if f)


def test_budget_restricted_sampling_trains_only_what_the_search_can_pick():
    from autopmf.memory import estimate_bytes, load_profile
    from autopmf.budget import largest_within, repair

    space = tiny_space()
    profile = load_profile(space, device="cpu", num_classes=2)
    def estimate(arch):
        return estimate_bytes(space, arch, profile)
    largest, smallest = estimate(largest_arch(space)), estimate(smallest_arch(space))
    budget = (largest + smallest) // 2
    def fit(arch):
        return repair(space, arch, estimate, budget)
    top = largest_within(space, estimate, budget)
    sampler = ArchSampler(space, "sandwich", seed=0, fit=fit, largest=top)
    draws = [sampler.sample(s) for s in range(30)]
    assert all(estimate(arch) <= budget for arch in draws)
    # The sandwich's top is the largest subnet the budget allows, not a random feasible one:
    # no single step up from it fits, and nothing drawn needs more memory.
    assert draws[0] == top and all(estimate(a) <= estimate(top) for a in draws)
    assert estimate(top) >= estimate(fit(largest_arch(space)))
    for key, values in space.choices().items():
        i = values.index(top[key])
        if i + 1 < len(values) and (top[f"fusion_{key.rsplit('_', 1)[1]}"]
                                    or key.startswith("fusion_")):
            assert estimate(space.canonical({**top, key: values[i + 1]})) > budget
    assert draws[1] == space.canonical(smallest_arch(space))
    assert len({tuple(a.values()) for a in draws}) > 5
    refs = reference_subnets(space, seed=0, fit=fit, largest=top)
    assert refs["largest"] == top and all(estimate(a) <= budget for a in refs.values())


def small_config(**kw):
    return SupernetConfig(**{"epochs": 2, "batch_size": 16, "lr": 5e-3, "progress": False,
                             **kw})


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPMF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_resume_after_interruption_gives_the_same_weights(tmp_path, cache_dir, monkeypatch):
    space = tiny_space()
    clean = train_supernet(space, DATA, tmp_path / "clean", small_config())
    assert len(clean.metrics["history"]) == 2
    assert set(clean.metrics["history"][-1]["val"]) >= {"largest", "smallest", "random_0"}
    shares = clean.metrics["steps_by_slot"]  # every step of both epochs, by its edge slots
    steps = 2 * clean.metrics["steps_per_epoch"]
    assert 0 < sum(shares["bottom"].values()) == sum(shares["top"].values()) <= steps
    assert list(cache_dir.glob("features/*/manifest.json"))  # the feature cache is on disk

    real_order = supernet_train.SupernetSteps.order

    def dies_in_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # killed mid-run, after epoch 1's checkpoint
        return real_order(self, epoch)

    monkeypatch.setattr(supernet_train.SupernetSteps, "order", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(space, DATA, tmp_path / "cut", small_config())
    assert not (tmp_path / "cut" / "supernet.safetensors").exists()
    assert (tmp_path / "cut" / "checkpoints" / "epoch-0001").is_dir()
    monkeypatch.setattr(supernet_train.SupernetSteps, "order", real_order)
    resumed = train_supernet(space, DATA, tmp_path / "cut", small_config(), resume=True)

    a = load_tensors(tmp_path / "clean" / "supernet.safetensors")
    b = load_tensors(tmp_path / "cut" / "supernet.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed.metrics["history"][-1]["val"] == clean.metrics["history"][-1]["val"]


def test_the_supernet_folder_is_claimed_and_records_its_class_count(tmp_path, cache_dir,
                                                                   monkeypatch):
    """`autopmf supernet` writes config.yaml and is checked by run_dir.claim_run_dir like
    train and search; retrain --init supernet reads the class count from the supernet's
    record instead of loading the data (and still counts it for an older record)."""
    import argparse
    import json

    import yaml

    from autopmf import cli
    from autopmf.data import registry

    space, out = tiny_space(), tmp_path / "run"
    run = train_supernet(space, DATA, out, small_config(epochs=1))
    assert yaml.safe_load((out / "config.yaml").read_text())["settings"]["epochs"] == 1
    assert run.metrics["num_classes"] == 2
    with pytest.raises(AutopmfError, match="already holds this supernet; pass --resume"):
        train_supernet(space, DATA, out, small_config(epochs=1))
    with pytest.raises(AutopmfError, match="holds a different supernet"):
        train_supernet(space, DATA, out, small_config(epochs=1, seed=1), resume=True)
    again = train_supernet(space, DATA, out, small_config(epochs=1), resume=True)
    assert again.metrics["history"] == json.loads(json.dumps(run.metrics["history"]))

    arch = space.reference_arch(1, 2)
    expected = run.supernet.extract(arch).trainable_state_dict()
    counted = []
    real_load = registry.load_dataset
    monkeypatch.setattr(registry, "load_dataset",
                        lambda *a, **kw: counted.append(1) or real_load(*a, **kw))
    args = argparse.Namespace(seed=0)
    for record_has_it in (True, False):
        if not record_has_it:  # a supernet_metrics.json from before it held num_classes
            record = json.loads((out / "supernet_metrics.json").read_text())
            del record["num_classes"]
            (out / "supernet_metrics.json").write_text(json.dumps(record))
        weights = cli._inherited_weights(out, space, arch, DATA, args)
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in weights)
        assert len(counted) == (0 if record_has_it else 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, out, cache):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), AUTOPMF_CACHE=cache)
    torch.set_num_threads(1)
    train_supernet(tiny_space(), DATA, out, small_config(epochs=1))
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path, cache_dir):
    space = tiny_space()
    train_supernet(space, DATA, tmp_path / "one", small_config(epochs=1))
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two"), str(cache_dir)),
             nprocs=2, join=True)
    a = load_tensors(tmp_path / "one" / "supernet.safetensors")
    b = load_tensors(tmp_path / "two" / "supernet.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_streams_advanced_slot_by_slot_equal_streams_built_at_that_slot(setup, images):
    from autopmf.features import SlotCaches, advance_feature_cache

    space, backbone, _ = setup
    encoded = encode_split_of(backbone, space, images)
    low = build_feature_cache(encoded, backbone, 0)
    direct = build_feature_cache(encoded, backbone, 2)
    advanced = advance_feature_cache(low, backbone, 2)
    torch.testing.assert_close(advanced.text, direct.text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(advanced.image, direct.image, atol=1e-5, rtol=1e-5)
    slots = SlotCaches(low, backbone, budget=0)  # no room: falls back to the lowest slot
    assert slots.at(2).slot == 0


def test_slot_caches_sharing_a_budget_never_hold_more_and_give_it_back(setup, images):
    from autopmf.features import RamBudget, SlotCaches

    space, backbone, _ = setup
    low = build_feature_cache(encode_split_of(backbone, space, images), backbone, 0)
    one_slot = low.nbytes  # float32 already: an advanced slot takes as much
    ram = RamBudget(3 * one_slot)
    a, b = SlotCaches(low, backbone, ram), SlotCaches(low, backbone, ram)
    assert [a.at(s).slot for s in (1, 2)] == [1, 2]
    assert b.at(1).slot == 1 and ram.used == 3 * one_slot
    assert b.at(2).slot == 1  # a fourth slot would pass the shared budget: b starts below
    del a
    assert ram.used == one_slot  # a's two slots given back
    assert b.at(2).slot == 2 and ram.used == 2 * one_slot


def test_a_subset_carries_only_its_own_images_and_advances_like_the_whole(setup, images):
    from autopmf.features import advance_feature_cache

    space, backbone, _ = setup
    low = build_feature_cache(encode_split_of(backbone, space, images), backbone, 0)
    rows = torch.tensor([1, 3])
    part = low.subset(rows)
    assert len(part.image) == len(low.image_index[rows].unique()) < len(low.image)
    got, want = part.streams(torch.arange(2)), low.streams(rows)
    for name in ("text", "text_mask", "image"):
        assert torch.equal(getattr(got, name), getattr(want, name))
    got = advance_feature_cache(part, backbone, 2).streams(torch.arange(2))
    want = advance_feature_cache(low, backbone, 2).streams(rows)
    for name in ("text", "image"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=1e-5,
                                   rtol=1e-5)


def test_warmup_trains_only_the_largest_subnet_first():
    space = tiny_space()
    sampler = ArchSampler(space, "uniform", seed=0, warmup_steps=5)
    top = space.canonical(largest_arch(space))
    assert all(sampler.sample(s) == top for s in range(5))
    assert any(sampler.sample(s) != top for s in range(5, 15))


def test_cover_warmup_fuses_every_slot_within_the_budget_in_turn():
    from autopmf.memory import GIB, estimate_bytes, load_profile
    from autopmf.supernet_train import budget_fit

    space = tiny_space()
    profile = load_profile(space, device="cpu", num_classes=2)
    def estimate(arch):
        return estimate_bytes(space, arch, profile)
    shortest = space.canonical({k: min(v) for k, v in space.choices().items()})
    def fusing(*slots):
        return space.canonical({**shortest, **{f"fusion_{j}": 1 for j in slots}})
    # Just too little for every slot at once, so one subnet cannot cover them all.
    budget_gb = (estimate(fusing(*space.fusable_slots)) - 1) / GIB
    budget = int(budget_gb * GIB)
    assert all(estimate(fusing(j)) <= budget for j in space.fusable_slots)

    _, largest, cover = budget_fit(space, budget_gb, 2, "cpu", warmup="cover")
    assert len(cover) >= 2 and all(estimate(arch) <= budget for arch in cover)
    assert set().union(*(space.fused_slots(a) for a in cover)) == set(space.fusable_slots)
    for arch in cover:  # at the shortest prompts: only which slots fuse differs
        assert arch == fusing(*space.fused_slots(arch))
    assert budget_fit(space, budget_gb, 2, "cpu", warmup="largest")[2] == [largest]
    lowest = budget_fit(space, budget_gb, 2, "cpu", warmup="lowest")[2]
    assert lowest == cover[:1] and min(space.fusable_slots) in space.fused_slots(lowest[0])
    # The default rule is the CLI's and the config's.
    assert budget_fit(space, budget_gb, 2, "cpu")[2] == lowest
    assert SupernetConfig().warmup == "lowest"

    sampler = ArchSampler(space, "sandwich", seed=0, largest=largest, warmup_steps=7,
                          warmup_archs=cover)
    assert [sampler.sample(s) for s in range(7)] == [cover[s % len(cover)] for s in range(7)]
    assert sampler.sample(9) == largest  # then the sandwich, whose top is still the largest


def test_the_warmup_rule_holds_without_a_budget(tmp_path, cache_dir):
    """Without a budget (`--supernet-scope full`, or `autopmf supernet` without
    --budget-gb) every subnet is allowed, and the warm-up rule picks among them all: it once
    trained the largest subnet whatever the rule said (issue 18)."""
    from autopmf.supernet_train import budget_fit

    space = tiny_space()
    shortest = {k: min(v) for k, v in space.choices().items()}
    every_slot = space.canonical({**shortest, **{f"fusion_{j}": 1 for j in space.fusable_slots}})
    assert every_slot != space.canonical(largest_arch(space))
    assert budget_fit(space, None, 2, "cpu", warmup="lowest") == (None, None, [every_slot])
    assert budget_fit(space, None, 2, "cpu", warmup="cover") == (None, None, [every_slot])
    assert budget_fit(space, None, 2, "cpu", warmup="largest") == (
        None, None, [space.canonical(largest_arch(space))])

    run = train_supernet(space, DATA, tmp_path / "run",
                         small_config(epochs=1, warmup_epochs=1, warmup="lowest",
                                      reference_val_examples=7))
    assert run.metrics["references"]["warmup"] == every_slot
    assert set(run.metrics["history"][0]["val"]) == {"warmup"}
    # Only warm-up steps: no sampled step to share out.
    assert all(n == 0 for counts in run.metrics["steps_by_slot"].values()
               for n in counts.values())


def test_cli_warmup_defaults_to_three_epochs_but_at_most_half():
    from autopmf.cli import _warmup_epochs, build_parser

    def warmup(*extra):
        args = build_parser().parse_args(["supernet", "--space", "tiny", "--out", "x", *extra])
        return _warmup_epochs(args)
    assert warmup("--epochs", "10") == 3 and warmup("--epochs", "4") == 2
    assert warmup("--epochs", "10", "--warmup-epochs", "0") == 0
    with pytest.raises(AutopmfError, match="--warmup-epochs"):
        warmup("--warmup-epochs", "-1")


def test_cli_warmup_rule_reaches_the_supernet_config():
    from autopmf.cli import _supernet_config, _UsageError, build_parser

    def config(*extra):
        args = build_parser().parse_args(["search", "--space", "tiny", "--data", "digits",
                                          "--budget-gb", "1", "--out", "x", *extra])
        return _supernet_config(args, tiny_space())
    assert config().warmup == "lowest" and config("--warmup", "cover").warmup == "cover"
    with pytest.raises(_UsageError, match="invalid choice: 'widest'"):
        config("--warmup", "widest")


def test_cli_data_seed_splits_the_supernets_data_apart_from_its_seed(tmp_path, cache_dir,
                                                                     monkeypatch):
    """`autopmf supernet --seed 1 --data-seed 0` trains on seed 0's split (another supernet
    seed, compared on the same data)."""
    from autopmf import supernet_train as st
    from autopmf.cli import _supernet_config, build_parser

    args = build_parser().parse_args(["supernet", "--space", "tiny", "--data", "digits",
                                      "--out", "x", "--seed", "1", "--data-seed", "0"])
    cfg = _supernet_config(args, tiny_space())
    assert (cfg.seed, cfg.data_seed, cfg.split_seed) == (1, 0, 0)
    assert SupernetConfig(seed=3).split_seed == 3
    seen = []
    real_load = st.load_dataset
    monkeypatch.setattr(st, "load_dataset",
                        lambda spec, seed, **kw: seen.append(seed) or real_load(spec, seed, **kw))
    train_supernet(tiny_space(), DATA, tmp_path / "run", small_config(epochs=1, seed=1,
                                                                     data_seed=0))
    assert seen == [0]


def test_warmup_epochs_validate_only_the_warmup_subnet(tmp_path, cache_dir):
    from autopmf.memory import GIB, estimate_bytes, load_profile
    from autopmf.supernet_train import budget_fit, warmup_references

    space = tiny_space()
    profile = load_profile(space, device="cpu", num_classes=2)
    budget_gb = 0.9 * estimate_bytes(space, largest_arch(space), profile) / GIB
    run = train_supernet(space, DATA, tmp_path / "run",
                         small_config(budget_gb=budget_gb, warmup_epochs=1, warmup="lowest",
                                      reference_val_examples=7))
    _, largest, (lowest,) = budget_fit(space, budget_gb, 2, "cpu", warmup="lowest")
    assert lowest != largest
    assert run.metrics["references"]["warmup"] == lowest
    first, second = run.metrics["history"]
    assert set(first["val"]) == {"warmup"}  # only the subnet that trained
    assert set(second["val"]) == {"largest", "smallest", "random_0", "random_1", "random_2",
                                  "warmup"}
    # Scored on the 7-example subset, not the whole validation split: accuracies in sevenths.
    assert len(run.caches["val"]) > 7
    for score in [*first["val"].values(), *second["val"].values()]:
        assert abs(score * 7 - round(score * 7)) < 1e-6

    # A warm-up subnet that is also a reference keeps that reference's name.
    refs = reference_subnets(space, seed=0)
    assert warmup_references(space, refs, [largest_arch(space)]) == {"largest": refs["largest"]}
    named = warmup_references(space, refs, [lowest, largest])
    assert list(named) == ["warmup_0", "warmup_1"] and named["warmup_0"] == lowest


def test_reference_scores_use_a_fixed_subset_of_the_validation_split():
    from autopmf.features import FeatureCache
    from autopmf.supernet_train import reference_examples

    torch.manual_seed(0)
    val = FeatureCache(slot=0, text=torch.randn(10, 5, 8), text_mask=torch.ones(10, 5).bool(),
                       image=torch.randn(4, 3, 8), image_index=torch.arange(10) % 4,
                       labels=torch.arange(10) % 3)
    picked = reference_examples(val, small_config(reference_val_examples=4, seed=3))
    again = reference_examples(val, small_config(reference_val_examples=4, seed=3))
    assert len(picked) == 4 and torch.equal(picked.text, again.text)
    rows = [next(i for i in range(10) if torch.equal(val.text[i], t)) for t in picked.text]
    assert rows == sorted(rows) and len(set(rows)) == 4
    other = reference_examples(val, small_config(reference_val_examples=4, seed=4))
    assert not torch.equal(picked.text, other.text)  # a seeded draw, not the first rows
    streams, full = picked.streams(torch.arange(4)), val.streams(torch.tensor(rows))
    assert torch.equal(streams.image, full.image) and torch.equal(streams.text, full.text)
    assert torch.equal(picked.labels, val.labels[rows])
    assert reference_examples(val, small_config(reference_val_examples=None)) is val
    assert reference_examples(val, small_config(reference_val_examples=50)) is val


def test_a_supernet_of_zero_epochs_is_the_initialised_one_with_fitted_heads(tmp_path,
                                                                           cache_dir):
    """--epochs 0 (search, supernet, demo): subnets are scored as initialised, so the saved
    weights are exactly those of the initialisation, the shared heads included (nothing
    trains them, so they are not fitted either)."""
    space = tiny_space()
    run = train_supernet(space, DATA, tmp_path / "zero", small_config(epochs=0))
    assert run.metrics["history"] == []
    saved = load_tensors(tmp_path / "zero" / "supernet.safetensors")

    train_supernet(space, DATA, tmp_path / "one", small_config(epochs=1))
    trained = load_tensors(tmp_path / "one" / "supernet.safetensors")
    # The same initialisation (same seed), and the 1-epoch supernet moved away from it.
    from autopmf.build import initialise_fusion
    from autopmf.data.registry import load_dataset
    from autopmf.feature_store import feature_caches
    backbone = build_backbone(space)
    torch.manual_seed(0)  # as supernet_of_run seeds it
    fresh = Supernet(space, backbone, 2)
    dataset = load_dataset(DATA, seed=0, image_size=space.image_size)
    caches = feature_caches(space, dataset, fresh.backbone, fresh.lowest_fusable_slot)
    initialise_fusion({int(j): s for j, s in fresh.fusion.items()}, fresh.backbone,
                      caches["train"], "paper", 0)
    initial = fresh.trainable_state_dict()
    fusion = [k for k in saved if not k.startswith("heads.")]
    assert fusion and saved.keys() == initial.keys()
    for k in saved:
        assert torch.equal(saved[k], initial[k]), k
    assert any(not torch.equal(trained[k], initial[k]) for k in fusion)


def test_cli_allows_zero_supernet_epochs_but_not_zero_training_epochs(tmp_path, cache_dir,
                                                                      capsys):
    from autopmf.cli import main

    out = tmp_path / "search"
    assert main(["search", "--space", "tiny", "--data", DATA, "--out", str(out), "--epochs",
                 "0", "--trials", "2", "--population", "2", "--budget-gb", "10", "--batch-size",
                 "16", "--threads", "1", "--quiet"]) == 0
    assert (out / "best_arch.yaml").exists()
    assert main(["search", "--space", "tiny", "--data", DATA, "--out", str(tmp_path / "h"),
                 "--epochs", "0", "--inherited-score", "heads", "--budget-gb", "10",
                 "--quiet"]) == 2
    assert "an untrained supernet (--epochs 0) does not fit" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
    assert main(["train", "--space", "tiny", "--data", DATA, "--arch", str(out / "best_arch.yaml"),
                 "--out", str(tmp_path / "t"), "--epochs", "0", "--quiet"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_inference_batches_are_sized_by_tokens_and_give_the_same_streams(setup, images,
                                                                         monkeypatch):
    from autopmf import features
    from autopmf.features import advance_feature_cache, inference_rows
    from autopmf.train import TrainConfig, predict

    assert inference_rows(257) == 2**14 // 257 == 63  # 224-px DINOv2 streams
    assert inference_rows(17) == 256 and inference_rows(10**6) == 1
    space, backbone, _ = setup
    low = build_feature_cache(encode_split_of(backbone, space, images), backbone, 0)
    whole = advance_feature_cache(low, backbone, 2)
    # A token budget of two examples: every batch holds at most two rows.
    monkeypatch.setattr(features, "INFERENCE_TOKENS", 2 * low.tokens_per_example)
    small = advance_feature_cache(low, backbone, 2)
    for name in ("text", "image"):
        torch.testing.assert_close(getattr(small, name), getattr(whole, name), atol=1e-5,
                                   rtol=1e-5)
    seen = []
    logits = predict(lambda c, rows: seen.append(len(rows)) or c.labels[rows, None].float(),
                     low, TrainConfig())
    assert max(seen) == 2 and sum(seen) == len(low)
    assert torch.equal(logits[:, 0], low.labels.float())
