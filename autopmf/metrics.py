"""Task metrics. Higher is better for every metric here (the search maximises it).

Single-label data (labels int [N]) trains with softmax cross-entropy and is scored by accuracy;
multi-label data (labels multi-hot float [N, C]) trains with sigmoid binary cross-entropy and
is scored by F1 at threshold 0.5 on the sigmoid (logit > 0): macro (mean of per-class F1, as
MM-IMDB reports) or micro (F1 of all decisions pooled).
"""

from __future__ import annotations

import torch

from autopmf.ranking import average_ranks

SINGLE_LABEL_METRICS = ("accuracy",)
MULTILABEL_METRICS = ("f1_macro", "f1_micro")
METRICS = SINGLE_LABEL_METRICS + MULTILABEL_METRICS


def metrics_for(multilabel: bool) -> tuple[str, ...]:
    """The metrics that apply to a dataset; the first is its default."""
    return MULTILABEL_METRICS if multilabel else SINGLE_LABEL_METRICS


def f1_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """F1-macro and F1-micro of multi-label predictions (logit > 0). A class with no positive
    label and no positive prediction counts F1 = 0, as scikit-learn's zero_division=0."""
    predicted = logits > 0
    truth = labels > 0.5
    tp = (predicted & truth).sum(dim=0).double()
    fp = (predicted & ~truth).sum(dim=0).double()
    fn = (~predicted & truth).sum(dim=0).double()
    per_class = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), 0.0)
    pooled = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = (2 * tp.sum() / pooled).item() if pooled > 0 else 0.0
    return {"f1_macro": per_class.mean().item(), "f1_micro": micro}


def score(metric: str, logits: torch.Tensor, labels: torch.Tensor) -> float:
    if metric == "accuracy":
        return (logits.argmax(dim=-1) == labels).float().mean().item()
    if metric in MULTILABEL_METRICS:
        return f1_scores(logits, labels)[metric]
    raise ValueError(f"unknown metric {metric!r}; known: {METRICS}")


def loss_fn(metric: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # The labels' shape, not the metric, decides: multi-hot labels need per-class sigmoids.
    if labels.dim() == 2:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(),
                                                                    labels.float())
    return torch.nn.functional.cross_entropy(logits.float(), labels)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
                      ) -> torch.Tensor:
    """In-place distillation (BigNAS): the student's task loss against the teacher's
    predicted probabilities instead of the labels (whose shape, as in `loss_fn`, says which
    loss): softmax cross-entropy to the teacher's softmax, or per-class sigmoid cross-entropy
    to its sigmoids. Its gradient vanishes where the student's logits equal the teacher's."""
    teacher = teacher.detach().float()
    if labels.dim() == 2:
        return torch.nn.functional.binary_cross_entropy_with_logits(student.float(),
                                                                    teacher.sigmoid())
    return torch.nn.functional.cross_entropy(student.float(), teacher.softmax(dim=-1))


def binary_auc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of a two-class model (logits [N, 2], labels int [N]): the
    probability that a random positive outscores a random negative, ties counting half
    (Mann-Whitney U over the logit margin). Unlike accuracy it does not depend on where the
    model's threshold happens to sit, so it ranks models with less noise. NaN when a class
    is missing."""
    positive = (labels == 1).numpy()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks((logits[:, 1] - logits[:, 0]).double().numpy())
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def mean_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean log-probability of the true label (the negative of the cross-entropy loss, so
    that higher is better): a proper scoring rule, sensitive to confidence as well as to
    the decision."""
    return -torch.nn.functional.cross_entropy(logits.float(), labels).item()
