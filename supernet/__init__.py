"""The model side of autopmf: the PMF model, its fused slots and the weight-sharing supernet."""
