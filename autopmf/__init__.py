"""autopmf: neural architecture search for prompt-based multimodal fusion (PMF)."""

__version__ = "0.1.0"
