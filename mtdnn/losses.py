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


LOSSES = {
    "single_classification": classification_loss,
    "pair_classification": classification_loss,
    "regression": regression_loss,
    "ranking": ranking_loss,
}


# The toolbox's extra terms (SMART, distillation): pure functions of logits as well.

def _finite(logits: torch.Tensor) -> torch.Tensor:
    """Padded ranking candidates (-inf) as a very low finite score: probability 0, but no 0 * inf = nan."""
    return logits.float().masked_fill(torch.isneginf(logits), -1e4)


def symmetric_kl(logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(p || q) + KL(q || p) of the softmax distributions, summed over classes, averaged over the batch."""
    log_p, log_q = F.log_softmax(_finite(logits), dim=-1), F.log_softmax(_finite(other), dim=-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1).mean()


def output_divergence(task_type: str, logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """How far two outputs of the same inputs are apart (SMART's smoothness loss): symmetric KL, or MSE for
    regression."""
    if task_type == "regression":
        return F.mse_loss(logits.float(), other.float())
    return symmetric_kl(logits, other)


def distillation_loss(task_type: str, logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """The soft-target loss of MT-DNN-KD against an ensemble of teachers. teacher_logits: (teachers, batch, C).

    The soft targets are the teachers' class probabilities at temperature T, averaged over the ensemble; the
    loss is T^2 * KL(targets || softmax(logits / T)) (T^2 keeps the gradients' scale as T changes), which at
    T = 1 is the KL divergence to the teachers' distribution. Regression: MSE to the teachers' mean output.
    """
    if task_type == "regression":
        return F.mse_loss(logits.float().squeeze(-1), teacher_logits.float().mean(dim=0).squeeze(-1))
    targets = F.softmax(_finite(teacher_logits) / temperature, dim=-1).mean(dim=0)  # (batch, C)
    log_p = F.log_softmax(_finite(logits) / temperature, dim=-1)
    kl = torch.where(targets > 0, targets * (targets.clamp_min(1e-30).log() - log_p), torch.zeros_like(log_p))
    return temperature ** 2 * kl.sum(dim=-1).mean()
