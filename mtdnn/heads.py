"""Task-specific output layers on top of the shared encoder's sentence representation."""

from __future__ import annotations

import torch
from torch import nn

from mtdnn.tasks import TaskSpec


class LinearHead(nn.Module):
    """Dropout then one linear layer: class logits, a regression value, or a relevance score.

    With BERT's pooled [CLS] vector as input this is exactly `BertForSequenceClassification`'s head.
    """

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(pooled))  # (batch, num_outputs)


def classification_head(task: TaskSpec, hidden_size: int) -> nn.Module:
    return LinearHead(hidden_size, task.num_labels, task.dropout)


def scalar_head(task: TaskSpec, hidden_size: int) -> nn.Module:
    """One output: the STS-B similarity, or the relevance score Rel(Q, A) = w^T x of paper eq. 5."""
    return LinearHead(hidden_size, 1, task.dropout)


HEADS = {
    "single_classification": classification_head,
    "pair_classification": classification_head,
    "regression": scalar_head,
    "ranking": scalar_head,
}
