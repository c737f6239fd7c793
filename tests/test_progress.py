"""Issue 20: a run the user can follow, with output going to a file (stderr not a TTY).

`train`, `search` and a demo-like run on the tiny space: start-up lines before any training
step, a progress line per search candidate, the final summary's budget as given; the plot
data marks the PMF reference; one GiB formatter; --quiet / --verbose on every command.
"""

import json
import re

import pytest
import yaml

from autopmf import cli, progress
from autopmf.cli import build_parser, main
from autopmf.report import print_summary, summarize
from autopmf.space import load_space
from autopmf.units import gib
from tests.conftest import budget_between

DATA = "digits:examples_per_image=1"
STARTUP = ("data: digits", "encoders (frozen", "feature cache: ", "memory: ")


@pytest.fixture(autouse=True)
def plain_lines(monkeypatch):
    """Every loop writes its plain progress line at once (the 30 s interval, shrunk)."""
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    yield
    progress.set_verbosity(progress.NORMAL)


def budget_text() -> str:
    """A budget between the tiny space's smallest and largest designs, as a user types it."""
    space = load_space("tiny")  # what --space tiny loads
    return f"{budget_between(space):.3g}"


def first_index(lines: list[str], prefix: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


def check_startup_before_training(lines: list[str], first_step: str) -> None:
    step = first_index(lines, first_step)
    for stage in STARTUP:
        assert first_index(lines, stage) < step, (stage, lines[:12])
    assert re.match(r"feature cache: (built|reused) .* MiB", lines[first_index(
        lines, "feature cache: ") + 1] if "computing" in lines[first_index(
            lines, "feature cache: ")] else lines[first_index(lines, "feature cache: ")])


def test_gib_never_drops_digits_the_user_typed():
    assert gib(0.285, exact=True) == "0.285"
    assert gib(2, exact=True) == "2.00"
    assert gib(0.004, exact=True) == "0.004"
    assert gib(1e-5, exact=True) == "0.00001"
    assert gib(0.28734) == "0.287"
    assert gib(0.001234) == "0.00123"  # never 0.000


def test_train_output_to_a_file(tmp_path, capsys):
    out = tmp_path / "ref"
    assert main(["train", "--space", "tiny", "--arch", "reference:2:2", "--data", DATA,
                 "--out", str(out), "--epochs", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # A plain step-progress line (stderr is no terminal here) comes only after the start-up.
    check_startup_before_training(lines, "train 1/1: ")
    assert any(re.match(r"train 1/1: \d+/\d+ steps, loss [\d.]+ \| .*ETA", ln) for ln in lines)
    assert first_index(lines, "baselines: done") > first_index(lines, "train epoch 1/1")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mem_gb_measured"] > 0 and metrics["mem_gb_predicted"] > 0
    assert any(ln.startswith("peak training memory: measured ") for ln in lines)


def test_search_output_to_a_file_and_the_reference_in_the_plot(tmp_path, capsys):
    out, budget = tmp_path / "s", budget_text()
    trials = 5
    assert main(["search", "--space", "tiny", "--data", DATA, "--budget-gb", budget,
                 "--out", str(out), "--trials", str(trials), "--population", "3",
                 "--epochs", "2", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    check_startup_before_training(lines, "supernet 1/2: ")
    memory = lines[first_index(lines, "memory: ")]
    assert memory.startswith(f"memory: budget {budget} GiB") and "designs fit" in memory
    # One line per candidate, in order, each naming trial, design, score and best so far.
    logged = (out / "search_log.jsonl").read_text().splitlines()
    per_candidate = [ln for ln in lines if ln.startswith("search ")]
    assert len(logged) >= 3 and [ln.split(":")[0] for ln in per_candidate] == [
        f"search {i}/{trials}" for i in range(1, len(logged) + 1)]
    assert all(re.search(r"trial \d+ (fuse|none).*score [\d.]+.*; best [\d.]+ \(trial \d+",
                         ln) for ln in per_candidate)
    summary = lines[first_index(lines, "best of ")]
    assert f"(budget {budget} GiB)" in summary

    assert main(["log", str(out), "--plot"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"budget {budget} GiB |")
    assert "PMF reference (top " in shown
    plot = json.loads((out / "plots" / "score_vs_memory.json").read_text())
    reference = plot["reference"]
    assert reference["score_kind"] == "inherited"
    assert isinstance(reference["score"], float)
    assert reference["mem_gb"] <= plot["budget_gb"] == float(budget)
    assert (out / "plots" / "score_vs_memory.png").stat().st_size > 0


def test_demo_like_run_on_the_tiny_space(tmp_path, capsys, monkeypatch):
    budget = budget_text()
    monkeypatch.setattr(cli, "DEMO_SPACE", "tiny")
    monkeypatch.setattr(cli, "DEMO_DATA", DATA)
    monkeypatch.setattr(cli, "DEMO_BUDGET_GB", float(budget))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--trials", "4", "--epochs", "2",
                 "--retrain-epochs", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    check_startup_before_training(lines, "supernet 1/2: ")
    logged = (out / "search_log.jsonl").read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines if ln.startswith("search ")] == [
        f"search {i}/4" for i in range(1, len(logged) + 1)]
    retrain = first_index(lines, "retraining the winner")
    assert first_index(lines, "train 1/1: ") > retrain  # the retraining reports progress too
    assert first_index(lines, "baselines: done") > retrain
    assert lines[first_index(lines, "budget ")].startswith(f"budget {budget} GiB |")
    assert lines[first_index(lines, "retrained winner: ")].endswith(f"budget {budget} GiB")
    # The winner is retrained into RUN/retrain: when it is the reference, the plot says so.
    plot = json.loads((out / "plots" / "score_vs_memory.json").read_text())
    assert plot["reference"]["score_kind"] in ("inherited", "retrained")
    # The supernet trained with distillation; the winner retrained at the same rate and start.
    supernet = yaml.safe_load((out / "config.yaml").read_text())["supernet"]
    assert (supernet["distill"], supernet["lr"], supernet["prompt_init"]) == (True, 3e-4, "fixed")
    retrain = json.loads((out / "retrain" / "metrics.json").read_text())["train_config"]
    assert (retrain["lr"], retrain["prompt_init"], retrain["epochs"]) == (3e-4, "fixed", 1)


def test_quiet_says_nothing_but_results(capsys):
    progress.set_verbosity(progress.QUIET)
    progress.say("data: x")
    with progress.Progress("search", 2, unit="candidate") as bar:
        bar.update(1)
        bar.item("trial 1")
    assert capsys.readouterr().out == ""
    progress.set_verbosity(progress.NORMAL)
    with progress.Progress("search", 2, unit="candidate") as bar:
        bar.update(1)
        bar.item("trial 1")
    assert "search 1/2: trial 1 | " in capsys.readouterr().out


def test_quiet_and_verbose_on_every_command():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        options = {s for action in command._actions for s in action.option_strings}
        assert {"--quiet", "--verbose"} <= options, name


def test_log_names_the_tie_break(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"budget_gb": 0.285, "metric": "accuracy"}))
    arch = {"fusion_0": 1, "prompt_0": 2}
    entries = [{"trial": 1, "arch": arch, "mem_gb": 0.2, "score": 0.7, "status": "scored"},
               {"trial": 2, "arch": arch, "mem_gb": 0.25, "score": 0.9, "status": "scored"},
               {"trial": 3, "arch": arch, "mem_gb": 0.21, "score": 0.9, "status": "scored"}]
    (run / "search_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    summary = summarize(run)
    print_summary(summary)
    text = capsys.readouterr().out
    assert text.startswith("budget 0.285 GiB |")
    assert summary["tie_break"]["first_trial"] == 2 and summary["best"]["trial"] == 3
    assert "the winner, trial 3, ties trial 2's accuracy and wins the tie on memory" in text


def test_a_commands_output_settings_end_with_the_command(capsys, tmp_path):
    """main(--json --quiet) sends lines to stderr and silences them for that call only: a
    caller that goes on in the same process (a notebook, the next test) gets its own back."""
    from autopmf.cli import main
    from autopmf.progress import say

    assert main(["log", str(tmp_path / "no-such-run"), "--json", "--quiet"]) == 2
    capsys.readouterr()
    say("after the command")
    captured = capsys.readouterr()
    assert "after the command" in captured.out and "after the command" not in captured.err
