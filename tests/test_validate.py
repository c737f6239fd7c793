"""`autopmf validate`: rank correlations, the spread of the chosen architectures, errors, and a
tiny search validated end to end (finished retrains reused, an unfinished one rerun)."""

import importlib.util
import json
import math
import random

import numpy as np
import pytest
import yaml

from autopmf import train_arch
from autopmf.cli import main
from autopmf.errors import AutopmfError
from autopmf.search import SearchConfig, run_search
from autopmf.supernet_train import SupernetConfig
from autopmf.ranking import kendall_tau_b
from autopmf.validate import candidates, select_spread, validate_run
from tests.conftest import budget_between, tiny_space

DATA = "digits:examples_per_image=1"
# End to end: 13 answers, some learnable from the question alone, so that tiny random encoders
# trained briefly score differently (on binary digits they all sit at 0.50).
VQA = "easyvqa:image_fraction=0.1,max_questions_per_image=4"
needs_easyvqa = pytest.mark.skipif(importlib.util.find_spec("easy_vqa") is None,
                                   reason="easy-vqa not installed (scripts/install.sh)")


# ----- choosing the architectures --------------------------------------------------------
def synthetic_entries(n, seed, correlation=0.0):
    rng = np.random.default_rng(seed)
    mem = rng.uniform(0.1, 1.0, n)
    score = correlation * mem + (1 - abs(correlation)) * rng.uniform(0, 1, n)
    return [{"trial": t + 1, "arch": {"fusion_0": t}, "mem_gb": float(m), "score": float(s),
             "status": "scored"} for t, (m, s) in enumerate(zip(mem, score))]


def rank_bins(values, chosen, k):
    """Which of k equal rank bins of `values` each chosen value falls into."""
    ranks = {v: r for r, v in enumerate(sorted(values))}
    return sorted(ranks[v] * k // len(values) for v in chosen)


@pytest.mark.parametrize("correlation", [0.0, 0.7, -0.7])
def test_selection_spreads_over_memory_and_score(correlation):
    entries, k = synthetic_entries(60, seed=1, correlation=correlation), 6
    picked = select_spread(entries, k)
    assert len({e["trial"] for e in picked}) == k
    # One pick in each sixth of the memory ranks ...
    assert rank_bins([e["mem_gb"] for e in entries], [e["mem_gb"] for e in picked], k) == \
        list(range(k))
    # ... and the scores reach both ends of the score range with no wide gap between them.
    bins = rank_bins([e["score"] for e in entries], [e["score"] for e in picked], k)
    assert bins[0] == 0 and bins[-1] == k - 1
    assert max(b - a for a, b in zip(bins, bins[1:])) <= 2


def test_selection_is_deterministic_and_ignores_log_order():
    entries = synthetic_entries(40, seed=2, correlation=0.5)
    shuffled = entries[:]
    random.Random(0).shuffle(shuffled)
    assert [e["trial"] for e in select_spread(entries, 5)] == \
        [e["trial"] for e in select_spread(shuffled, 5)]


def test_candidates_are_distinct_and_within_budget():
    entries = [{"trial": 1, "arch": {"a": 1}, "mem_gb": 0.2, "score": 0.5},
               {"trial": 2, "arch": {"a": 2}, "mem_gb": 0.9, "score": 0.9},  # over budget
               {"trial": 3, "arch": {"a": 1}, "mem_gb": 0.2, "score": 0.6},  # same arch again
               {"trial": 4, "arch": {"a": 3}, "mem_gb": 0.3, "score": 0.7}]
    assert [e["trial"] for e in candidates(entries, budget_gb=0.5)] == [1, 4]


# ----- bad input -------------------------------------------------------------------------
def fake_run(tmp_path, entries, budget_gb=1.0):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"budget_gb": budget_gb, "data": DATA, "space": tiny_space().to_dict(), "seed": 0}))
    (tmp_path / "search_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return tmp_path


def test_too_many_archs_names_how_many_there_are(tmp_path):
    entries = synthetic_entries(6, seed=0)
    entries[0]["status"] = "failed"
    entries[1]["mem_gb"] = 2.0  # over the budget
    entries[2]["status"] = "duplicate"
    entries[3]["arch"] = entries[4]["arch"]  # the same architecture logged twice
    run = fake_run(tmp_path, entries)
    with pytest.raises(AutopmfError, match="only 2 distinct scored candidates"):
        validate_run(run, archs=3)


@pytest.mark.parametrize("make_run, argv, message", [
    (lambda p: p, ["--archs", "3"], "not a search run"),  # no log
    (lambda p: fake_run(p, synthetic_entries(5, 0)), ["--archs", "1"], "at least 2"),
    (lambda p: fake_run(p, synthetic_entries(5, 0)), ["--archs", "9"], "only 5 distinct"),
    (lambda p: fake_run(p, synthetic_entries(5, 0)), ["--archs", "3", "--seeds", "0"],
     "at least 1 seed"),
])
def test_bad_input_is_one_line_error_exit_2(tmp_path, capsys, make_run, argv, message):
    run = make_run(tmp_path)
    assert main(["validate", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autopmf: error: ") and message in err and err.count("\n") == 1
    assert not (run / "validate").exists()


# ----- end to end ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    space = tiny_space(batch_size=16)
    out = tmp_path_factory.mktemp("search")
    cfg = SearchConfig(budget_gb=budget_between(space), trials=6, population=4,
                       tournament=2, seed=1, progress=False,
                       supernet=SupernetConfig(epochs=3, batch_size=16, lr=3e-2, seed=2,
                                               head_lr_scale=1.0, progress=False))
    run_search(space, VQA, out, cfg)
    return out


@pytest.fixture(scope="module")
def validated(searched):
    return validate_run(searched, archs=3, epochs=1, progress=False)


@needs_easyvqa
def test_validate_writes_coefficients_rows_and_plot(searched, validated):
    doc = json.loads((searched / "validate" / "validate.json").read_text())
    assert doc == json.loads(json.dumps(validated))
    assert doc["n"] == 3 and len(doc["archs"]) == 3
    assert math.isfinite(doc["kendall_tau"]) and math.isfinite(doc["spearman_rho"])
    log = {e["trial"]: e for e in map(json.loads,
                                      (searched / "search_log.jsonl").read_text().splitlines())}
    for row in doc["archs"]:
        metrics = json.loads((searched / "validate" / row["name"] / "metrics.json").read_text())
        assert row["inherited_score"] == log[row["trial"]]["score"]
        assert row["arch"] == log[row["trial"]]["arch"] == metrics["arch"]
        assert (row["val_score"], row["test_score"]) == (metrics["val_score"],
                                                         metrics["test_score"])
        # The search's data, and the seed its supernet loaded the data (and val split) with.
        assert (metrics["data"], metrics["train_config"]["seed"]) == (VQA, 2)
        assert metrics["train_config"]["epochs"] == 1
    assert (searched / "validate" / "validate.png").read_bytes()[:4] == b"\x89PNG"


@needs_easyvqa
def test_rerun_reuses_finished_retrains(searched, validated, monkeypatch, capsys):
    folder = searched / "validate"
    mtimes = {p: p.stat().st_mtime_ns for p in folder.glob("arch-*/metrics.json")}
    assert len(mtimes) == 3
    fits = []
    real_fit = train_arch.fit

    def counting_fit(*args, **kwargs):
        fits.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train_arch, "fit", counting_fit)
    assert main(["validate", str(searched), "--archs", "3", "--epochs", "1", "--json",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["kendall_tau"] == validated["kendall_tau"]
    assert fits == [] and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # A retrain without metrics.json (interrupted) is the only one trained again.
    unfinished = folder / validated["archs"][0]["name"] / "metrics.json"
    unfinished.unlink()
    again = validate_run(searched, archs=3, epochs=1, progress=False)
    assert fits == [1] and unfinished.exists() and again["n"] == 3
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p != unfinished)


@needs_easyvqa
def test_other_epochs_than_the_finished_retrains_is_an_error(searched, validated):
    with pytest.raises(AutopmfError, match="other settings"):
        validate_run(searched, archs=3, epochs=2, progress=False)


@needs_easyvqa
def test_more_seeds_add_retrains_on_the_same_split_and_average_them(searched, validated,
                                                                     monkeypatch):
    data_seeds, fits = [], []
    real_load, real_fit = train_arch.load_dataset, train_arch.fit
    monkeypatch.setattr(train_arch, "load_dataset",
                        lambda *a, **kw: data_seeds.append(kw["seed"]) or real_load(*a, **kw))
    monkeypatch.setattr(train_arch, "fit", lambda *a, **kw: fits.append(1) or real_fit(*a, **kw))
    result = validate_run(searched, archs=3, epochs=1, progress=False, seeds=2)
    # The first seed's retrains are reused; only the second seed trains, on the search's split.
    assert fits == [1, 1, 1] and data_seeds == [2, 2, 2]
    assert result["seeds"] == 2 and result["n"] == 3
    folder = searched / "validate"
    for row, first in zip(result["archs"], validated["archs"]):
        second = json.loads((folder / f"{row['name']}-s1" / "metrics.json").read_text())
        assert second["train_config"]["seed"] == 3 and second["train_config"]["data_seed"] == 2
        assert row["val_scores"] == [first["val_score"], second["val_score"]]
        assert row["val_score"] == pytest.approx(np.mean(row["val_scores"]))
        assert row["test_score"] == pytest.approx(np.mean(row["test_scores"]))

    def as_reported(tau):
        return None if math.isnan(tau) else pytest.approx(tau)
    rows = result["archs"]
    assert result["seed_kendall_tau"] == as_reported(
        kendall_tau_b(*zip(*[r["val_scores"] for r in rows])))
    # With two seeds, each against the other's "mean" is the same pair.
    assert result["single_run_kendall_tau"] == result["seed_kendall_tau"]
    assert result["kendall_tau"] == as_reported(
        kendall_tau_b([r["inherited_score"] for r in rows], [r["val_score"] for r in rows]))


def test_agreement_reports_intervals_hits_and_regret_against_the_seed_mean():
    # Seed means 0.60, 0.70, 0.80, 0.90; the supernet ranks the two best the wrong way round.
    rows = [{"inherited_score": s, "val_score": float(np.mean(v)), "val_scores": v}
            for s, v in ((0.50, [0.59, 0.61]), (0.55, [0.69, 0.71]), (0.65, [0.79, 0.81]),
                         (0.60, [0.91, 0.89]))]
    from autopmf.validate import agreement
    result = agreement(rows)
    assert result["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    lo, hi = result["kendall_tau_ci"]
    assert lo <= result["kendall_tau"] <= hi
    assert not result["top1_hit"] and result["top3_hit"]
    assert result["regret"] == pytest.approx(0.90 - 0.80)
    assert result["seed_kendall_tau"] == pytest.approx(1.0)
    assert result["single_run_kendall_tau"] == pytest.approx(1.0)
