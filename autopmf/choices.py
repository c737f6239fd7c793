"""The words an option may take, named once for the library and the CLI (torch-free, so the
CLI can build its parser without loading a model)."""

STRATEGIES = ("evolution", "random")  # search: mutate a population, or sample only
SUPERNET_SCOPES = ("budget", "full")  # supernet training: subnets within the budget, or all
RETRAIN_INITS = ("scratch", "supernet")  # retrain: fresh weights, or the supernet's
# The search's inherited score: a linear probe fitted to each subnet's own [CLS] pair, the
# supernet's shared heads, or that probe then one short epoch of training (autopmf.inherited).
INHERITED_SCORINGS = ("probe", "heads", "finetune")
# Training examples a candidate's probe is fitted on, by default (--probe-examples).
PROBE_EXAMPLES = 1024
DEVICES = ("cpu", "cuda")  # `cuda:N` names one GPU of several
# The frozen-feature cache: chosen by device and data, on disk (shards read per batch), in
# memory only, or none (the frozen prefix recomputed every batch).
FEATURE_CACHE_MODES = ("auto", "disk", "memory", "off")
# RAM that a run's slot caches (frozen streams kept at higher slots, autopmf.features) may
# hold together, by default; --slot-cache-gib. 1 GiB (it was 2): at 1,000 images of 224 px it
# lowered a search's peak from 4.18 to 4.00 GiB anonymous (BENCHMARKS.md, issue 19).
DEFAULT_SLOT_BYTES = 2**30
