"""Fuzzing the inputs a user hands autopmf (issue #17): seeded, generated malformed search
spaces, architecture files and safetensors headers, each fed to the CLI in-process.

Every case must end with exit code 2 and one line `autopmf: error: ...`, or succeed: never a
traceback, never a partial run. A failure names the case's seed and mutation, so it can be
replayed alone.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from autopmf.cli import main
from tests.test_faults import REPO, complete_looking
from tests.test_faults2 import digit_png  # noqa: F401  (a fixture)
from tests.test_faults2 import NO_DATA, QUICK, predict_argv, train_argv

SEED = 17
CASES = {"space": 90, "arch": 60, "header": 70}  # 220 in all
ODD = [None, 0, -1, 1.5, float("nan"), "", " ", "x", "tiny-bert:depth=-1", [], [0, 0], [-1],
       [10**12], [1, "2"], [True], {"a": 1}, True, 10**30, "../../etc/passwd", [[1]]]
DOCUMENTS = ["", "- 1\n- 2\n", "42\n", "name: [tiny\n", "!!python/object:os.system {}\n",
             b"\xff\xfe\x00garbage", "a: !!binary AAAA\n", "x: &a [*a]\n", "[" * 200]


def mutate_mapping(rng: random.Random, doc: dict, keys: list[str]) -> str:
    """Change `doc` in place one to three times; -> what was done."""
    done = []
    for _ in range(rng.randint(1, 3)):
        # An unknown key is refused before anything else is looked at: keep it rare.
        what = rng.choices(["drop", "odd", "unknown"], weights=[3, 6, 1])[0]
        key = rng.choice(keys)
        if what == "drop":
            doc.pop(key, None)
        elif what == "odd":
            doc[key] = rng.choice(ODD)
        else:
            key = rng.choice(["fusable_slot", "prompt", "fusion_9", "__class__"])
            doc[key] = rng.choice(ODD)
        done.append(f"{what} {key}")
    return ", ".join(done)


def write_doc(path: Path, rng: random.Random, doc) -> str:
    """`doc` as YAML, or now and then a whole malformed document instead."""
    if rng.random() < 0.15:
        text = rng.choice(DOCUMENTS)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return f"document {text[:20]!r}"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return ""


def space_case(rng: random.Random, tmp: Path) -> tuple[str, list[str]]:
    spec = yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())
    what = mutate_mapping(rng, spec, list(spec))
    path = tmp / "space.yaml"
    what = write_doc(path, rng, spec) or what
    arch = rng.choice(["reference:1:1", "reference:9:2", "reference:0:1"])
    return what, ["train", "--space", str(path), "--arch", arch, "--data", NO_DATA,
                  "--out", str(tmp / "out"), *QUICK]


def arch_case(rng: random.Random, tmp: Path) -> tuple[str, list[str]]:
    from autopmf.space import load_space

    space = load_space("tiny")
    doc = {"arch": space.reference_arch(1, 2),
           "space": rng.choice(["tiny", space.to_dict()])}
    if rng.random() < 0.5:
        what = mutate_mapping(rng, doc["arch"], list(doc["arch"]))
    else:
        what = mutate_mapping(rng, doc, ["arch", "space"])
    path = tmp / "arch.yaml"
    what = write_doc(path, rng, doc) or what
    out = str(tmp / "out")
    if rng.random() < 0.5:
        return what, ["train", "--arch", str(path), "--data", NO_DATA, "--out", out, *QUICK]
    return what, ["retrain", "--arch", str(path), "--data", NO_DATA, "--out", out, *QUICK]


HEADER_EDITS = ("dtype", "shape", "offsets", "drop", "copy", "rename", "metadata", "no field",
                "odd field", "empty", "none")


def header_mutation(rng: random.Random, header: dict, names: list[str]) -> str:
    name = rng.choice(names)
    entry = header[name]
    choice = rng.randrange(len(HEADER_EDITS))
    if choice == 0:
        entry["dtype"] = rng.choice(["I32", "F16", "BF16", "F64", "U8", "BOOL", "F99", "", 3])
    elif choice == 1:
        entry["shape"] = rng.choice([[], [0], [-1], [2**62, 2**62], "3", [1.5],
                                     [s * 2 for s in entry["shape"]] or [2]])
    elif choice == 2:
        start, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[end, start], [-4, end], [start, end + 4],
                                            [start, 2**63], [start], "0,4", [start + 1, end]])
    elif choice == 3:
        del header[name]
    elif choice == 4:
        header[name + ".extra"] = dict(entry)
    elif choice == 5:
        header[rng.choice(["", "x" * 300, "heads.0.weight"])] = header.pop(name)
    elif choice == 6:
        header["__metadata__"] = rng.choice([{"arch": "{}"}, {"a": 1}, "text", None])
    elif choice == 7:
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
    elif choice == 8:
        entry[rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(ODD)
    elif choice == 9:
        header.clear()
    return f"{HEADER_EDITS[choice]} {name}"


def header_case(rng: random.Random, tmp: Path, run: Path, image: Path
                ) -> tuple[str, list[str]]:
    import shutil

    case_run = Path(shutil.copytree(run, tmp / "run"))
    weights = case_run / "weights.safetensors"
    raw = weights.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    names = sorted(k for k in header if k != "__metadata__")
    kind = rng.randrange(10)
    if kind == 0:
        weights.write_bytes(raw[:rng.randrange(len(raw))])
        what = "truncated"
    elif kind == 1:
        bogus = rng.choice([0, 1, len(raw), 2**31, 2**63 - 1])
        weights.write_bytes(bogus.to_bytes(8, "little") + raw[8:])
        what = f"header length {bogus}"
    elif kind == 2:
        text = rng.choice([b"not json at all", b"[1, 2, 3]", b"{\"a\": ", b"\xff" * 16])
        weights.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size:])
        what = f"header {text[:12]!r}"
    else:
        what = header_mutation(rng, header, names)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        weights.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size:])
    return what, predict_argv(case_run, image)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir):  # noqa: F811
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(train_argv(out)) == 0
    return out


@pytest.mark.parametrize("kind", CASES)
def test_malformed_inputs_end_in_one_line_or_success(kind, tmp_path, capsys, finished_run,
                                                     digit_png):  # noqa: F811
    problems = []
    for i in range(CASES[kind]):
        rng = random.Random(f"{SEED}-{kind}-{i}")
        tmp = tmp_path / f"{i}"
        tmp.mkdir()
        if kind == "header":
            what, argv = header_case(rng, tmp, finished_run, digit_png)
        else:
            what, argv = {"space": space_case, "arch": arch_case}[kind](rng, tmp)
        capsys.readouterr()
        try:
            code = main(argv)
        except BaseException as exc:  # a traceback: the very thing this test looks for
            problems.append(f"{kind} {i} ({what}): {type(exc).__name__}: {exc}")
            continue
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        one_line = code == 2 and len(lines) == 1 and lines[0].startswith("autopmf: error: ")
        if not (one_line or code == 0):
            problems.append(f"{kind} {i} ({what}): exit {code}, stderr {captured.err!r}")
        if code != 0 and complete_looking(tmp / "out"):
            problems.append(f"{kind} {i} ({what}): left {complete_looking(tmp / 'out')}")
    assert problems == []
