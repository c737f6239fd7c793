"""A run folder's layout: the one place that names the files autopmf writes at the top of a
run folder. Torch-free, so that `autopmf log` (report.py) can import it while a search runs.

`run_dir` decides who may write a folder, `search_log.SearchLog` owns the log's contents;
both, and every command, take the names from here.
"""

from __future__ import annotations

CONFIG = "config.yaml"  # the run's identity, seed and package versions (run_dir)
LOCK = ".autopmf.lock"  # one writer per run folder (run_dir.run_lock)

# autopmf search
SEARCH_LOG = "search_log.jsonl"  # one line per candidate, as scored (search_log.SearchLog)
BEST_ARCH = "best_arch.yaml"
PARETO = "pareto.json"
REFERENCE = "reference.json"  # the PMF paper's design within the budget, inherited score
FINALISTS = "finalists.json"  # --finalists: the shortlist's standalone scores and the winner
FINALISTS_DIR = "finalists"  # --finalists: one training run folder per finalist

# autopmf supernet (and the search's supernet)
SUPERNET_WEIGHTS = "supernet.safetensors"
SUPERNET_METRICS = "supernet_metrics.json"  # written last: marks the supernet as done

# autopmf train / retrain
METRICS = "metrics.json"  # written last: marks the run as done
WEIGHTS = "weights.safetensors"
ARCH = "arch.yaml"
TRAIN_OUTPUTS = (METRICS, WEIGHTS, ARCH)

# autopmf log --plot (report.write_plots)
PLOTS = "plots"
PLOT_SCORE_VS_MEMORY = f"{PLOTS}/score_vs_memory.png"
PLOT_BEST_SO_FAR = f"{PLOTS}/best_so_far.png"
PLOT_SLOT_FUSION = f"{PLOTS}/slot_fusion_frequency.png"
# Each plot's data, beside it (report._save_plot): what scripts and tests read.
PLOTS_DATA = tuple(p.removesuffix(".png") + ".json"
                  for p in (PLOT_SCORE_VS_MEMORY, PLOT_BEST_SO_FAR, PLOT_SLOT_FUSION))

# Every file an autopmf command writes at the top of a run folder, whatever the command
# (search, supernet, train, retrain, log --plot): --force removes these and the checkpoint
# folders, so no file of an older run of any kind passes for part of the new one, and it
# removes nothing else.
RUN_FILES = (CONFIG, SEARCH_LOG, BEST_ARCH, PARETO, REFERENCE, FINALISTS, SUPERNET_WEIGHTS,
             SUPERNET_METRICS, *TRAIN_OUTPUTS, PLOT_SCORE_VS_MEMORY, PLOT_BEST_SO_FAR,
             PLOT_SLOT_FUSION, *PLOTS_DATA)
