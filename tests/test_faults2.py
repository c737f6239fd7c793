"""Fault injection, round two (issue #17): --force, two writers, NaN and degenerate settings,
weights that do not belong, tracebacks, misleading messages.

Each case ends with one line `autopmf: error: ...` and exit code 2 (nothing deleted that
autopmf did not write, nothing written that looks finished), or with a clean run.
RELIABILITY.md lists these cases and their outcomes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from autopmf.cli import main
from tests.test_faults import (DATA, REPO, assert_one_line_error, complete_looking,
                               tiny_space_file, write)

BUDGET = "0.004"  # GiB: a budget below 0.01, which the log once showed as "0.00 GiB"
QUICK = ["--epochs", "1", "--batch-size", "16", "--seed", "1", "--threads", "1", "--quiet"]
NO_DATA = "jsonl:/nonexistent-autopmf-data"  # fails fast, after every option is checked


def search_argv(out: Path, *extra: str, space: str | Path = "tiny", data: str = DATA
                ) -> list[str]:
    return ["search", "--space", str(space), "--data", data, "--budget-gb", BUDGET,
            "--trials", "2", "--population", "2", "--out", str(out), *QUICK, *extra]


def train_argv(out: Path | str, *extra: str, data: str = DATA) -> list[str]:
    return ["train", "--space", "tiny", "--arch", "reference:1:1", "--data", data,
            "--no-baselines", "--out", str(out), *QUICK, *extra]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory, cache_dir):
    """A finished search (its supernet's epoch-1 checkpoint kept); warms the profile cache."""
    out = tmp_path_factory.mktemp("search") / "run"
    assert main(search_argv(out)) == 0
    return out


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(train_argv(out)) == 0
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def fails_with(capsys, argv: list[str], expected: str) -> None:
    """`argv` ends with one line holding `expected`, exit code 2 (never a traceback)."""
    capsys.readouterr()
    code = main(argv)
    assert_one_line_error(code, capsys.readouterr().err, expected)


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def edit_header(path: Path, change) -> None:
    """Rewrite a safetensors file's JSON header with `change(header)`, data bytes as they are."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size:])


def first_tensor(header: dict) -> dict:
    return header[next(k for k in sorted(header) if k != "__metadata__")]


def predict_argv(run: Path, image: Path, *extra: str) -> list[str]:
    return ["predict", "--run", str(run), "--image", str(image), "--text", "this is a 7",
            "--threads", "1", *extra]


@pytest.fixture()
def digit_png(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("RGB", (64, 64), (30, 60, 90)).save(path)
    return path


# ----- 1. --force deletes nothing before everything is checked, and only autopmf's files --
def users_folder(root: Path) -> Path:
    write(root / "checkpoints" / "x", "keep")
    write(root / "config.yaml", "n\n")
    return root


def test_force_with_an_empty_out_deletes_nothing(tmp_path, monkeypatch, cache_dir, capsys):
    """The issue's reproduction: --out "" (an unset variable) is the current directory."""
    folder = users_folder(tmp_path / "p")
    before = files_in(folder)
    monkeypatch.chdir(folder)
    fails_with(capsys, train_argv("", "--force", data=NO_DATA), "--out is empty")
    assert files_in(folder) == before


def test_force_with_bad_input_deletes_nothing(tmp_path, cache_dir, capsys):
    folder = users_folder(tmp_path / "p")
    write(folder / "metrics.json", "{}")
    before = files_in(folder)
    fails_with(capsys, train_argv(folder, "--force", data=NO_DATA), "")
    assert files_in(folder) == before


def test_force_refuses_a_folder_autopmf_did_not_write(tmp_path, cache_dir, capsys):
    folder = users_folder(tmp_path / "p")
    before = files_in(folder)
    fails_with(capsys, train_argv(folder, "--force"), "autopmf did not write")
    assert files_in(folder) == before


def test_force_removes_every_file_of_the_previous_run_and_nothing_else(search_run, tmp_path,
                                                                       capsys):
    out = copy_run(search_run, tmp_path)
    assert (out / "checkpoints" / "epoch-0001").is_dir()
    write(out / "plots" / "best_so_far.png", b"\x89PNG stale plot")
    write(out / "notes.txt", "mine")
    write(out / "checkpoints" / "mine.txt", "mine too")
    assert main(train_argv(out, "--force")) == 0
    assert sorted(files_in(out)) == ["arch.yaml", "checkpoints/mine.txt", "config.yaml",
                                     "metrics.json", "notes.txt", "weights.safetensors"]


# ----- 2. one writer per run folder ------------------------------------------------------
HOLD_LOCK = ("import sys, time\nfrom autopmf.run_dir import run_lock\n"
             "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")


def test_a_second_writer_is_refused_and_a_killed_writer_leaves_no_lock(tmp_path, cache_dir,
                                                                        capsys):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO,
                             stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline().strip() == b"held"
        fails_with(capsys, search_argv(out), f"in use by another autopmf process (pid "
                                             f"{child.pid})")
        fails_with(capsys, train_argv(out, "--force"), "in use by another autopmf process")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    # The kernel dropped the lock with the process: the next command gets past it.
    fails_with(capsys, train_argv(out, data=NO_DATA), "data folder")
    assert complete_looking(out) == []


def test_a_run_in_progress_holds_its_folder(tmp_path, cache_dir, monkeypatch):
    """While a command runs (here: as it loads its data), its folder's lock is taken."""
    from autopmf import train_arch
    from autopmf.run_dir import LOCK

    out = tmp_path / "run"
    taken = []
    load = train_arch.load_dataset

    def load_and_try_the_lock(*args, **kwargs):
        fd = os.open(out / LOCK, os.O_RDWR)  # another open file: flock sees another holder
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken.append(False)
        except BlockingIOError:
            taken.append(True)
        finally:
            os.close(fd)
        return load(*args, **kwargs)
    monkeypatch.setattr(train_arch, "load_dataset", load_and_try_the_lock)
    assert main(train_argv(out)) == 0
    assert taken == [True]
    assert not (out / LOCK).exists()  # released and removed when the command ended


# ----- 3. NaN and degenerate settings ----------------------------------------------------
SETTINGS = {
    "--lr nan": (["--lr", "nan"], "--lr must be a positive finite number"),
    "--lr inf": (["--lr", "inf"], "--lr must be a positive finite number"),
    "--lr 0": (["--lr", "0"], "--lr must be a positive finite number"),
    # A supernet may train for 0 epochs (tests/test_supernet.py); nothing trains for -1.
    "--epochs -1": (["--epochs", "-1"], "--epochs must be at least "),
    "--batch-size 0": (["--batch-size", "0"], "--batch-size must be at least 1"),
    "--seed -5": (["--seed", "-5"], "--seed must be between 0 and"),
    "--head-lr-scale nan": (["--head-lr-scale", "nan"], "--head-lr-scale must be"),
}
BUDGETS = {"-1": "supernet", "0": "supernet", "nan": "supernet", "inf": "search",
           "1e308": "search"}


@pytest.mark.parametrize("case", SETTINGS)
@pytest.mark.parametrize("command", ["train", "search", "supernet"])
def test_invalid_settings_are_refused(case, command, tmp_path, cache_dir, capsys):
    options, expected = SETTINGS[case]
    argv = {"train": train_argv, "search": search_argv}.get(command, supernet_argv)(
        tmp_path / "out", *options, data=NO_DATA)
    fails_with(capsys, argv, expected)
    assert not (tmp_path / "out").exists()


def test_drawing_several_starts_that_have_no_random_part_is_refused(tmp_path, cache_dir,
                                                                    capsys):
    argv = train_argv(tmp_path / "out", "--prompt-init", "principal", "--init-draws", "3",
                      data=NO_DATA)
    fails_with(capsys, argv, "--prompt-init principal has none; use --init-draws 1")
    assert not (tmp_path / "out").exists()


def supernet_argv(out: Path, *extra: str, data: str = DATA) -> list[str]:
    return ["supernet", "--space", "tiny", "--data", data, "--out", str(out), *QUICK, *extra]


@pytest.mark.parametrize("budget", BUDGETS)
def test_invalid_budgets_are_refused_by_supernet_and_search(budget, tmp_path, cache_dir,
                                                           capsys):
    make = supernet_argv if BUDGETS[budget] == "supernet" else search_argv
    argv = make(tmp_path / "out", "--budget-gb", budget, data=NO_DATA)  # the last one counts
    fails_with(capsys, argv, "--budget-gb must be a positive number")


@pytest.mark.parametrize("make_argv", [train_argv, supernet_argv], ids=["train", "supernet"])
def test_a_diverging_run_stops_at_the_first_non_finite_loss(make_argv, tmp_path, cache_dir,
                                                           capsys):
    out = tmp_path / "out"
    fails_with(capsys, make_argv(out, "--lr", "1e30"), "at epoch 1, step ")
    assert complete_looking(out) in ([], ["config.yaml"])


def test_weights_holding_nan_are_never_written(tmp_path):
    from autopmf.errors import AutopmfError
    from autopmf.files import save_tensors

    with pytest.raises(AutopmfError, match="w holds NaN or infinite values"):
        save_tensors(tmp_path / "x.safetensors", {"w": torch.tensor([1.0, float("nan")])})
    assert list(tmp_path.iterdir()) == []


def test_predict_refuses_weights_that_give_nan(train_run, tmp_path, digit_png, capsys):
    run = copy_run(train_run, tmp_path)
    weights = run / "weights.safetensors"
    from autopmf.files import load_tensors

    save_file({k: torch.full_like(v, float("nan")) for k, v in load_tensors(weights).items()},
              str(weights))
    fails_with(capsys, predict_argv(run, digit_png, "--json"), "gives NaN scores")


# ----- 4. weights that do not belong -----------------------------------------------------
def test_a_changed_dtype_in_a_header_is_refused_not_cast(train_run, tmp_path, digit_png,
                                                         capsys):
    run = copy_run(train_run, tmp_path)
    edit_header(run / "weights.safetensors",
                lambda h: first_tensor(h).update(dtype="I32"))  # same size as F32
    fails_with(capsys, predict_argv(run, digit_png), "torch.int32, this model needs")


@pytest.mark.parametrize("change", [{"image_size": 32}, {"max_text_len": 12},
                                    {"image_encoder": "tiny-timm-vit:depth=4"}])
def test_inheriting_from_a_supernet_of_another_setting_is_refused(change, search_run,
                                                                  tmp_path, capsys):
    run = copy_run(search_run, tmp_path)
    doc = yaml.safe_load((run / "best_arch.yaml").read_text())
    doc["space"].update(change)
    (run / "best_arch.yaml").write_text(yaml.safe_dump(doc))
    fails_with(capsys, ["retrain", "--arch", str(run / "best_arch.yaml"), "--init", "supernet",
                        "--out", str(tmp_path / "r"), *QUICK],
               f"trained for another space ({next(iter(change))} differs")
    assert complete_looking(tmp_path / "r") == []


# ----- 5. one line instead of a traceback ------------------------------------------------
def truncate(path: Path, keep: int = 60) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def interrupted(run: Path) -> Path:
    """`run` as if killed after its supernet's epoch-1 checkpoint."""
    for name in ("supernet.safetensors", "supernet_metrics.json", "search_log.jsonl",
                 "best_arch.yaml", "pareto.json"):
        (run / name).unlink()
    return run


DAMAGE = {
    "supernet.safetensors truncated, --resume": (
        lambda run: truncate(run / "supernet.safetensors"), "not a readable safetensors file"),
    "checkpoint weights truncated, --resume": (
        lambda run: truncate(interrupted(run) / "checkpoints/epoch-0001/weights.safetensors"),
        "not a readable safetensors file"),
    "half-written state.json": (
        lambda run: truncate(interrupted(run) / "checkpoints/epoch-0001/state.json", 30),
        "state.json is not valid JSON"),
    "stray empty epoch-NNNN": (
        lambda run: (interrupted(run) / "checkpoints/epoch-0002").mkdir(),
        "epoch-0002 is damaged: it has no state.json"),
    "optimizer state with another dtype": (
        lambda run: edit_header(interrupted(run) / "checkpoints/epoch-0001/optimizer.safetensors",
                                lambda h: first_tensor(h).update(dtype="I32")),
        "is torch.int32"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_supernet_or_checkpoint_is_one_line_on_resume(case, search_run, tmp_path,
                                                               capsys):
    run = copy_run(search_run, tmp_path)
    damage, expected = DAMAGE[case]
    damage(run)
    fails_with(capsys, search_argv(run, "--resume"), expected)


def test_a_damaged_supernet_is_one_line_for_retrain_and_supernet_from(search_run, tmp_path,
                                                                     capsys):
    run = copy_run(search_run, tmp_path)
    truncate(run / "supernet.safetensors")
    fails_with(capsys, ["retrain", "--arch", str(run / "best_arch.yaml"), "--init", "supernet",
                        "--out", str(tmp_path / "r"), *QUICK], "not a readable safetensors")
    out = tmp_path / "new"
    fails_with(capsys, search_argv(out, "--supernet-from", str(run)),
               "not a readable safetensors")
    assert not out.exists()  # nothing copied, no config.yaml


HEADERS = {
    "bigger shape": lambda h: first_tensor(h).update(shape=[s * 4 for s in
                                                            first_tensor(h)["shape"]]),
    "offsets past the end": lambda h: first_tensor(h).update(data_offsets=[0, 10**9]),
    "overlapping offsets": lambda h: first_tensor(h).update(data_offsets=[4, 8]),
    "unknown dtype": lambda h: first_tensor(h).update(dtype="F99"),
}


@pytest.mark.parametrize("case", [*HEADERS, "huge header"])
def test_a_malformed_safetensors_header_is_one_line(case, train_run, tmp_path, digit_png,
                                                    capsys):
    run = copy_run(train_run, tmp_path)
    weights = run / "weights.safetensors"
    if case == "huge header":
        weights.write_bytes((2**60).to_bytes(8, "little") + weights.read_bytes()[8:])
    else:
        edit_header(weights, HEADERS[case])
    fails_with(capsys, predict_argv(run, digit_png), "not a readable safetensors file")


def test_an_out_of_range_slot_with_a_warm_profile_cache_is_one_line(search_run, tmp_path,
                                                                   capsys):
    space = tiny_space_file(tmp_path, fusable_slots=[0, 1, 7])  # the cache holds tiny's
    fails_with(capsys, search_argv(tmp_path / "out", space=space),
               "fusable slot 7 does not exist; these encoders pair into slots 0..2")


def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path, cache_dir, monkeypatch, capsys):
    a_file = write(tmp_path / "file", "x")
    fails_with(capsys, train_argv(a_file), "is a file, not a folder")
    fails_with(capsys, train_argv(a_file / "run"), "cannot create --out")
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".autopmf.lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)
    monkeypatch.setattr(os, "open", read_only)
    (tmp_path / "ro").mkdir()
    fails_with(capsys, train_argv(tmp_path / "ro"), "(Read-only file system); choose a folder")


def test_an_arch_that_is_a_folder_or_names_no_space_is_one_line(tmp_path, capsys):
    fails_with(capsys, ["train", "--arch", str(tmp_path), "--out", str(tmp_path / "o")],
               "is a folder; give a YAML file")
    arch = write(tmp_path / "a.yaml", yaml.safe_dump({"arch": {"fusion_0": 1}, "space": 42}))
    fails_with(capsys, ["train", "--arch", str(arch), "--out", str(tmp_path / "o")],
               "'space' must be a space name")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device, expected", [("cuda", "torch sees no such CUDA device"),
                                              ("gpu", "is not a device")])
def test_a_device_that_is_not_there_is_one_line(device, expected, tmp_path, capsys):
    fails_with(capsys, train_argv(tmp_path / "o", "--device", device, data=NO_DATA), expected)


@pytest.mark.parametrize("limit", [1000, 3000], ids=["over twice the limit", "over the limit"])
def test_a_decompression_bomb_is_one_line(limit, train_run, digit_png, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # the 64x64 image is 4096 pixels
    fails_with(capsys, predict_argv(train_run, digit_png), "a decompression bomb?")


def test_a_prompt_length_too_big_for_memory_is_one_line(tmp_path, cache_dir, capsys):
    space = tiny_space_file(tmp_path, prompt_lengths=[1, 10**12])
    out = tmp_path / "out"
    fails_with(capsys, ["train", "--space", str(space), "--arch", f"reference:1:{10**12}",
                        "--data", DATA, "--no-baselines", "--out", str(out), *QUICK],
               "out of memory (tried to allocate")
    assert complete_looking(out) == []


# ----- 6. misleading messages and leftovers ----------------------------------------------
def test_supernet_from_a_run_of_another_space_blames_that_run_and_leaves_nothing(
        search_run, tmp_path, capsys):
    out = tmp_path / "out"
    other = tiny_space_file(tmp_path, prompt_lengths=[1, 2])
    fails_with(capsys, search_argv(out, "--supernet-from", str(search_run), space=other),
               f"--supernet-from {search_run}: its supernet was trained for another space")
    assert not out.exists()
    assert main(search_argv(out, "--supernet-from", str(search_run))) == 0  # no --resume asked


def test_nni_prints_nothing_before_our_error(search_run, tmp_path, monkeypatch, capsys):
    # As outside pytest, whose own log handler would otherwise take NNI's records: with no
    # handler on the root logger, Python prints warnings and errors to stderr.
    monkeypatch.setattr(logging.root, "handlers", [])
    run = copy_run(search_run, tmp_path)
    lines = (run / "search_log.jsonl").read_text().splitlines()
    entry = json.loads(lines[1])
    entry["arch"]["fusion_0"] = 1 - entry["arch"]["fusion_0"]  # as if from another search
    (run / "search_log.jsonl").write_text("\n".join([lines[0], json.dumps(entry)]) + "\n")
    (run / "best_arch.yaml").unlink()
    fails_with(capsys, search_argv(run, "--resume"), "trial 2 differs from this search's")


def test_a_small_budget_is_shown_as_given(search_run, capsys):
    capsys.readouterr()
    assert main(["log", str(search_run)]) == 0
    assert f"budget {BUDGET} GiB" in capsys.readouterr().out


def test_safetensors_files_get_the_usual_permissions(search_run, tmp_path):
    from autopmf.files import save_tensors

    save_tensors(tmp_path / "x.safetensors", {"w": torch.ones(2)})
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "x.safetensors", search_run / "supernet.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("key, values, twice", [("prompt_lengths", [1, 2, 2], 2),
                                                ("fusable_slots", [0, 1, 0], 0)])
def test_a_value_listed_twice_in_a_space_is_refused(key, values, twice, tmp_path, capsys):
    space = tiny_space_file(tmp_path, **{key: values})
    fails_with(capsys, search_argv(tmp_path / "out", space=space, data=NO_DATA),
               f"{key} lists {twice} twice")


def test_force_knows_every_file_a_command_writes():
    """RUN_FILES (what --force removes) names each command's outputs: a file added to one
    command and not there would survive --force as part of the next run."""
    from autopmf import layout, search, supernet_train, train_arch
    from autopmf.run_dir import CONFIG, RUN_FILES

    written = {CONFIG, search.LOG, search.BEST, search.PARETO, search.REFERENCE,
               supernet_train.WEIGHTS,
               supernet_train.METRICS, *train_arch.OUTPUTS}
    assert written <= set(RUN_FILES)
    plots = [name for name in RUN_FILES
             if name.startswith(f"{layout.PLOTS}/") and name.endswith(".png")]
    # ... and each plot's data beside it (issue 20)
    assert {name.removesuffix(".png") + ".json" for name in plots} <= set(RUN_FILES)
    source = (REPO / "autopmf" / "report.py").read_text()
    # report.write_plots writes each plot under its layout name, and no other PNG
    assert all(re.search(rf"/ {key}\b", source) for key in dir(layout) if key.startswith("PLOT_"))
    assert len(plots) == sum(key.startswith("PLOT_") for key in dir(layout))
    assert '.png"' not in source
