"""The `transformers` version the encoder adapters are written for.

The row-only layer path (run_layer with `rows`) calls the blocks' parts by their transformers 5
names (ViT / DINOv2: attention.q_proj ... o_proj, mlp). transformers 4 names them otherwise
(attention.attention.query, ...), so an adapter checks its layers once, when it is built, and
stops with one line naming the installed version and the requirement instead of an
AttributeError deep inside a search.
"""

from __future__ import annotations

from autopmf.errors import AutopmfError

TRANSFORMERS_REQUIREMENT = "transformers>=5"  # as setup.cfg's install_requires


def require_layer_parts(layers, parts: tuple[str, ...], encoder: str) -> None:
    """Every layer has every dotted attribute path in `parts`, else an AutopmfError naming the
    first one missing, the installed transformers and the requirement."""
    for index, layer in enumerate(layers):
        for path in parts:
            found = layer
            for name in path.split("."):
                found = getattr(found, name, None)
                if found is None:
                    break
            if found is None:
                import transformers

                raise AutopmfError(
                    f"{encoder}: layer {index} ({type(layer).__name__}) has no {path}, which "
                    f"autopmf's adapters use; transformers {transformers.__version__} is "
                    f"installed and autopmf requires {TRANSFORMERS_REQUIREMENT}: pip install "
                    f"'{TRANSFORMERS_REQUIREMENT}'")
