"""The `autopmf` command as one tool: one spelling of the run folder, help and defaults on
every option, --version, `python -m autopmf`, --json results, one-line usage errors, and a
README that names only options --help knows."""

import argparse
import json
import re
import subprocess
import sys

import pytest

from autopmf import __version__
from autopmf.cli import build_parser, main, resolve_run
from tests.test_faults import DATA, REPO, assert_one_line_error

QUICK = ["--epochs", "1", "--batch-size", "16", "--seed", "1", "--threads", "1"]


def subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_every_option_has_help_and_shows_its_default():
    _, commands = subcommands()
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"autopmf {name} {action.option_strings or action.dest}: no help"
    text = commands["search"].format_help()
    assert "(default: 60)" in text and "(default: evolution)" in text
    assert "default: None" not in text and "default: False" not in text


def test_readme_names_only_options_that_help_knows():
    parser, commands = subcommands()
    known = {s for c in [parser, *commands.values()] for a in c._actions
             for s in a.option_strings}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", readme)) - {"--nproc_per_node"}
    assert named - known == set()
    code = "".join(re.findall(r"```bash\n(.*?)```", readme, flags=re.S))
    used = re.findall(r"^autopmf +(\w+)", code, flags=re.M)
    assert len(used) > 5 and set(used) <= set(commands), used


def test_version_and_python_dash_m(capsys):
    with pytest.raises(SystemExit):  # argparse's own exit, caught by main below
        build_parser().parse_args(["--version"])
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"autopmf {__version__}"
    done = subprocess.run([sys.executable, "-m", "autopmf", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"autopmf {__version__}"


@pytest.mark.parametrize("argv, expected", [
    (["search", "--trials", "x"], "invalid int value: 'x'"),
    (["nope"], "invalid choice: 'nope'"),
    (["search", "--space", "tiny"], "required"),
    (["retrain", "--arch", "a.yaml", "--init", "weights"], "invalid choice: 'weights'"),
    (["train", "--arch", "reference:2:2", "--init-draws", "0"], "1 or more; got '0'"),
    (["retrain", "--arch", "a.yaml", "--init-draws", "two"], "1 or more; got 'two'"),
])
def test_a_usage_error_is_one_line_and_exit_2(capsys, argv, expected):
    assert_one_line_error(main(argv), capsys.readouterr().err, expected)


def test_predict_takes_run_positionally_and_still_as_dash_dash_run(capsys):
    parser = build_parser()
    for argv in (["predict", "runs/r"], ["predict", "--run", "runs/r"]):
        args = parser.parse_args(argv + ["--image", "a.png", "--text", "a 7"])
        resolve_run(args)
        assert args.run == "runs/r"
        assert args.device is None  # auto-detected like every other command's
    code = main(["predict", "--image", "a.png", "--text", "a 7"])
    assert_one_line_error(code, capsys.readouterr().err, "name the run folder")
    code = main(["predict", "runs/a", "--run", "runs/b", "--image", "a.png", "--text", "a 7"])
    assert_one_line_error(code, capsys.readouterr().err, "two run folders")


def one_json_object(out: str) -> dict:
    lines = out.splitlines()
    assert len(lines) == 1, out  # nothing but the result on stdout
    return json.loads(lines[0])


def test_search_train_and_retrain_print_one_json_result(tmp_path, capsys):
    run = tmp_path / "search"
    assert main(["search", "--space", "tiny", "--data", DATA, "--budget-gb", "0.004",
                 "--trials", "2", "--population", "2", "--out", str(run), *QUICK,
                 "--json"]) == 0
    out, err = capsys.readouterr()
    result = one_json_object(out)
    assert result["trials"] == 2 and result["best"]["mem_gb"] <= 0.004
    assert result["out"] == str(run) and "data:" in err  # the start-up lines went to stderr

    assert main(["retrain", "--arch", str(run / "best_arch.yaml"), "--out",
                 str(tmp_path / "retrain"), "--no-baselines", *QUICK, "--json"]) == 0
    metrics = one_json_object(capsys.readouterr().out)
    assert metrics["out"] == str(tmp_path / "retrain") and "val_score" in metrics

    assert main(["train", "--space", "tiny", "--arch", "reference:1:1", "--data", DATA,
                 "--no-baselines", "--out", str(tmp_path / "train"), *QUICK, "--json"]) == 0
    metrics = one_json_object(capsys.readouterr().out)
    assert metrics["fused_slots"] and "test_score" in metrics


def test_init_draws_reaches_the_training_config_of_train_retrain_and_the_demos_retrain():
    from autopmf.cli import _train_config
    from autopmf.space import load_space

    space = load_space("tiny")
    for argv in (["train", "--arch", "reference:2:2", "--out", "o"],
                 ["retrain", "--arch", "a.yaml"], ["demo"]):
        assert _train_config(build_parser().parse_args(argv), space).init_draws == 1
        parsed = build_parser().parse_args(argv + ["--init-draws", "4"])
        assert _train_config(parsed, space).init_draws == 4


def test_demo_trains_a_distilled_supernet_from_the_fixed_start_at_the_yardsticks_rate():
    """The demo's supernet and its winner's retraining share --lr and --prompt-init; by
    default those the ranking was measured at, with in-place distillation and no warm-up."""
    from autopmf.cli import _supernet_config, _train_config, _warmup_epochs
    from autopmf.space import load_space

    space = load_space("tiny")
    args = build_parser().parse_args(["demo"])
    supernet, retrain = _supernet_config(args, space), _train_config(args, space)
    assert (supernet.epochs, supernet.lr, supernet.prompt_init, supernet.distill,
            supernet.sampling, supernet.warmup_epochs) == (6, 3e-4, "fixed", True,
                                                           "sandwich", 0)
    assert (retrain.lr, retrain.prompt_init, args.retrain_epochs) == (3e-4, "fixed", 8)
    args = build_parser().parse_args(["demo", "--no-distill", "--epochs", "0", "--lr", "3e-3",
                                      "--prompt-init", "paper"])
    assert not _supernet_config(args, space).distill and _warmup_epochs(args) == 0
    assert (_train_config(args, space).lr, _train_config(args, space).prompt_init) == (
        3e-3, "paper")
    # Elsewhere --distill stays off unless asked for.
    search = ["search", "--space", "tiny", "--data", DATA, "--budget-gb", "1", "--out", "o"]
    assert not _supernet_config(build_parser().parse_args(search), space).distill
    assert _supernet_config(build_parser().parse_args(search + ["--distill"]), space).distill


def test_slot_cache_gib_sets_the_runs_ram_budget_and_refuses_a_negative(tmp_path, capsys):
    from autopmf.cli import _supernet_config
    from autopmf.space import load_space

    space = load_space("tiny")
    argv = ["search", "--space", "tiny", "--data", DATA, "--budget-gb", "0.004", "--out",
            str(tmp_path / "run")]
    parsed = build_parser().parse_args(argv + ["--slot-cache-gib", "0.5"])
    assert _supernet_config(parsed, space).cache_max_bytes == 2**29
    default = _supernet_config(build_parser().parse_args(argv), space)
    assert default.cache_max_bytes == 2**30
    from autopmf.supernet_train import supernet_fingerprint
    # RAM, not results: a run resumes, and a supernet is reused, under another budget.
    assert supernet_fingerprint(space, DATA, _supernet_config(parsed, space)) == \
        supernet_fingerprint(space, DATA, default)
    for bad in ("-1", "inf", "nan"):
        assert_one_line_error(main(argv + ["--slot-cache-gib", bad]), capsys.readouterr().err,
                              "--slot-cache-gib must be a finite 0 or more")
    assert not (tmp_path / "run").exists()
