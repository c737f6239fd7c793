"""bench/ranking.py end to end on the tiny space: the figures issue 15 asks for, and the same
records whether the trainings run in one process or are split over two."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ranking import design_cost, seed_major, threshold_free_agreement  # noqa: E402

DESIGNS = "2:1,1:2+2:1,0:4"
RUN_KEYS = ("val", "test", "val_auc", "test_auc", "val_ll", "test_ll", "val_at_start",
            "history")


def run_benchmark(out: Path, jobs: int, designs: str = DESIGNS, *extra: str) -> dict:
    subprocess.run([sys.executable, str(ROOT / "bench" / "ranking.py"), "--space", "tiny",
                    "--data", "digits:examples_per_image=1", "--designs", designs,
                    "--epochs", "1", "--seeds", "2", "--threads", "1", "--jobs", str(jobs),
                    # A start drawn from the seed (the default is seed-free), unless `extra`
                    # names another: the seeds then differ in both start and order.
                    "--prompt-init", "paper",
                    "--out", str(out), *extra], check=True, capture_output=True, cwd=ROOT,
                   timeout=600)
    return json.loads(out.read_text())


def records(out: Path) -> dict:
    lines = [json.loads(line) for line in out.with_suffix(".runs.jsonl").read_text().splitlines()]
    return {(r["design"], r["seed"]): {k: r[k] for k in RUN_KEYS} for r in lines}


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranking")
    one, two = tmp / "one.json", tmp / "two.json"
    return run_benchmark(one, 1), records(one), run_benchmark(two, 2), records(two)


def test_the_result_holds_the_issues_figures(both_ways):
    result, runs, _, _ = both_ways
    for key in ("task", "designs", "seeds", "epochs", "seed_tau", "seed_tau_ci", "spread",
                "mean_seed_std", "minutes"):
        assert key in result, key
    assert (result["designs"], result["seeds"], result["epochs"]) == (3, 2, 1)
    assert len(runs) == 6
    for r in runs.values():
        assert 0 <= r["val"] <= 1 and 0 <= r["val_auc"] <= 1 and r["val_ll"] < 0
    assert set(result["seed_tau_by_score"]) == {"val_auc", "val_ll", "test_auc", "test_ll"}
    lo, hi = result["seed_tau_ci"]
    assert lo <= hi


def test_two_processes_train_exactly_what_one_does(both_ways):
    _, one, _, two = both_ways
    assert one == two


def test_design_cost_is_proportional_to_the_measured_training_time():
    """The split between processes is only as even as the cost model: against the fixed-start
    yardstick's measured seconds (start and training), every demo design's cost is within 5%
    of one common seconds-per-unit rate, except the cheapest (5:1), which is within 20%."""
    from autopmf.space import load_space

    space = load_space("demo")
    seconds: dict[str, float] = {}
    log = ROOT / "bench" / "results" / "ranking_fixed.runs.jsonl"
    for line in log.read_text().splitlines():
        run = json.loads(line)
        seconds[run["design"]] = (seconds.get(run["design"], 0.0) + run["seconds"]
                                  + run["init_seconds"])
    rates = {d: s / design_cost(space, d) for d, s in seconds.items()}
    typical = sorted(rates.values())[len(rates) // 2]
    assert len(rates) == 10
    for design, rate in rates.items():
        assert abs(rate / typical - 1) < (0.2 if design == "5:1" else 0.05), design


def test_seed_major_gives_every_design_its_first_seed_first():
    assert seed_major(["a", "b"], 2) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_a_score_some_run_lacks_is_left_out():
    done = {("a", 0): {"val_auc": 0.9, "val_ll": -0.3}, ("a", 1): {"val_auc": 0.8},
            ("b", 0): {"val_auc": 0.7, "val_ll": -0.5}, ("b", 1): {"val_auc": 0.6}}
    agreement = threshold_free_agreement(done, ["a", "b"], 2)
    assert set(agreement) == {"val_auc"}
    assert agreement["val_auc"]["seed_tau"] == 1.0  # both seeds put a above b


def test_vary_order_keeps_the_initialisation_and_changes_the_run(both_ways, tmp_path):
    _, default, _, _ = both_ways
    out = tmp_path / "order.json"
    run_benchmark(out, 1, "2:1", "--vary", "order")
    runs = records(out)
    assert runs["2:1", 0] == default["2:1", 0]  # seed 0 is seed 0 either way
    # Seed 1 starts where seed 0 does (same initialisation, fitted heads), then trains on
    # another order, so its epoch ends elsewhere.
    assert runs["2:1", 1]["val_at_start"] == runs["2:1", 0]["val_at_start"]
    assert runs["2:1", 1]["history"] != runs["2:1", 0]["history"]
    assert default["2:1", 1]["val_at_start"] != default["2:1", 0]["val_at_start"]


def test_a_seed_free_start_is_computed_once_per_design_and_changes_nothing(tmp_path):
    principal = ("--prompt-init", "principal")
    shared, alone = tmp_path / "shared.json", tmp_path / "alone.json"
    result = run_benchmark(shared, 2, "2:1,0:4", *principal)
    assert result["prompt_init"] == "principal"
    runs = records(shared)
    log = {(r["design"], r["seed"]): r for r in map(
        json.loads, shared.with_suffix(".runs.jsonl").read_text().splitlines())}
    for design in ("2:1", "0:4"):
        # Every seed starts from the same weights; the first computed them, the second
        # loaded them (no probe fit), and then each trains on its own data order.
        assert runs[design, 1]["val_at_start"] == runs[design, 0]["val_at_start"]
        assert runs[design, 1]["history"] != runs[design, 0]["history"]
        assert log[design, 1]["init_seconds"] < log[design, 0]["init_seconds"] / 5
    # Seed 1 trained on its own, computing its start afresh, is the same run bit for bit.
    subprocess.run([sys.executable, str(ROOT / "bench" / "ranking.py"), "--space", "tiny",
                    "--data", "digits:examples_per_image=1", "--designs", "2:1",
                    "--trainings", "2:1@1", "--no-summary", "--epochs", "1", "--seeds", "2",
                    "--threads", "1", "--out", str(alone), *principal], check=True,
                   capture_output=True, cwd=ROOT, timeout=600)
    assert records(alone)["2:1", 1] == runs["2:1", 1]
