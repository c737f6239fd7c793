"""The standalone PMF model on tiny random encoders."""

import dataclasses

import pytest
import torch

from autopmf.build import build_backbone
from supernet.fusion import Streams
from tests.conftest import TEXTS, make_batch, model_for, tiny_space


def arch_of(space, fused: dict[int, int]):
    arch = {}
    for j in space.fusable_slots:
        arch[f"fusion_{j}"] = int(j in fused)
        arch[f"prompt_{j}"] = fused.get(j, space.prompt_lengths[0])
    return arch


def test_gradients_reach_only_fused_prompts_mappings_and_heads(space, backbone, batch):
    model = model_for(space, backbone, arch_of(space, {0: 2, 2: 4}))  # non-contiguous
    model(batch).sum().backward()
    for name, p in model.backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[1] for n in trainable if n.startswith("fusion.")} == {"0", "2"}
    for name, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    # Each fused slot's banks have exactly its own prompt length.
    assert model.fusion["0"].text_query.shape == (2, backbone.text.hidden_size)
    assert model.fusion["2"].image_fusion_context.shape == (4, backbone.image.hidden_size)


def test_all_slots_off_equals_heads_on_encoders_own_cls(space, backbone, batch):
    model = model_for(space, backbone, arch_of(space, {}))
    assert not any(n.startswith("fusion.") for n, _ in model.named_parameters())
    with torch.no_grad():
        # Independent path: the Hugging Face models' own full forward passes.
        text_cls = backbone.text.model(input_ids=batch["input_ids"],
                                       attention_mask=batch["attention_mask"]
                                       ).last_hidden_state[:, 0]
        image_cls = backbone.image.model(pixel_values=batch["pixels"]).pooler_output
        expected = (model.heads.text(text_cls) + model.heads.image(image_cls)) / 2
        torch.testing.assert_close(model(batch), expected, atol=1e-5, rtol=1e-5)


def plain_pmf_forward(model, batch, n_fused, prompt_len):
    """An independent re-implementation of PMF with the top `n_fused` slots fused, written
    directly against the Hugging Face modules (no adapters, no FusionSlot)."""
    bert, dino = model.backbone.text.model, model.backbone.image.model
    ids, attn = batch["input_ids"], batch["attention_mask"]
    t = bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
    v = dino.embeddings(batch["pixels"])
    n_t, n_v = len(bert.encoder.layer), len(dino.encoder.layer)
    n_slots = min(n_t, n_v)
    B, M = ids.shape[0], prompt_len

    def bert_layer(i, x, extra):
        mask = torch.cat([attn, torch.ones(B, extra, dtype=attn.dtype)], 1).float()
        out = bert.encoder.layer[i](x, attention_mask=(1 - mask)[:, None, None, :] * -1e9)
        return out[0] if isinstance(out, tuple) else out

    def dino_layer(i, x):
        out = dino.encoder.layer[i](x)
        return out[0] if isinstance(out, tuple) else out

    def mlp(m, x):
        return m.norm(m.fc2(torch.relu(m.fc1(x))))

    for i in range(n_v - n_slots):
        v = dino_layer(i, v)
    for slot in range(n_slots):
        ti, vi = n_t - n_slots + slot, n_v - n_slots + slot
        if slot < n_slots - n_fused:
            t, v = bert_layer(ti, t, 0), dino_layer(vi, v)
            continue
        f = model.fusion[str(slot)]
        exp = lambda p: p.unsqueeze(0).expand(B, -1, -1)  # noqa: E731
        tq = bert_layer(ti, torch.cat([t, exp(f.text_query_context), exp(f.text_query)], 1),
                        2 * M)[:, -M:]
        vq = dino_layer(vi, torch.cat([v, exp(f.image_query_context), exp(f.image_query)],
                                      1))[:, -M:]
        new_v = dino_layer(vi, torch.cat([v, exp(f.image_fusion_context),
                                          mlp(f.text_to_image, tq)], 1))[:, :v.shape[1]]
        new_t = bert_layer(ti, torch.cat([t, exp(f.text_fusion_context),
                                          mlp(f.image_to_text, vq)], 1), 2 * M)[:, :t.shape[1]]
        t, v = new_t, new_v
    return (model.heads.text(t[:, 0]) + model.heads.image(dino.layernorm(v)[:, 0])) / 2


@pytest.mark.parametrize("n_fused", [1, 2, 3])
def test_top_n_matches_plain_reimplementation(space, backbone, batch, n_fused):
    model = model_for(space, backbone, space.reference_arch(n_fused, 2))
    with torch.no_grad():
        torch.testing.assert_close(model(batch), plain_pmf_forward(model, batch, n_fused, 2),
                                   atol=1e-5, rtol=1e-4)


def test_padding_does_not_change_the_output(space, backbone, images):
    model = model_for(space, backbone, arch_of(space, {0: 1, 2: 4}))
    with torch.no_grad():
        short = model(make_batch(backbone, space, images, max_len=8))
        long = model(make_batch(backbone, space, images, max_len=20))
        alone = model(make_batch(backbone, space, images, texts=TEXTS[:1], max_len=8))
    torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short[:1], alone, atol=1e-5, rtol=1e-5)


def test_layers_below_first_fused_slot_save_nothing_for_backward(space, backbone, batch):
    model = model_for(space, backbone, arch_of(space, {1: 2}))  # first fused slot: 1
    current = {"layer": None}
    saved_by = []
    hooks = []
    for enc, layers in (("text", backbone.text.model.encoder.layer),
                        ("image", backbone.image.model.encoder.layer)):
        for i, layer in enumerate(layers):
            # Every submodule marks its layer: a fused slot's query stage calls the layer's
            # parts directly (only the prompt rows' outputs), not the layer's forward.
            for part in layer.modules():
                hooks.append(part.register_forward_pre_hook(
                    lambda m, a, key=(enc, i): current.update(layer=key)))
            hooks.append(layer.register_forward_hook(
                lambda m, a, o: current.update(layer=None)))

    def pack(t):
        if current["layer"] is not None:
            saved_by.append(current["layer"])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(batch).sum().backward()
    for h in hooks:
        h.remove()
    first_text, first_image = backbone.text_layer_index(1), backbone.image_layer_index(1)
    low = [k for k in saved_by if k[1] < (first_text if k[0] == "text" else first_image)]
    assert low == [], f"layers below the first fused slot saved tensors: {set(low)}"
    assert ("text", first_text) in saved_by and ("image", first_image) in saved_by


@pytest.mark.parametrize("fused", [{0: 2}, {1: 4, 2: 2}])  # top slot plain, then fused
def test_top_slot_computing_only_the_cls_rows_changes_nothing(space, backbone, batch,
                                                              monkeypatch, fused):
    model = model_for(space, backbone, arch_of(space, fused))
    top = backbone.num_slots - 1
    assert backbone.rows_kept(top) == (slice(0, 1), slice(0, 1))
    assert backbone.rows_kept(top - 1) == (None, None)

    def logits_and_grads():
        model.zero_grad(set_to_none=True)
        logits = model(batch)
        logits.pow(2).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                 if p.requires_grad}

    kept_logits, kept_grads = logits_and_grads()
    monkeypatch.setattr(type(backbone), "rows_kept", lambda self, slot: (None, None))
    all_logits, all_grads = logits_and_grads()
    torch.testing.assert_close(kept_logits, all_logits, atol=1e-5, rtol=1e-5)
    assert kept_grads.keys() == all_grads.keys()
    for name, grad in kept_grads.items():
        torch.testing.assert_close(grad, all_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_cached_streams_give_the_same_output(space, backbone, batch):
    model = model_for(space, backbone, arch_of(space, {1: 2, 2: 1}))
    with torch.no_grad():
        direct = model(batch)
        lowest = backbone.encode_until(batch, 0)  # start below the first fused slot
        assert isinstance(lowest, Streams)
        torch.testing.assert_close(model.forward_from(lowest, 0), direct, atol=1e-6, rtol=1e-6)


def test_split_prompt_lengths_allow_empty_context_prompts(images):
    # The reference code crashes with an FCP length of 0; here it is a valid choice.
    space = tiny_space(prompt_mode="split", prompt_lengths=[0, 2], mapping_hidden=[8, 16])
    backbone = build_backbone(space)
    arch = {k: v[-1] for k, v in space.choices().items()}
    arch.update({"qcp_1": 0, "fcp_1": 0, "mapping_1": 8})
    model = model_for(space, backbone, arch)
    assert model.fusion["1"].text_fusion_context.shape[0] == 0
    assert model.fusion["1"].text_to_image.fc1.out_features == 8
    out = model(make_batch(backbone, space, images))
    out.sum().backward()
    assert model.fusion["1"].text_query.grad.abs().sum() > 0


def test_timm_vit_and_unequal_depths(images):
    space = tiny_space(image_encoder="tiny-timm-vit:depth=5", text_encoder="tiny-bert:depth=2",
                       fusable_slots=[0, 1])
    backbone = build_backbone(space)
    assert backbone.num_slots == 2 and backbone.image_layer_index(0) == 3
    model = model_for(space, backbone, space.reference_arch(2, 4))
    out = model(make_batch(backbone, space, images))
    assert out.shape == (len(TEXTS), 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is None for p in backbone.parameters())


def test_trainable_state_dict_round_trips(space, backbone, batch):
    arch = arch_of(space, {0: 4, 1: 1})
    a, b = model_for(space, backbone, arch, seed=0), model_for(space, backbone, arch, seed=1)
    with torch.no_grad():
        assert not torch.allclose(a(batch), b(batch))
        b.load_trainable_state_dict(a.trainable_state_dict())
        torch.testing.assert_close(a(batch), b(batch))
    other = model_for(space, backbone, arch_of(space, {0: 2, 1: 1}))
    with pytest.raises(ValueError, match="shape"):
        other.load_trainable_state_dict(a.trainable_state_dict())


def test_dropping_all_padding_columns_keeps_every_output(space, backbone):
    """bench/ranking.py trims the token positions that are padding in every example: the
    model's logits and gradients must be what the padded split gives (to float rounding)."""
    from autopmf.data.registry import load_dataset
    from autopmf.features import build_feature_cache, encode_split, without_padding_columns

    split = load_dataset("digits:examples_per_image=1", image_size=space.image_size).splits()
    encoded = encode_split(split["val"], backbone, dataclasses.replace(space, max_text_len=24))
    trimmed = without_padding_columns(encoded)
    assert trimmed.input_ids.shape[1] < 24 and trimmed.attention_mask[:, -1].any()
    assert torch.equal(trimmed.input_ids, encoded.input_ids[:, :trimmed.input_ids.shape[1]])
    rows = torch.arange(32)
    model = model_for(space, backbone, space.reference_arch(3, 2))  # fuses slot 0 up
    results = []
    for enc in (encoded, trimmed):
        cache = build_feature_cache(enc, backbone, 0)
        model.zero_grad()
        logits = model.forward_from(cache.streams(rows), 0)
        logits.square().sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()
                                          if p.requires_grad]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for padded_grad, trimmed_grad in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(trimmed_grad, padded_grad, rtol=1e-4, atol=1e-6)
