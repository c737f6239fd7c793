"""Imports point one way: the application (`autopmf`) uses the model (`supernet`), never the
reverse."""

import ast
from pathlib import Path

from autopmf.memory.profile import model_code
from autopmf.space import SearchSpace
from supernet.config import SubnetSpace

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def test_supernet_never_imports_autopmf():
    files = sorted((ROOT / "supernet").rglob("*.py"))
    assert len(files) >= 8
    offending = [f"{path.relative_to(ROOT)}: {name}" for path in files
                 for name in imported_modules(path) if name.split(".")[0] == "autopmf"]
    assert offending == []


def test_the_search_space_is_what_the_model_reads(space):
    assert isinstance(space, SearchSpace)
    assert isinstance(space, SubnetSpace)


def test_the_memory_profile_fingerprints_the_code_a_step_runs():
    code = model_code()
    # A profile built by other model, encoder or training-step code is stale.
    for module in ("supernet.fusion", "supernet.pmf", "supernet.backbone", "supernet.encoder",
                   "autopmf.encoders.text", "autopmf.encoders.vision", "autopmf.train",
                   "autopmf.memory.simulate", "autopmf.memory.measure", "autopmf.build"):
        assert module in code
    assert "autopmf.search" not in code and "autopmf.cli" not in code
