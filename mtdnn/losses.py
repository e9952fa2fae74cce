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
