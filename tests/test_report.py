"""`autopmf log`: summary numbers, Pareto front, compact architectures, JSON, plots, errors."""

import argparse
import json
import random

import pytest
import yaml
from PIL import Image

from autopmf.errors import AutopmfError
from autopmf.report import describe_arch, summarize
from autopmf.search_log import pareto_front, read_search_log
from autopmf.report_cli import add_log_parser

BUDGET = 2.0
SLOTS = [0, 1, 2]


def _lines():
    """30 candidates of a 3-slot shared-mode space, with the odd cases a real log has."""
    rng = random.Random(0)
    lines = []
    for t in range(1, 28):
        arch = {}
        for j in SLOTS:
            arch[f"fusion_{j}"] = rng.randint(0, 1)
            arch[f"prompt_{j}"] = rng.choice([1, 2, 4])
        mem = 0.6 + sum(0.3 + 0.05 * arch[f"prompt_{j}"] for j in SLOTS if arch[f"fusion_{j}"])
        lines.append(dict(trial=t, arch=arch, mem_gb=round(mem, 3),
                          score=round(rng.uniform(0.5, 0.9), 3), status="scored",
                          seconds=1.5))
    lines.append(dict(lines[3], trial=28, status="duplicate"))  # repeats its twin's score
    lines.append(dict(trial=29, arch=lines[0]["arch"], mem_gb=1.0, score=None,
                      status="failed", seconds=0.2))
    # An exact tie (memory and score) with trial 2: only the earlier may be on the front.
    lines.append(dict(lines[1], trial=30))
    # One scored candidate over the budget (a search bug `log` must expose) with top score.
    lines[4].update(mem_gb=BUDGET + 0.5, score=0.99)
    return lines


@pytest.fixture()
def run(tmp_path):
    space = dict(name="tiny", text_encoder="tiny-bert:depth=3",
                 image_encoder="tiny-dinov2:depth=4", fusable_slots=SLOTS,
                 prompt_lengths=[1, 2, 4], prompt_mode="shared", mapping_hidden=[],
                 batch_size=8, image_size=28, max_text_len=16, precision="fp32")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        dict(budget_gb=BUDGET, trials=32, seed=0, data="digits", space=space,
             metric="accuracy")))
    text = "".join(json.dumps(e) + "\n" for e in _lines())
    (tmp_path / "search_log.jsonl").write_text(text + '{"trial": 31, "arch": {"fusi')
    return tmp_path


def _log(argv, capsys):
    parser = argparse.ArgumentParser(prog="autopmf")
    add_log_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["log"] + argv)
    assert args.func(args) == 0
    return capsys.readouterr()


def test_summary_numbers(run, capsys):
    lines = _lines()
    s = summarize(run, top_k=4)
    assert "half-written last line 31" in capsys.readouterr().err
    scored = [e for e in lines if e["status"] == "scored"]
    feasible = [e for e in scored if e["mem_gb"] <= BUDGET]
    assert (s["trials"], s["scored"], s["duplicates"], s["failed"]) == (30, 28, 1, 1)
    assert s["feasible"] == len(feasible) and s["over_budget"] == 1
    best = max(feasible, key=lambda e: (e["score"], -e["mem_gb"], -e["trial"]))
    assert s["best"]["trial"] == best["trial"] and s["best"]["score"] == best["score"]
    assert s["best"]["score"] < 0.99  # the over-budget candidate is never the best
    assert [e["score"] for e in s["top"]] == sorted((e["score"] for e in feasible),
                                                   reverse=True)[:4]
    assert s["best_so_far"][-1][1] == best["score"]
    curve = [b for _, b in s["best_so_far"]]
    assert curve == sorted(curve)
    assert s["seconds"] == pytest.approx(sum(e["seconds"] for e in lines))


def test_pareto_front_matches_brute_force(run):
    entries = read_search_log(run / "search_log.jsonl")
    scored = [e for e in entries if e["status"] == "scored"]

    def beaten(e):
        return any((o["mem_gb"] <= e["mem_gb"] and o["score"] >= e["score"]
                    and (o["mem_gb"] < e["mem_gb"] or o["score"] > e["score"]
                         or o["trial"] < e["trial"]))  # exact tie: the earlier trial wins
                   for o in scored if o is not e)

    expected = sorted((e["trial"] for e in scored if not beaten(e)),
                      key=lambda t: next(e["mem_gb"] for e in scored if e["trial"] == t))
    front = pareto_front(entries)
    assert [e["trial"] for e in front] == expected and len(front) >= 2
    assert 30 not in expected  # the tie of trial 2 never is
    assert [e["mem_gb"] for e in front] == sorted(e["mem_gb"] for e in front)


def test_describe_arch():
    arch = {"fusion_3": 1, "prompt_3": 2, "fusion_4": 0, "prompt_4": 8, "fusion_5": 1,
            "prompt_5": 4}
    assert describe_arch(arch, [3, 4, 5]) == "fuse 3:M2 5:M4"
    assert describe_arch(arch) == "fuse 3:M2 5:M4"  # slots recovered from the choice names
    assert describe_arch({"fusion_3": 0, "prompt_3": 1}, [3]) == "none"
    split = {"fusion_5": 1, "qp_5": 4, "qcp_5": 0, "fcp_5": 2, "mapping_5": 96}
    assert describe_arch(split, [5]) == "fuse 5:q4c0f2/h96"


def test_log_json_is_one_object(run, capsys):
    out = _log([str(run), "--json", "--top", "3"], capsys).out
    obj = json.loads(out)  # fails unless stdout holds exactly one JSON document
    assert {"budget_gb", "trials", "over_budget", "best"} <= set(obj)
    assert obj["budget_gb"] == BUDGET and obj["over_budget"] == 1 and len(obj["top"]) == 3
    assert {"arch", "mem_gb", "score"} <= set(obj["best"])


def test_log_text_and_plots(run, capsys):
    out = _log([str(run), "--plot"], capsys).out
    assert "budget 2.00 GiB" in out and "Pareto front" in out and "WARNING: 1 scored" in out
    pngs = sorted((run / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["best_so_far.png", "score_vs_memory.png",
                                      "slot_fusion_frequency.png"]
    assert not list((run / "plots").glob(".*"))  # no temp files left behind
    for p in pngs:
        assert p.stat().st_size > 5000 and str(p) in out
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def test_corrupt_middle_line_is_named(run):
    log = run / "search_log.jsonl"
    rows = log.read_text().splitlines()
    rows[9] = rows[9][:20]
    log.write_text("\n".join(rows) + "\n")
    with pytest.raises(AutopmfError, match="line 10 is not valid JSON"):
        read_search_log(log)


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(AutopmfError, match="does not exist: run `autopmf search"):
        summarize(tmp_path / "nope")
    with pytest.raises(AutopmfError, match="not a search run"):
        summarize(tmp_path)
