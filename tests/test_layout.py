"""The run layout: file names in autopmf/layout.py, one check of a run folder in
run_dir.claim_run_dir."""

import pytest

from autopmf.errors import AutopmfError


def test_a_finished_training_run_with_no_config_is_refused_by_the_claim(tmp_path):
    """claim_run_dir is the one check of a run folder: a finished train run (metrics.json)
    with no config.yaml to identify it is refused there (train_arch had its own check)."""
    from autopmf.layout import METRICS
    from autopmf.run_dir import claim_run_dir

    (tmp_path / METRICS).write_text("{}")
    for resume in (False, True):
        with pytest.raises(AutopmfError, match=r"already holds a finished run \(metrics.json\)"):
            claim_run_dir(tmp_path, {"seed": 0}, resume=resume, force=False, what="training run",
                          finished=METRICS)
    claim_run_dir(tmp_path, {"seed": 0}, resume=False, force=False, what="search")
