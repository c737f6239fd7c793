"""Threshold-free scores of a two-class model, against scikit-learn on fixed numbers."""

import math

import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from autopmf.metrics import binary_auc, mean_log_likelihood


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_log_likelihood_match_sklearn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    # Rounded logits make many tied margins, the case average ranks must get right.
    logits = torch.randn(300, 2, generator=g).round(decimals=1)
    labels = torch.randint(0, 2, (300,), generator=g)
    margin = (logits[:, 1] - logits[:, 0]).numpy()
    assert binary_auc(logits, labels) == pytest.approx(roc_auc_score(labels.numpy(), margin),
                                                       abs=1e-12)
    assert mean_log_likelihood(logits, labels) == pytest.approx(
        -log_loss(labels.numpy(), torch.softmax(logits, 1).numpy()), abs=1e-6)


def test_auc_hand_computed_cases():
    labels = torch.tensor([0, 0, 1, 1])
    perfect = torch.tensor([[0.0, -2.0], [0.0, -1.0], [0.0, 1.0], [0.0, 2.0]])
    assert binary_auc(perfect, labels) == 1.0
    assert binary_auc(-perfect, labels) == 0.0
    assert binary_auc(torch.zeros(4, 2), labels) == 0.5  # every pair tied
    # One positive below one negative: 3 of the 4 pairs ordered.
    assert binary_auc(torch.tensor([[0.0, -2.0], [0.0, 1.5], [0.0, 1.0], [0.0, 2.0]]),
                      labels) == 0.75


def test_auc_ignores_a_shift_of_the_threshold_that_changes_accuracy():
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[0.0, -2.0], [0.0, -1.0], [0.0, 1.0], [0.0, 2.0]])
    shifted = logits + torch.tensor([0.0, 1.5])
    accuracy = (shifted.argmax(1) == labels).float().mean().item()
    assert accuracy == 0.75 and binary_auc(shifted, labels) == 1.0


def test_auc_without_both_classes_is_undefined():
    assert math.isnan(binary_auc(torch.randn(5, 2), torch.ones(5, dtype=torch.long)))
