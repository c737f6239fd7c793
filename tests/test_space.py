"""Search spaces and architectures: YAML round trips and clear errors."""

import random
from pathlib import Path

import pytest
import yaml

from autopmf.errors import AutopmfError
from autopmf.space import builtin_spaces, load_arch, load_space, save_arch, space_from_dict
from tests.conftest import tiny_space


def test_builtin_spaces_load():
    demo = load_space("demo")
    assert demo.text_encoder == "minilm" and demo.image_encoder == "dinov2-small"
    assert demo.fusable_slots == (0, 1, 2, 3, 4, 5)
    assert set(demo.choices()) == {f"{k}_{j}" for k in ("fusion", "prompt") for j in range(6)}
    assert load_space("tiny").name == "tiny"


def test_builtin_spaces_are_the_top_level_folders_and_found_from_anywhere(tmp_path,
                                                                          monkeypatch):
    # The package reads them through autopmf/search_spaces (package data once installed;
    # .ci/run checks a non-editable install), which in a checkout is search_spaces/ itself.
    top_level = Path(__file__).resolve().parent.parent / "search_spaces"
    assert builtin_spaces() == sorted(p.stem for p in top_level.glob("*.yaml"))
    assert {"demo", "tiny"} <= set(builtin_spaces())
    monkeypatch.chdir(tmp_path)
    assert load_space("demo").name == "demo"
    with pytest.raises(AutopmfError, match=r"built-in spaces \['demo'"):
        load_space("nowhere")
    # A folder named like a built-in (a run called `demo`) does not hide it; any other
    # folder is still refused as a space.
    (tmp_path / "demo").mkdir()
    (tmp_path / "runs").mkdir()
    assert load_space("demo").name == "demo"
    with pytest.raises(AutopmfError, match="give a YAML file"):
        load_space("runs")


def test_architecture_round_trips_through_yaml(tmp_path):
    space = load_space("tiny")
    arch = space.random_arch(random.Random(3))
    save_arch(tmp_path / "a.yaml", space, arch, score=0.5)
    loaded_space, loaded = load_arch(tmp_path / "a.yaml")
    assert loaded == arch and loaded_space.to_dict() == space.to_dict()
    assert yaml.safe_load((tmp_path / "a.yaml").read_text())["score"] == 0.5
    # A bare mapping works when the space is given.
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(arch))
    assert load_arch(tmp_path / "bare.yaml", space)[1] == arch


def test_reference_arch_fuses_top_slots():
    space = tiny_space()
    arch = space.reference_arch(2, 4)
    assert space.fused_slots(arch) == [1, 2]
    assert arch["prompt_1"] == arch["prompt_2"] == 4
    with pytest.raises(AutopmfError, match="cannot fuse the top 5"):
        space.reference_arch(5, 4)


@pytest.mark.parametrize("change, message", [
    ({"fusion_7": 1}, "unknown choice 'fusion_7'"),
    ({"prompt_1": 3}, r"prompt_1=3 is not one of \[1, 2, 4\]"),
    ({"prompt_1": 0}, "a fused slot needs a prompt length > 0"),
    ({"fusion_0": True}, "is not an integer"),
])
def test_invalid_architectures_are_named(change, message):
    space = tiny_space()
    arch = space.reference_arch(2, 2)
    arch.update(change)
    with pytest.raises(AutopmfError, match=message):
        space.validate(arch)


def test_missing_choice_is_named():
    space = tiny_space()
    arch = space.reference_arch(1, 1)
    del arch["prompt_0"]
    with pytest.raises(AutopmfError, match="missing choice 'prompt_0'"):
        space.validate(arch)


def test_canonical_ignores_choices_of_unfused_slots():
    space = tiny_space()
    a = space.reference_arch(1, 4)
    b = dict(a, prompt_0=2)  # slot 0 is not fused: its prompt length is irrelevant
    assert a != b and space.canonical(a) == space.canonical(b)


@pytest.mark.parametrize("text, message", [
    ("name: x\n", "missing key"),
    ("[1, 2]\n", "must be a YAML mapping"),
    ("name: x\ntext_encoder: a\nimage_encoder: b\nfusable_slots: [0]\nprompt_lengths: [2]\n"
     "colour: red\n", "unknown key 'colour'"),
    ("name: x\ntext_encoder: a\nimage_encoder: b\nfusable_slots: []\nprompt_lengths: [2]\n",
     "fusable_slots is empty"),
    ("name: x\ntext_encoder: a\nimage_encoder: b\nfusable_slots: [0]\nprompt_lengths: [0]\n",
     "at least one length > 0"),
    ("name: x\ntext_encoder: a\nimage_encoder: b\nfusable_slots: [0]\nprompt_lengths: [2]\n"
     "precision: fp8\n", "precision 'fp8'"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_malformed_space_files_get_one_clear_line(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(AutopmfError, match=message) as info:
        load_space(path)
    assert "\n" not in str(info.value)


def test_unknown_space_name_lists_builtins():
    with pytest.raises(AutopmfError, match="built-in spaces.*demo"):
        load_space("no-such-space")


def test_slot_beyond_the_encoders_is_rejected():
    from autopmf.build import build_backbone

    with pytest.raises(AutopmfError, match="fusable slot 3 does not exist"):
        build_backbone(space_from_dict(dict(
            name="x", text_encoder="tiny-bert:depth=3", image_encoder="tiny-dinov2:depth=4",
            fusable_slots=[0, 3], prompt_lengths=[1], image_size=28)))


def test_relative_encoder_paths_are_relative_to_the_space_file(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "spaces"
    folder.mkdir(parents=True)
    spec = tiny_space().to_dict()
    spec.update(text_encoder="../models/bert", image_encoder="timm:vit_tiny@./w.safetensors")
    (folder / "mine.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)  # elsewhere: the paths must not follow the working directory
    space = load_space(folder / "mine.yaml")
    assert space.text_encoder == str(tmp_path / "project" / "models" / "bert")
    assert space.image_encoder == f"timm:vit_tiny@{folder / 'w.safetensors'}"
    # Names and absolute paths are left as they are, and the result survives a round trip.
    spec.update(text_encoder="minilm", image_encoder="/abs/vit")
    (folder / "named.yaml").write_text(yaml.safe_dump(spec))
    named = load_space(folder / "named.yaml")
    assert (named.text_encoder, named.image_encoder) == ("minilm", "/abs/vit")
    assert space_from_dict(space.to_dict()) == space
