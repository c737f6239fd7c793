"""Training-memory model: predict (estimator) and measure (measure) the peak memory of one
training step of any PMF architecture (DESIGN.md section 4).

    profile = load_profile(space, device="cpu")          # once per setting; cached as JSON
    estimate_bytes(space, arch, profile)                 # ~20 µs per architecture
    check_budget(space, budget_bytes, profile)           # AutopmfError when nothing fits
    profile.full_finetune                                # every weight trained, for reference

    from autopmf.memory.measure import measure_peak_bytes  # a real step, CPU or CUDA
"""

from autopmf.memory.estimator import (GIB, check_budget, estimate_bytes, max_memory_arch,
                                      min_memory_arch, reference_within_budget)
from autopmf.memory.profile import MemoryProfile
from autopmf.memory.profiling import build_profile, load_profile

__all__ = ["GIB", "MemoryProfile", "build_profile", "check_budget", "estimate_bytes",
           "load_profile", "max_memory_arch", "min_memory_arch", "reference_within_budget"]
