"""`run_layer(..., rows=)` computes only some positions' outputs: it must equal the full
layer's output at those positions, for every encoder family, with padded text too."""

import pytest
import torch
from transformers import ViTConfig, ViTModel

from autopmf.encoders.text import tiny_bert
from autopmf.encoders.vision import HFVisionEncoder, tiny_dinov2, tiny_timm_vit


def tiny_hf_vit():
    torch.manual_seed(3)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, image_size=28, patch_size=7)
    return HFVisionEncoder(ViTModel(cfg, add_pooling_layer=False), "tiny-vit")


ENCODERS = {"bert": lambda: tiny_bert(depth=2), "dinov2": lambda: tiny_dinov2(depth=2),
            "hf-vit": tiny_hf_vit, "timm-vit": lambda: tiny_timm_vit(depth=2)}


@pytest.mark.parametrize("family", sorted(ENCODERS))
@pytest.mark.parametrize("rows", [slice(-3, None), slice(0, 5), slice(2, 4)])
def test_kept_rows_equal_the_full_layer_sliced(family, rows):
    encoder = ENCODERS[family]()
    if family == "dinov2":  # random init leaves layer scale at 1; make it matter
        for layer in encoder.model.encoder.layer:
            layer.layer_scale1.lambda1.data.uniform_(0.1, 2.0)
    torch.manual_seed(0)
    tokens = torch.randn(3, 9, encoder.hidden_size) * 2
    mask = None
    if family == "bert":
        mask = torch.ones(3, 9, dtype=torch.bool)
        mask[1, 4:7] = False  # padding in the middle, as before appended prompts
    for index in range(encoder.depth):
        full = encoder.run_layer(index, tokens, mask)
        kept = encoder.run_layer(index, tokens, mask, rows=rows)
        torch.testing.assert_close(kept, full[:, rows], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(kept, tokens[:, rows])  # the layer did something


def test_kept_rows_carry_gradients_to_every_token():
    encoder = tiny_bert(depth=1)
    tokens = torch.randn(2, 6, encoder.hidden_size, requires_grad=True)
    out = encoder.run_layer(0, tokens, None, rows=slice(-2, None))
    # Not a plain sum: the rows leave a LayerNorm, so their sum is a constant.
    (out * torch.randn_like(out)).sum().backward()
    assert (tokens.grad[:, :4].abs().sum(-1) > 0).all()  # keys and values get gradient too


def test_hf_vit_runs_end_to_end_through_the_adapter():
    encoder = tiny_hf_vit()
    pixels = torch.randn(2, 3, 28, 28)
    tokens = encoder.embed(pixels)
    assert tokens.shape == (2, encoder.num_tokens(28), 32)
    for index in range(encoder.depth):
        tokens = encoder.run_layer(index, tokens, None)
    expected = encoder.model(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(encoder.cls_feature(tokens), expected, rtol=1e-5, atol=1e-5)
