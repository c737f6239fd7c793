"""`autopmf search` on tiny encoders: budget respected, best = best logged, resume, errors."""

import json
import math

import pytest
import yaml

from autopmf import search as search_mod
from autopmf.budget import repair
from autopmf.cli import main
from autopmf.errors import AutopmfError
from autopmf.report import summarize
from autopmf.memory import GIB, estimate_bytes, load_profile, max_memory_arch
from autopmf.search import SearchConfig, run_search
from autopmf.space import load_arch
from autopmf.supernet_train import SupernetConfig
from tests.conftest import budget_between, tiny_space

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module")
def space():
    return tiny_space(batch_size=16)


@pytest.fixture(scope="module")
def budget_gb(space):
    return budget_between(space)  # the largest architecture does not fit


def config(budget_gb, trials=14):
    # The supernet trains just enough that subnets score differently (as in test_faults; at
    # one epoch of lr 3e-3 every candidate scored the same 0.4986, and comparing scores proved
    # nothing).
    return SearchConfig(budget_gb=budget_gb, trials=trials, population=5, tournament=2,
                        mutation_prob=0.3, seed=3, progress=False,
                        supernet=SupernetConfig(epochs=2, batch_size=16, progress=False,
                                                lr=0.05, head_lr_scale=1))


def not_all_alike(log):
    return len({e["score"] for e in log}) > 1


@pytest.fixture(scope="module")
def finished(space, budget_gb, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    result = run_search(space, DATA, out, config(budget_gb))
    return out, result


def log_of(out):
    return [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]


def test_every_logged_candidate_fits_and_best_is_the_best_line(finished, budget_gb, space):
    out, result = finished
    log = log_of(out)
    assert len(log) == 14 and [e["trial"] for e in log] == list(range(1, 15))
    assert all(e["mem_gb"] <= budget_gb for e in log)
    profile = load_profile(space)
    for e in log:  # the logged memory is the memory model's, for exactly that architecture
        assert e["mem_gb"] == pytest.approx(estimate_bytes(space, e["arch"], profile) / GIB,
                                            abs=1e-6)
    keys = [json.dumps(space.canonical(e["arch"]), sort_keys=True) for e in log]
    assert len(set(keys)) == len(keys)  # no architecture scored twice
    assert not_all_alike(log)  # else the tie-breaks alone would pick "best"
    best = min(log, key=lambda e: (-e["score"], e["mem_gb"], e["trial"]))
    doc = yaml.safe_load((out / "best_arch.yaml").read_text())
    assert doc["arch"] == best["arch"] and doc["score"] == best["score"]
    assert load_arch(out / "best_arch.yaml")[1] == best["arch"]
    config_doc = yaml.safe_load((out / "config.yaml").read_text())
    assert config_doc["seed"] == 3 and "torch" in config_doc["versions"]


def test_log_command_reports_no_over_budget_candidate(finished, capsys):
    out, _ = finished
    assert main(["log", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["over_budget"] == 0 and report["trials"] == 14
    assert report["best"]["arch"] == yaml.safe_load((out / "best_arch.yaml").read_text())["arch"]


def test_repair_steps_an_oversized_architecture_into_the_budget(space, budget_gb):
    profile = load_profile(space)
    largest = max_memory_arch(space, profile)[0]

    def estimate(a):
        return estimate_bytes(space, a, profile)

    fixed = repair(space, largest, estimate, int(budget_gb * GIB))
    assert fixed is not None and estimate(fixed) <= budget_gb * GIB
    assert space.fused_slots(fixed)  # it steps down, it does not throw everything away
    assert repair(space, largest, estimate, 1) is None


def test_infeasible_budget_fails_clearly_and_writes_no_best_arch(space, tmp_path):
    with pytest.raises(AutopmfError, match="smallest .* needs .* raise the budget") as info:
        run_search(space, DATA, tmp_path / "run", config(1e-6))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "best_arch.yaml").exists()
    assert main(["search", "--space", "tiny", "--budget-gb", "0", "--out",
                 str(tmp_path / "r2")]) == 2


def test_killed_and_resumed_search_equals_uninterrupted(finished, space, budget_gb, tmp_path,
                                                        monkeypatch):
    clean_out, _ = finished
    real_call = search_mod.InheritedScorer.__call__
    calls = {"n": 0}

    def dies_at_ninth(self, arch):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real_call(self, arch)

    monkeypatch.setattr(search_mod.InheritedScorer, "__call__", dies_at_ninth)
    with pytest.raises(KeyboardInterrupt):
        run_search(space, DATA, tmp_path, config(budget_gb))
    assert len(log_of(tmp_path)) == 8 and not (tmp_path / "best_arch.yaml").exists()
    with (tmp_path / "search_log.jsonl").open("a") as f:
        f.write('{"trial": 9, "arch": {"fusi')  # killed mid-write

    scored_again = []
    monkeypatch.setattr(search_mod.InheritedScorer, "__call__",
                        lambda self, arch: scored_again.append(arch) or real_call(self, arch))
    with pytest.raises(AutopmfError, match="--resume"):
        run_search(space, DATA, tmp_path, config(budget_gb))
    run_search(space, DATA, tmp_path, config(budget_gb), resume=True)
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in log_of(tmp_path)]
    clean = [{k: v for k, v in e.items() if k != "seconds"} for e in log_of(clean_out)]
    assert strip == clean and not_all_alike(clean)  # scores that tell weights apart
    # Logged candidates were not scored again; the PMF reference within the budget is scored
    # once after the search unless the search scored it as a candidate (issue 20).
    reference = json.loads((tmp_path / "reference.json").read_text())
    assert reference == json.loads((clean_out / "reference.json").read_text())
    assert len(scored_again) == 14 - 8 + (reference["trial"] is None)
    assert (tmp_path / "best_arch.yaml").read_text() == (clean_out / "best_arch.yaml").read_text()


def test_a_candidate_with_no_finite_score_is_logged_failed_and_never_best(
        finished, space, budget_gb, tmp_path, monkeypatch):
    """A subnet whose inherited score is NaN (diverged) is logged "failed": kept for replay,
    counted by `autopmf log`, never best_arch.yaml nor on the Pareto front."""
    out, _ = finished
    best_trial = {e["trial"]: e for e in log_of(out)}
    real_call = search_mod.InheritedScorer.__call__
    calls = {"n": 0}

    def nan_first(self, arch):
        calls["n"] += 1
        return float("nan") if calls["n"] == 1 else real_call(self, arch)

    monkeypatch.setattr(search_mod.InheritedScorer, "__call__", nan_first)
    cfg = config(budget_gb, trials=6)
    cfg.supernet_from = out
    result = run_search(space, DATA, tmp_path, cfg)
    log = log_of(tmp_path)
    assert log[0]["status"] == "failed" and math.isnan(log[0]["score"])
    assert best_trial[1]["score"] > 0  # it had a real score: only the NaN made it failed
    assert result["best"]["trial"] != 1 and math.isfinite(result["best"]["score"])
    assert 1 not in [e["trial"] for e in result["pareto"]]
    summary = summarize(tmp_path)
    assert summary["failed"] == 1 and summary["best"]["trial"] == result["best"]["trial"]
    assert load_arch(tmp_path / "best_arch.yaml")[1] == result["best"]["arch"]


def test_a_different_search_in_the_same_directory_is_refused(finished, space, budget_gb):
    out, _ = finished
    with pytest.raises(AutopmfError, match="different search"):
        run_search(space, DATA, out, config(budget_gb * 0.9), resume=True)


def test_random_search_baseline_respects_the_budget_too(space, budget_gb, tmp_path):
    cfg = config(budget_gb, trials=8)
    cfg.strategy = "random"
    run_search(space, DATA, tmp_path, cfg)
    log = log_of(tmp_path)
    assert len(log) == 8 and all(e["mem_gb"] <= budget_gb for e in log)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["strategy"] == "random"


def test_random_search_on_the_same_supernet_scores_as_evolution_did(finished, space,
                                                                    budget_gb, tmp_path):
    out, _ = finished
    cfg = config(budget_gb, trials=8)
    cfg.strategy, cfg.supernet_from = "random", out
    run_search(space, DATA, tmp_path / "random", cfg)
    same = (tmp_path / "random" / "supernet.safetensors").read_bytes()
    assert same == (out / "supernet.safetensors").read_bytes()
    evolution = {json.dumps(e["arch"], sort_keys=True): e["score"] for e in log_of(out)}
    shared = [e for e in log_of(tmp_path / "random")
              if json.dumps(e["arch"], sort_keys=True) in evolution]
    assert shared, "no candidate in common: the comparison below would prove nothing"
    assert not_all_alike(log_of(out))  # nor would it if every subnet scored alike
    for entry in shared:  # inherited weights are the same weights
        assert entry["score"] == evolution[json.dumps(entry["arch"], sort_keys=True)]


def test_supernet_from_a_run_of_other_settings_is_refused(finished, space, budget_gb,
                                                          tmp_path):
    out, _ = finished
    cfg = config(budget_gb, trials=4)
    cfg.supernet.lr *= 2
    cfg.supernet_from = out
    with pytest.raises(AutopmfError):
        run_search(space, DATA, tmp_path, cfg)
    with pytest.raises(AutopmfError, match="no finished supernet"):
        run_search(space, DATA, tmp_path / "b", SearchConfig(
            **{**config(budget_gb).__dict__, "supernet_from": tmp_path / "nothing"}))


def test_search_data_seed_splits_the_data_apart_from_its_seed(space, budget_gb, tmp_path,
                                                              monkeypatch):
    """`autopmf search --seed 3 --data-seed 0`: the supernet and the search both learn on seed
    0's split, so several search seeds compare on one split (bench/search_quality.py)."""
    from autopmf import supernet_train
    from autopmf.cli import _supernet_config, build_parser

    args = build_parser().parse_args(["search", "--space", "tiny", "--data", DATA, "--out", "x",
                                      "--budget-gb", "1", "--seed", "3", "--data-seed", "0"])
    assert _supernet_config(args, space).split_seed == 0
    seen = []
    for module in (search_mod, supernet_train):
        real = module.load_dataset
        monkeypatch.setattr(module, "load_dataset",
                            lambda spec, seed, real=real, **kw: seen.append(seed)
                            or real(spec, seed, **kw))
    cfg = config(budget_gb, trials=2)
    cfg.inherited_score = "probe"
    cfg.supernet.epochs, cfg.supernet.seed, cfg.supernet.data_seed = 0, 3, 0  # as the CLI sets
    run_search(space, DATA, tmp_path, cfg)
    assert seen and set(seen) == {0}
    cfg.supernet.data_seed = None  # the default: the split follows --seed
    seen.clear()
    run_search(space, DATA, tmp_path / "b", cfg)
    assert set(seen) == {3}
