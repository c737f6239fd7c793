"""`autopmf search --finalists K`: the top K candidates by inherited score train standalone,
and the best validation score wins (autopmf.finalists)."""

import json

import pytest
import yaml

from autopmf import train_arch
from autopmf.cli import main
from autopmf.errors import AutopmfError
from autopmf.finalists import finalist_train_config, pick_winner, shortlist
from autopmf.search import SearchConfig, run_search
from autopmf.search_log import ranked
from autopmf.supernet_train import SupernetConfig
from tests.test_search import DATA, budget_gb, log_of, space  # noqa: F401  (fixtures)


def config(budget_gb, finalists=3, finalist_epochs=1):
    return SearchConfig(budget_gb=budget_gb, trials=8, population=4, tournament=2,
                        mutation_prob=0.3, seed=5, progress=False, finalists=finalists,
                        finalist_epochs=finalist_epochs,
                        supernet=SupernetConfig(epochs=1, batch_size=16, progress=False,
                                                lr=0.02, head_lr_scale=1, seed=5,
                                                prompt_init="fixed"))


@pytest.fixture(scope="module")
def finished(space, budget_gb, tmp_path_factory):
    out = tmp_path_factory.mktemp("finalists")
    result = run_search(space, DATA, out, config(budget_gb))
    return out, result


def entry(trial, arch, score, mem_gb=0.1, status="scored"):
    return {"trial": trial, "arch": arch, "score": score, "mem_gb": mem_gb, "status": status}


def test_shortlist_takes_the_best_distinct_designs_within_the_budget(space):
    on = {"fusion_0": 1, "prompt_0": 2, "fusion_1": 0, "prompt_1": 1, "fusion_2": 0,
          "prompt_2": 1}
    same_on = dict(on, prompt_1=4)  # slot 1 is off: the same design as `on`
    other = dict(on, fusion_1=1)
    third = dict(on, fusion_2=1)
    entries = [entry(1, on, 0.70), entry(2, same_on, 0.70, status="scored"),
               entry(3, other, 0.90, mem_gb=0.5),  # over the budget
               entry(4, other, 0.60), entry(5, third, 0.80, status="duplicate"),
               entry(6, third, float("nan"), status="failed"), entry(7, third, 0.65)]
    picked = shortlist(space, entries, 0.2, 3)
    assert [e["trial"] for e in picked] == [1, 7, 4]
    assert [e["trial"] for e in shortlist(space, entries, 0.2, 1)] == [1]
    assert len(shortlist(space, entries, 0.2, 10)) == 3  # fewer designs than asked: all


def test_winner_is_the_best_validation_score_then_inherited_then_rank():
    finalists = [{"rank": 1, "inherited_score": 0.9, "val_score": 0.70},
                 {"rank": 2, "inherited_score": 0.8, "val_score": 0.75},
                 {"rank": 3, "inherited_score": 0.7, "val_score": 0.75}]
    assert pick_winner(finalists)["rank"] == 2
    assert pick_winner([dict(f, val_score=0.5) for f in finalists])["rank"] == 1
    tied = [dict(f, val_score=0.5, inherited_score=0.5) for f in finalists]
    assert pick_winner(tied)["rank"] == 1


def test_finalists_train_as_the_supernet_did_for_their_own_epochs():
    supernet = SupernetConfig(epochs=6, lr=3e-4, seed=7, data_seed=2, prompt_init="fixed",
                              batch_size=16, distill=True, sampling="edges")
    cfg = finalist_train_config(supernet, epochs=2, progress=False)
    assert type(cfg).__name__ == "TrainConfig"
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.data_seed, cfg.prompt_init, cfg.batch_size,
            cfg.progress) == (2, 3e-4, 7, 2, "fixed", 16, False)


def test_the_best_finalist_by_standalone_validation_becomes_best_arch(finished, space,
                                                                     budget_gb):
    out, result = finished
    record = json.loads((out / "finalists.json").read_text())
    top = shortlist(space, log_of(out), budget_gb, 3)
    assert len(top) == 3 and record["epochs"] == 1
    assert [f["trial"] for f in record["finalists"]] == [e["trial"] for e in top]
    assert [f["inherited_score"] for f in record["finalists"]] == [e["score"] for e in top]
    for f in record["finalists"]:  # each one a real standalone training of that design
        metrics = json.loads((out / f["run"] / "metrics.json").read_text())
        assert metrics["arch"] == space.validate(f["arch"])
        assert metrics["val_score"] == f["val_score"]
        assert len(metrics["history"]) == 1  # --finalist-epochs 1
        assert metrics["train_config"]["lr"] == 0.02
        assert metrics["train_config"]["seed"] == 5
    assert len({f["val_score"] for f in record["finalists"]}) > 1  # scores that choose
    winner = max(record["finalists"], key=lambda f: f["val_score"])
    assert record["winner"] == winner
    doc = yaml.safe_load((out / "best_arch.yaml").read_text())
    assert doc["arch"] == winner["arch"] and doc["trial"] == winner["trial"]
    assert doc["score"] == winner["inherited_score"]  # the log's score, not the finalist's
    assert doc["finalist_val_score"] == winner["val_score"]
    assert "finalists" in doc["chosen_by"]
    assert result["best"]["trial"] == winner["trial"]
    assert ranked(log_of(out), budget_gb)[0]["trial"] == top[0]["trial"]


def test_a_resumed_search_reads_its_finalists_back(finished, space, budget_gb, monkeypatch):
    out, _ = finished
    before = {name: (out / name).read_text() for name in ("best_arch.yaml", "finalists.json")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished finalist was trained again")

    monkeypatch.setattr(train_arch, "fit", no_training)
    run_search(space, DATA, out, config(budget_gb), resume=True)
    def timeless(record):  # the seconds are the read-back's
        def drop(f):
            return {k: v for k, v in f.items() if k != "seconds"}
        return dict(record, finalists=[drop(f) for f in record["finalists"]],
                    winner=drop(record["winner"]))

    record = json.loads((out / "finalists.json").read_text())
    assert timeless(record) == timeless(json.loads(before["finalists.json"]))
    assert (out / "best_arch.yaml").read_text() == before["best_arch.yaml"]


def test_finalist_settings_are_part_of_the_search(finished, space, budget_gb):
    out, _ = finished
    with pytest.raises(AutopmfError, match="different search"):
        run_search(space, DATA, out, config(budget_gb, finalists=2), resume=True)
    with pytest.raises(AutopmfError, match="different search"):
        run_search(space, DATA, out, config(budget_gb, finalists=0), resume=True)


@pytest.mark.parametrize("finalists, epochs, message", [
    (-1, 1, "--finalists must be 0"), (2, 0, "--finalist-epochs must be at least 1")])
def test_bad_finalist_options_fail_in_one_line_and_write_nothing(space, budget_gb, tmp_path,
                                                                 finalists, epochs, message):
    with pytest.raises(AutopmfError, match=message) as info:
        run_search(space, DATA, tmp_path / "run", config(budget_gb, finalists, epochs))
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()
    assert main(["search", "--space", "tiny", "--budget-gb", "1", "--finalists", str(finalists),
                 "--finalist-epochs", str(epochs), "--out", str(tmp_path / "cli")]) == 2
    assert not (tmp_path / "cli").exists()


def test_log_shows_the_finalists_and_marks_the_winner(finished, capsys):
    out, _ = finished
    record = json.loads((out / "finalists.json").read_text())
    assert main(["log", str(out)]) == 0
    text = capsys.readouterr().out
    assert "finalists: the top 3 by inherited accuracy, each trained 1 epoch(s)" in text
    marked = [line for line in text.splitlines() if line.endswith("<- winner")]
    assert len(marked) == 1
    assert marked[0].split()[1] == str(record["winner"]["trial"])
    assert f"{record['winner']['val_score']:.4f}" in marked[0]
