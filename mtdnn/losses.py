"""Task losses as pure functions of (logits, labels), keyed by task type; testable without a model."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, **_) -> torch.Tensor:
    """Cross-entropy over classes. logits: (batch, num_labels); labels: (batch,)."""
    return F.cross_entropy(logits.float(), labels)


def regression_loss(logits: torch.Tensor, labels: torch.Tensor, **_) -> torch.Tensor:
    """Mean squared error. logits: (batch, 1); labels: (batch,)."""
    return F.mse_loss(logits.float().squeeze(-1), labels.float())


def ranking_loss(logits: torch.Tensor, labels: torch.Tensor, **_) -> torch.Tensor:
    """Listwise softmax over each query's candidates (paper eq. 8-9): -log P(A+ | Q).

    logits: (batch, group_size) relevance scores, padded candidates already at -inf; labels: (batch,)
    the position of the positive candidate.
    """
    return F.cross_entropy(logits.float(), labels)


def multi_label_loss(logits: torch.Tensor, labels: torch.Tensor, **_) -> torch.Tensor:
    """Binary cross-entropy of each label's sigmoid, averaged over labels and examples (as transformers'
    `problem_type="multi_label_classification"`). logits, labels (multi-hot floats): (batch, num_labels)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


LOSSES = {
    "single_classification": classification_loss,
    "pair_classification": classification_loss,
    "regression": regression_loss,
    "ranking": ranking_loss,
    "multi_label_classification": multi_label_loss,
}


# The toolbox's extra terms (SMART, distillation): pure functions of logits as well.

def _finite(logits: torch.Tensor) -> torch.Tensor:
    """Padded ranking candidates (-inf) as a very low finite score: probability 0, but no 0 * inf = nan."""
    return logits.float().masked_fill(torch.isneginf(logits), -1e4)


def symmetric_kl(logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(p || q) + KL(q || p) of the softmax distributions, summed over classes, averaged over the batch."""
    log_p, log_q = F.log_softmax(_finite(logits), dim=-1), F.log_softmax(_finite(other), dim=-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1).mean()


def symmetric_bernoulli_kl(logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(p || q) + KL(q || p) of each label's Bernoulli distribution, averaged over labels and the batch.

    For p = sigmoid(a), q = sigmoid(b) the sum is exactly (p - q) * (a - b): no logarithm to overflow.
    """
    logits, other = logits.float(), other.float()
    return ((torch.sigmoid(logits) - torch.sigmoid(other)) * (logits - other)).mean()


def output_divergence(task_type: str, logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """How far two outputs of the same inputs are apart (SMART's smoothness loss): symmetric KL, per label for
    multi-label tasks, or MSE for regression."""
    if task_type == "regression":
        return F.mse_loss(logits.float(), other.float())
    if task_type == "multi_label_classification":
        return symmetric_bernoulli_kl(logits, other)
    return symmetric_kl(logits, other)


def distillation_loss(task_type: str, logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """The soft-target loss of MT-DNN-KD against an ensemble of teachers. teacher_logits: (teachers, batch, C).

    The soft targets are the teachers' class probabilities at temperature T, averaged over the ensemble; the
    loss is T^2 * KL(targets || softmax(logits / T)) (T^2 keeps the gradients' scale as T changes), which at
    T = 1 is the KL divergence to the teachers' distribution. Regression: MSE to the teachers' mean output.
    Multi-label: the same per label, with sigmoids for softmaxes, averaged over labels like the task's BCE.
    """
    if task_type == "regression":
        return F.mse_loss(logits.float().squeeze(-1), teacher_logits.float().mean(dim=0).squeeze(-1))
    if task_type == "multi_label_classification":
        targets = torch.sigmoid(teacher_logits.float() / temperature).mean(dim=0)  # (batch, num_labels)
        cross_entropy = F.binary_cross_entropy_with_logits(logits.float() / temperature, targets, reduction="none")
        entropy = -(torch.special.xlogy(targets, targets) + torch.special.xlogy(1 - targets, 1 - targets))
        return temperature ** 2 * (cross_entropy - entropy).mean()  # KL = cross-entropy - entropy of the targets
    targets = F.softmax(_finite(teacher_logits) / temperature, dim=-1).mean(dim=0)  # (batch, C)
    log_p = F.log_softmax(_finite(logits) / temperature, dim=-1)
    kl = torch.where(targets > 0, targets * (targets.clamp_min(1e-30).log() - log_p), torch.zeros_like(log_p))
    return temperature ** 2 * kl.sum(dim=-1).mean()
