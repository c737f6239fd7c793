"""`autopmf train` end to end on tiny encoders, and the CLI's error contract."""

import json

import pytest
import torch

from autopmf.build import build_backbone, build_pmf
from autopmf.cli import main
from autopmf.data.registry import load_dataset
from autopmf.errors import AutopmfError
from autopmf.features import build_feature_cache, encode_split
from autopmf.files import load_tensors
from autopmf.space import load_arch
from autopmf.train import TrainConfig, evaluate
from autopmf.train_arch import train_architecture
from tests.conftest import tiny_space

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    space = tiny_space(batch_size=16)
    # As in test_faults: steps large enough that the trained model scores other than an
    # untrained one (at lr 5e-3 every model of this task scored the same 0.4986).
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, lr=0.05, head_lr_scale=1)
    metrics = train_architecture(space, space.reference_arch(2, 2), DATA, out, cfg)
    return space, out, metrics


def test_train_writes_a_complete_run(trained):
    space, out, metrics = trained
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["fused_slots"] == [1, 2]
    assert len(metrics["history"]) == 2
    # The headline is the test split's accuracy: a whole number of its examples right.
    assert metrics["test_score"] == metrics["scores"]["test"]["accuracy"]
    right = metrics["test_score"] * metrics["examples"]["test"]
    assert right == pytest.approx(round(right), abs=1e-3)
    assert set(metrics["baselines"]) == {"text_only", "image_only", "late_fusion"}
    assert "late fusion" in metrics["late_fusion_verdict"]
    weights = load_tensors(out / "weights.safetensors")
    assert weights and all(k.startswith(("fusion.1.", "fusion.2.", "heads.")) for k in weights)
    assert sum(w.numel() for w in weights.values()) == metrics["trainable_params"]
    assert load_arch(out / "arch.yaml")[1] == space.reference_arch(2, 2)
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


def test_saved_weights_reproduce_the_recorded_scores(trained):
    space, out, metrics = trained
    _, arch = load_arch(out / "arch.yaml")
    backbone = build_backbone(space)
    dataset = load_dataset(DATA, seed=0)

    def scores(weights=None):
        torch.manual_seed(1)
        model = build_pmf(space, arch, backbone, 2)
        if weights is not None:
            model.load_trainable_state_dict(weights)
        model.eval()
        out = {}
        for split in ("val", "test"):
            encoded = encode_split(getattr(dataset, split), backbone, space)
            cache = build_feature_cache(encoded, backbone, model.first_fused_slot)
            out[split] = evaluate(lambda c, rows: model.forward_from(c.streams(rows), c.slot),
                                  cache, TrainConfig(progress=False), "accuracy")
        return out
    saved = scores(load_tensors(out / "weights.safetensors"))
    assert saved["val"] == pytest.approx(metrics["val_score"], abs=1e-9)
    assert saved["test"] == pytest.approx(metrics["test_score"], abs=1e-9)
    # Scores differ: untrained weights score otherwise, so the equalities above show that the
    # trained weights were saved and loaded, not merely that every model scores alike.
    assert scores() != saved


def test_refuses_to_overwrite_a_finished_run(trained):
    space, out, _ = trained
    with pytest.raises(AutopmfError, match="--force"):
        train_architecture(space, space.reference_arch(1, 1), DATA, out, TrainConfig())


def test_training_lowers_the_loss_on_a_learnable_task(tmp_path):
    """Identity statements only; a few epochs must beat the first epoch's loss clearly."""
    space = tiny_space(batch_size=32)
    cfg = TrainConfig(epochs=4, batch_size=32, progress=False, lr=1e-2)
    m = train_architecture(space, space.reference_arch(3, 4), "digits:identity=1", tmp_path,
                           cfg, baselines=False)
    losses = [h["loss"] for h in m["history"]]
    assert losses[-1] < losses[0]
    assert torch.isfinite(torch.tensor(losses)).all()


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    code = main(["train", "--space", str(tmp_path / "missing.yaml"), "--arch",
                 "reference:1:1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("autopmf: error:") and "\n" not in err
    code = main(["train", "--space", "tiny", "--arch", "reference:1:3", "--out",
                 str(tmp_path / "o")])
    assert code == 2 and "prompt_2=3 is not one of" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_predict_classifies_pairs_like_the_trained_model(trained, tmp_path, capsys):
    from PIL import Image

    from autopmf.data.registry import load_dataset
    from autopmf.predict import predict

    _, out, _ = trained
    test = load_dataset(DATA, seed=0).test
    images = [test.images[test.image_index[i]] for i in range(3)]
    results = predict(out, images, test.texts[:3])
    assert [set(r["probabilities"]) for r in results] == [{"false", "true"}] * 3
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in results)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    # The model reads its inputs: each pair gets its own probabilities.
    assert len({r["probabilities"]["true"] for r in results}) == 3
    assert main(["predict", "--run", str(out), "--image", str(tmp_path / "a.png"),
                 "--text", test.texts[0], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["label"] == results[0]["label"]
    # Both are rounded to 4 decimals, so float noise between two runs can move one by 1e-4.
    assert printed["probabilities"] == pytest.approx(results[0]["probabilities"], abs=2e-4)
    assert main(["predict", "--run", str(out), "--image", str(tmp_path / "nope.png"),
                 "--text", "x"]) == 2


def test_data_seed_option_reaches_the_train_config():
    from autopmf.cli import _train_config, build_parser

    def config(*argv):
        return _train_config(build_parser().parse_args(argv), tiny_space())
    train = ["train", "--space", "tiny", "--arch", "reference:1:1", "--out", "x"]
    assert config(*train, "--seed", "2").data_seed is None  # the split follows --seed
    cfg = config(*train, "--seed", "2", "--data-seed", "0")
    assert (cfg.seed, cfg.data_seed) == (2, 0)  # train_architecture splits by data_seed
    assert config("retrain", "--arch", "a.yaml", "--data-seed", "1").data_seed == 1


def test_mapping_lr_scale_puts_the_mappings_in_a_group_of_their_own(space, backbone):
    from autopmf.run_dir import run_settings
    from autopmf.train import param_groups

    model = build_pmf(space, space.reference_arch(2, 2), backbone, 2)
    names = {id(p): n for n, p in model.named_parameters()}
    # The default: two groups, as before the option (old checkpoints' optimizer state fits).
    rest, heads = param_groups(model, TrainConfig(lr=1e-3))
    assert rest["lr"] == 1e-3 and any("_to_" in names[id(p)] for p in rest["params"])
    rest, heads, mappings = param_groups(model, TrainConfig(lr=1e-3, mapping_lr_scale=0.1))
    assert mappings["lr"] == pytest.approx(1e-4) and heads["lr"] == pytest.approx(1e-5)
    mapped = {names[id(p)] for p in mappings["params"]}
    assert mapped and all(".text_to_image." in n or ".image_to_text." in n for n in mapped)
    assert not any("_to_" in names[id(p)] for p in rest["params"])
    trainable = sum(p.requires_grad for p in model.parameters())
    assert len(rest["params"]) + len(heads["params"]) + len(mapped) == trainable
    # Runs without it keep their identity; runs with it are another run.
    assert "mapping_lr_scale" not in run_settings(TrainConfig())
    assert run_settings(TrainConfig(mapping_lr_scale=0.1))["mapping_lr_scale"] == 0.1


@pytest.mark.parametrize("head_init", ["probe", "paper"])
def test_fit_returns_the_kept_weights_val_logits_exactly(space, backbone, head_init):
    """bench/ranking.py reads the kept model's val logits from fit instead of predicting them
    again: they must be exactly what a fresh prediction with the kept weights gives. Here the
    probe-headed run keeps its last epoch and the paper-headed one an earlier epoch (1 of 2),
    so logits of the last epoch returned in place of the kept one's fail the second case."""
    from autopmf.train import fit, predict
    from autopmf.train_arch import initialise_training

    torch.manual_seed(0)
    split = load_dataset(DATA, image_size=space.image_size).splits()
    caches = {name: build_feature_cache(encode_split(split[name], backbone, space), backbone, 1)
              for name in ("train", "val")}
    model = build_pmf(space, space.reference_arch(2, 2), backbone, 2)
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, lr=0.05, head_init=head_init)
    initialise_training(model, backbone, caches["train"], caches["val"], cfg, 2, "accuracy")

    def forward(cache, rows):
        return model.forward_from(cache.streams(rows), cache.slot)
    result = fit(model, forward, caches["train"], caches["val"], cfg, "accuracy")
    model.eval()
    again = predict(forward, caches["val"], cfg)
    assert result.val_logits is not None and torch.equal(result.val_logits, again)
    assert evaluate(forward, caches["val"], cfg, "accuracy") == result.best_val
