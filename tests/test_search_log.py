"""SearchLog: the one owner of search_log.jsonl (reading, appending, schema, best), so that
the search's best_arch.yaml and `autopmf log` agree on what "best" is."""

import json
import math

import pytest
import yaml

from autopmf.errors import AutopmfError
from autopmf.layout import CONFIG, SEARCH_LOG
from autopmf.report import summarize
from autopmf.search_log import SearchLog, best_entry, status_for

BUDGET = 1.0
ARCH = {"fusion_0": 1, "prompt_0": 2}


def entry(trial, score, mem_gb=0.5, status="scored", arch=None):
    return {"trial": trial, "arch": arch or dict(ARCH, prompt_0=trial), "mem_gb": mem_gb,
            "score": score, "status": status, "seconds": 0.1}


def tricky_entries():
    """The true best is trial 3 (0.7). Each other entry would beat it under a looser rule."""
    nan = float("nan")
    return [
        entry(1, 0.6),
        entry(2, nan, status="failed"),      # no finite score
        entry(3, 0.7, mem_gb=0.6),
        entry(4, 0.7, mem_gb=0.4, status="duplicate"),  # a repeat: never listed again
        entry(5, 0.95, mem_gb=BUDGET + 0.1),  # over the budget
        entry(6, nan),                        # a NaN left by an older search as "scored"
        entry(7, 0.9, status="failed"),       # failed: whatever number it carries
        entry(8, math.inf),                   # not a finite score either
    ]


def test_round_trip_keeps_every_entry_in_order(tmp_path):
    path = tmp_path / SEARCH_LOG
    log = SearchLog.start(path, resume=False)
    for e in tricky_entries():
        log.append(e)
    again = SearchLog.read(path)
    # NaN != NaN: compare through JSON, which writes both the same way
    assert json.dumps(again.entries) == json.dumps(log.entries) == json.dumps(tricky_entries())
    assert SearchLog.start(path, resume=False).entries == [] and path.read_text() == ""


def test_best_ignores_nan_duplicates_over_budget_and_failed(tmp_path):
    log = SearchLog(tmp_path / SEARCH_LOG, tricky_entries())
    assert log.best(BUDGET)["trial"] == 3
    assert [e["trial"] for e in log.ranked(BUDGET)] == [3, 1]
    assert log.best()["trial"] == 5  # without a budget (the progress line), over-budget counts
    assert [e["trial"] for e in log.pareto()] == [1, 3, 5]
    assert best_entry([entry(1, float("nan"))]) is None


def test_search_and_log_command_name_the_same_best(tmp_path):
    (tmp_path / CONFIG).write_text(yaml.safe_dump({"budget_gb": BUDGET, "metric": "accuracy"}))
    log = SearchLog.start(tmp_path / SEARCH_LOG, resume=False)
    for e in tricky_entries():
        log.append(e)
    s = summarize(tmp_path)
    assert s["best"]["trial"] == log.best(BUDGET)["trial"] == 3
    assert (s["scored"], s["duplicates"], s["failed"], s["over_budget"]) == (3, 1, 2, 1)
    assert [e["trial"] for e in s["top"]] == [3, 1]


def test_a_new_candidate_with_no_finite_score_is_failed():
    assert status_for(0.5) == "scored" and status_for(0.0) == "scored"
    assert status_for(float("nan")) == "failed" and status_for(-math.inf) == "failed"


def test_resume_drops_a_half_written_last_line_with_a_warning(tmp_path, capsys):
    path = tmp_path / SEARCH_LOG
    path.write_text(json.dumps(entry(1, 0.5)) + "\n" + '{"trial": 2, "arch": {"fusi')
    log = SearchLog.start(path, resume=True)
    assert "half-written last line 2" in capsys.readouterr().err
    assert [e["trial"] for e in log.entries] == [1]
    log.append(entry(2, 0.6))  # starts on a clean line
    assert [e["trial"] for e in SearchLog.read(path).entries] == [1, 2]
    assert capsys.readouterr().err == ""


def test_a_bad_entry_is_refused_on_append_and_on_read(tmp_path):
    log = SearchLog.start(tmp_path / SEARCH_LOG, resume=False)
    with pytest.raises(AutopmfError, match="unknown status 'lost'"):
        log.append(entry(1, 0.5, status="lost"))
    with pytest.raises(AutopmfError, match="has no 'mem_gb'"):
        log.append({"trial": 1, "arch": ARCH, "status": "scored"})
    assert log.entries == [] and log.path.read_text() == ""
    log.path.write_text(json.dumps(entry(1, 0.5, status="lost")) + "\n")
    with pytest.raises(AutopmfError, match="line 1: unknown status"):
        SearchLog.read(log.path)
