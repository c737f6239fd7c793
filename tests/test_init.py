"""How fused slots start: `paper` is exactly the paper's (and the earlier model's)
initialisation; `centred` centres the mappings on data, deterministically by seed."""

import pytest
import torch

from autopmf.build import build_pmf, initialise_fusion
from autopmf.data.registry import load_dataset
from autopmf.features import build_feature_cache, encode_split, stream_sampler
from supernet.supernet import Supernet
from tests.conftest import model_for

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module")
def train_cache(space, backbone):
    split = load_dataset(DATA, seed=0, image_size=space.image_size).train
    return build_feature_cache(encode_split(split, backbone, space), backbone, 0)


def initialised(space, backbone, train_cache, rule, seed, arch=None):
    model = model_for(space, backbone, arch or space.reference_arch(2, 2), seed=seed)
    initialise_fusion({j: model.fusion[str(j)] for j in model.slot_configs}, backbone,
                      train_cache, rule, seed)
    return model


def initialised_supernet(space, backbone, train_cache, rule):
    torch.manual_seed(0)
    supernet = Supernet(space, backbone, 3)
    initialise_fusion({int(j): s for j, s in supernet.fusion.items()}, backbone, train_cache,
                      rule, 0)
    return supernet


def states_equal(a, b):
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_paper_is_bit_identical_to_the_constructors(space, backbone, train_cache):
    # The model as it was before any data-dependent rule existed: seed, then construct.
    torch.manual_seed(3)
    before = build_pmf(space, space.reference_arch(2, 2), backbone, 3)
    assert states_equal(initialised(space, backbone, train_cache, "paper", 3), before)
    # ... and it draws nothing from the global generator either way.
    assert draws_no_global_random_numbers(space, backbone, train_cache, "centred")


def draws_no_global_random_numbers(space, backbone, train_cache, rule) -> bool:
    """Whether initialising by `rule` leaves the global generator where `paper` leaves it
    (the constructors' draw, nothing more)."""
    after = []
    for name in (rule, "paper"):
        torch.manual_seed(5)
        initialised(space, backbone, train_cache, name, 5)
        after.append(torch.rand(3))
    return torch.equal(*after)


def test_centred_is_deterministic_by_seed(space, backbone, train_cache):
    a = initialised(space, backbone, train_cache, "centred", 1)
    b = initialised(space, backbone, train_cache, "centred", 1)
    c = initialised(space, backbone, train_cache, "centred", 2)
    assert states_equal(a, b) and not states_equal(a, c)


def test_centred_mappings_hand_on_input_dependent_tokens(space, backbone, train_cache):
    seed = 0
    model = initialised(space, backbone, train_cache, "centred", seed)
    paper = initialised(space, backbone, train_cache, "paper", seed)
    streams_at = stream_sampler(train_cache, backbone, seed)
    for j in model.slot_configs:
        slot, layers = model.fusion[str(j)], (backbone.text_layer_fn(j),
                                              backbone.image_layer_fn(j))
        with torch.no_grad():
            text_q, _ = slot.query(streams_at(j), *layers, slot.size)
            x = text_q.reshape(-1, text_q.shape[-1])
            pre = x @ slot.text_to_image.fc1.weight.T + slot.text_to_image.fc1.bias
            # Every hidden unit: zero mean, unit spread on the sample it was centred on.
            assert pre.mean(0).abs().max() < 1e-4
            assert torch.allclose(pre.std(0), torch.ones(pre.shape[1]), atol=1e-4)
            out = slot.text_to_image.fc2(torch.relu(pre))
            assert out.mean(0).abs().max() < 1e-4
            # The tokens handed to the image encoder now vary with the input far more.
            def spread(s):
                q, _ = s.query(streams_at(j), *layers, s.size)
                mapped = s.text_to_image(q).reshape(q.shape[0], -1)
                return ((mapped - mapped.mean(0)).norm(dim=1).mean()
                        / mapped.mean(0).norm()).item()
            assert spread(slot) > 2 * spread(paper.fusion[str(j)])
    # Prompts and heads keep the paper's values: only the mappings are set from data.
    for name, tensor in model.trainable_state_dict().items():
        if "_to_" not in name:
            assert torch.equal(tensor, paper.trainable_state_dict()[name]), name


def test_a_supernet_centres_its_full_banks_and_subnets_inherit_them(space, backbone,
                                                                     train_cache):
    supernet = initialised_supernet(space, backbone, train_cache, "centred")
    arch = space.reference_arch(2, 1)
    extracted = supernet.extract(arch)
    for j in extracted.slot_configs:
        big, small = supernet.fusion[str(j)], extracted.fusion[str(j)]
        assert torch.equal(small.text_to_image.fc1.bias, big.text_to_image.fc1.bias)
        assert not torch.allclose(big.text_to_image.fc1.bias,
                                  torch.zeros_like(big.text_to_image.fc1.bias))


def test_unknown_rule_is_refused(space, backbone, train_cache):
    with pytest.raises(ValueError, match="unknown prompt initialisation"):
        initialised(space, backbone, train_cache, "lsuv", 0)


def test_cls_starts_each_query_prompt_at_its_slots_mean_cls_state(space, backbone,
                                                                   train_cache):
    seed = 4
    model = initialised(space, backbone, train_cache, "cls", seed)
    paper = initialised(space, backbone, train_cache, "paper", seed)
    assert states_equal(initialised(space, backbone, train_cache, "cls", seed), model)
    streams_at = stream_sampler(train_cache, backbone, seed)
    shifted = set()
    for j in model.slot_configs:
        streams, slot, start = streams_at(j), model.fusion[str(j)], paper.fusion[str(j)]
        for name, stream in (("text_query", streams.text), ("image_query", streams.image)):
            mean_cls = stream[:, 0].mean(0)
            offset = getattr(slot, name) - getattr(start, name)
            # Every prompt row moved by the same vector, the [CLS] mean: the paper's noise
            # (which keeps the rows apart) is kept.
            assert torch.allclose(offset, mean_cls.expand_as(offset), atol=1e-6), (j, name)
            assert mean_cls.abs().max() > 1e-3
            shifted.add(f"fusion.{j}.{name}")
    # Only the query prompts move; mappings, context prompts and heads keep the paper's values.
    for name, tensor in model.trainable_state_dict().items():
        if name not in shifted:
            assert torch.equal(tensor, paper.trainable_state_dict()[name]), name
    assert shifted and all(name in model.trainable_state_dict() for name in shifted)


def fusion_state(model):
    return {k: v for k, v in model.trainable_state_dict().items() if k.startswith("fusion.")}


def test_principal_has_no_random_part(space, backbone, train_cache):
    # Built under different seeds (so the constructors drew different values), the fused
    # slots end up identical: the seed is left with the data order alone.
    a = fusion_state(initialised(space, backbone, train_cache, "principal", 1))
    b = fusion_state(initialised(space, backbone, train_cache, "principal", 2))
    paper = fusion_state(initialised(space, backbone, train_cache, "paper", 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], paper[k]) for k in a if not k.endswith(".norm.weight")
                   and not k.endswith(".norm.bias"))


def test_principal_axes_match_numpy_and_have_a_fixed_sign():
    import numpy as np

    from supernet.init import principal_axes

    x = torch.randn(500, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [5.0, 3.0, 2.0, 1.0, 0.5]) + torch.tensor([1.0, -2.0, 0.0, 3.0, 4.0])
    mean, variances, axes = principal_axes(x)
    expected = np.sort(np.linalg.eigvalsh(np.cov(x.double().numpy(), rowvar=False)))[::-1]
    assert np.allclose(variances.numpy(), expected, rtol=1e-10)
    assert torch.allclose(mean, x.double().mean(0))
    assert torch.allclose(axes.T @ axes, torch.eye(5, dtype=torch.float64), atol=1e-10)
    # Each direction's largest entry is positive, whatever sign the solver returned.
    assert all(axes[axes[:, k].abs().argmax(), k] > 0 for k in range(5))
    _, _, flipped = principal_axes(-x)
    assert torch.allclose(flipped, axes, atol=1e-10)


def test_principal_prompts_are_leading_directions_at_the_papers_norm():
    from supernet.fusion import PROMPT_INIT_STD
    from supernet.init import principal_axes, principal_prompts

    tokens = torch.randn(400, 8, generator=torch.Generator().manual_seed(1)) * torch.arange(
        8, 0, -1).float()
    banks = [torch.zeros(2, 8), torch.zeros(3, 8), torch.zeros(4, 8)]
    principal_prompts(banks, tokens)
    _, _, axes = principal_axes(tokens)
    norm = PROMPT_INIT_STD * 8 ** 0.5
    # Row r of bank b takes direction 3r + b, modulo d = 8.
    expected = {0: [0, 3], 1: [1, 4, 7], 2: [2, 5, 0, 3]}
    for b, bank in enumerate(banks):
        assert torch.allclose(bank.double(), axes[:, expected[b]].T * norm, atol=1e-6), b
    # A longer bank starts with the shorter one's rows.
    longer = [torch.zeros(5, 8), torch.zeros(3, 8), torch.zeros(4, 8)]
    principal_prompts(longer, tokens)
    assert torch.equal(longer[0][:2], banks[0])


def test_principal_mapping_is_an_exact_linear_map_between_principal_axes():
    from supernet.fusion import SlicedMLP
    from supernet.init import principal_axes, principal_mapping

    g = torch.Generator().manual_seed(2)
    inputs = torch.randn(300, 6, generator=g) @ torch.randn(6, 6, generator=g) + 3.0
    targets = torch.randn(300, 5, generator=g) * torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1])
    mlp = SlicedMLP(6, 7, 5).double()  # odd width: the last unit is +z alone
    principal_mapping(mlp, inputs, targets)
    mean, variances, axes = principal_axes(inputs)
    _, t_var, t_axes = principal_axes(targets)
    x = inputs.double()
    z = (x - mean) @ axes / variances.sqrt()  # standardised principal coordinates
    pre = x @ mlp.fc1.weight.T + mlp.fc1.bias
    assert torch.allclose(pre[:, 0::2], z[:, :4], atol=1e-8)
    assert torch.allclose(pre[:, 1::2], -z[:, :3], atol=1e-8)
    # Hidden pairs (0,1), (2,3), (4,5) recover z_0..z_2 exactly; unit 6 passes relu(z_3).
    share = (t_var / t_var.sum()).sqrt()
    expected = (z[:, :3] * share[:3]) @ t_axes[:, :3].T + torch.relu(z[:, 3:4]) * (
        share[3] * t_axes[:, 3])
    out = torch.relu(pre) @ mlp.fc2.weight.T + mlp.fc2.bias
    assert torch.allclose(out, expected, atol=1e-8)


def test_principal_hands_on_input_dependent_tokens_in_a_supernet_too(space, backbone,
                                                                     train_cache):
    from supernet.init import SEED_FREE_INITS

    assert "principal" in SEED_FREE_INITS
    supernet = initialised_supernet(space, backbone, train_cache, "principal")
    streams_at = stream_sampler(train_cache, backbone, 0)
    for j, slot in supernet.fusion.items():
        with torch.no_grad():
            q, _ = slot.query(streams_at(int(j)), backbone.text_layer_fn(int(j)),
                              backbone.image_layer_fn(int(j)), slot.size)
            pre = slot.text_to_image.fc1(q.reshape(-1, q.shape[-1]))
        # Standardised on the sample: every hidden unit reads a centred, unit-spread
        # coordinate, so a narrower subnet (the first units) reads the leading ones.
        assert pre.mean(0).abs().max() < 1e-3
        assert torch.allclose(pre.std(0)[:4], torch.ones(4), atol=1e-3)


def test_fixed_is_the_papers_draw_seeded_by_position_not_by_the_run(space, backbone,
                                                                      train_cache):
    from supernet.fusion import PROMPT_INIT_STD

    a = initialised(space, backbone, train_cache, "fixed", 1)
    b = fusion_state(initialised(space, backbone, train_cache, "fixed", 2))
    assert all(torch.equal(v, b[k]) for k, v in fusion_state(a).items())
    assert draws_no_global_random_numbers(space, backbone, train_cache, "fixed")
    # The constructors' distributions: prompts N(0, 0.02), Linear weights and biases within
    # +-1/sqrt(fan_in); and every slot draws its own.
    slots = [a.fusion[str(j)] for j in a.slot_configs]
    prompts = torch.cat([s.text_query.flatten() for s in slots]
                        + [s.image_fusion_context.flatten() for s in slots])
    assert abs(prompts.std().item() - PROMPT_INIT_STD) < 0.1 * PROMPT_INIT_STD
    for s in slots:
        for fc in (s.text_to_image.fc1, s.image_to_text.fc2):
            bound = fc.in_features ** -0.5
            assert fc.weight.abs().max() <= bound and fc.bias.abs().max() <= bound
            assert fc.weight.abs().max() > 0.9 * bound  # spread over the whole range
    assert len(slots) > 1 and not torch.equal(slots[0].text_query, slots[1].text_query)


def test_fixed_subnets_of_a_supernet_start_as_their_designs_do_alone(space, backbone,
                                                                      train_cache):
    supernet = initialised_supernet(space, backbone, train_cache, "fixed")
    for arch in (space.reference_arch(2, 1), space.reference_arch(1, 2)):
        alone = initialised(space, backbone, train_cache, "fixed", 5, arch)
        extracted = fusion_state(supernet.extract(arch))
        assert extracted.keys() == fusion_state(alone).keys()
        assert all(torch.equal(v, extracted[k]) for k, v in fusion_state(alone).items())
