"""Issue 19 item 5: the adapters are written for transformers 5's layer attribute names; a
layer without them (transformers 4's ViT / DINOv2 name q_proj attention.attention.query) is one
line naming the installed version and the requirement, not an AttributeError mid-search."""

import configparser
from pathlib import Path

import pytest
import transformers

from autopmf.encoders.compat import TRANSFORMERS_REQUIREMENT
from autopmf.encoders.text import BertTextEncoder, tiny_bert
from autopmf.encoders.vision import HFVisionEncoder, tiny_dinov2
from autopmf.errors import AutopmfError


def test_setup_cfg_requires_the_transformers_the_adapters_are_written_for():
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    requires = cfg["options"]["install_requires"].split()
    assert TRANSFORMERS_REQUIREMENT == "transformers>=5" and TRANSFORMERS_REQUIREMENT in requires
    assert int(transformers.__version__.split(".")[0]) >= 5


@pytest.mark.parametrize("part", ["q_proj", "o_proj"])
def test_a_vision_layer_without_the_transformers_5_names_is_one_clear_error(part):
    model = tiny_dinov2(depth=2).model
    delattr(model.encoder.layer[1].attention, part)  # as transformers 4 lays it out
    with pytest.raises(AutopmfError) as error:
        HFVisionEncoder(model, "dinov2-test")
    message = str(error.value)
    assert "\n" not in message
    assert f"dinov2-test: layer 1 (Dinov2Layer) has no attention.{part}" in message
    assert f"transformers {transformers.__version__} is installed" in message
    assert "requires transformers>=5: pip install 'transformers>=5'" in message


def test_a_text_layer_without_the_expected_names_is_one_clear_error():
    encoder = tiny_bert(depth=2)
    delattr(encoder.model.encoder.layer[0].attention.self, "query")
    with pytest.raises(AutopmfError, match=r"bert-test: layer 0 \(BertLayer\) has no "
                                           r"attention\.self\.query, .* requires "
                                           r"transformers>=5"):
        BertTextEncoder(encoder.model, None, "bert-test")
