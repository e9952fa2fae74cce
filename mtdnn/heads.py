"""Task-specific output layers on top of the shared encoder: the paper's linear heads and its SAN answer module."""

from __future__ import annotations

import torch
from torch import nn

from mtdnn.tasks import TaskSpec

DEFAULT_INITIALIZER_RANGE = 0.02
"""transformers' std for a config without `initializer_range` (`PreTrainedModel._init_weights`)."""


def initializer_range_of(config) -> float:
    """The std transformers draws an encoder's new layers with: its config's `initializer_range`, else 0.02."""
    return getattr(config, "initializer_range", None) or DEFAULT_INITIALIZER_RANGE


def head_linear(in_features: int, out_features: int, std: float, bias: bool = True) -> nn.Linear:
    """A linear layer initialised as transformers initialises a classifier: weight ~ N(0, std), bias 0.

    Built without PyTorch's default (Kaiming-uniform) init, so that it draws nothing else from the RNG: seeded
    alike, a one-task model on a loaded encoder gets the classifier `BertForSequenceClassification.from_pretrained`
    draws, value for value."""
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias)
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class LinearHead(nn.Module):
    """Dropout then one linear layer: class logits, a regression value, or a relevance score.

    With BERT's pooled [CLS] vector as input this is exactly `BertForSequenceClassification`'s head.
    """

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float,
                 initializer_range: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = head_linear(hidden_size, num_outputs, initializer_range)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(pooled))  # (batch, num_outputs)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where `mask` is true (float32). scores, mask: (batch, seq)."""
    return torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1)


def step_keep_mask(batch: int, steps: int, drop: float, device=None) -> torch.Tensor:
    """Stochastic prediction dropout: which steps' predictions each example keeps, never none. (batch, steps)"""
    keep = torch.rand(batch, steps, device=device) >= drop
    rescue = torch.randint(steps, (batch,), device=device)  # an example that dropped every step keeps one at random
    keep[torch.arange(batch, device=device), rescue] |= ~keep.any(dim=1)
    return keep


class SANHead(nn.Module):
    """Stochastic answer network (Liu et al. 2018; MT-DNN section 3.2) for pair classification.

    The premise's and the hypothesis's token states are working memories. The initial state s0 is an
    attention summary of the hypothesis; each of K steps attends over the premise bilinearly from the
    state (x_k), updates the state with a GRU (s_k = GRU(s_{k-1}, x_k)) and predicts
    P_k = softmax(W [s_k; x_k; |s_k - x_k|; s_k * x_k]). Training averages the P_k of the steps that survive
    stochastic prediction dropout; inference averages all K. Returns log-probabilities, so that
    cross-entropy, argmax and softmax treat them like logits.
    """

    def __init__(self, hidden_size: int, num_labels: int, steps: int = 5, step_dropout: float = 0.1,
                 dropout: float = 0.1, initializer_range: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__()
        self.steps, self.step_dropout = steps, step_dropout
        self.dropout = nn.Dropout(dropout)
        std = initializer_range
        self.summary = head_linear(hidden_size, 1, std)  # w1: self-attention weights of the hypothesis for s0
        self.bilinear = head_linear(hidden_size, hidden_size, std, bias=False)  # W2 of s W2 M^T
        # transformers has no rule for a GRU cell to match (its _init_weights covers linear, embedding, norm and
        # LSTM layers), so the cell keeps PyTorch's default for recurrent layers, uniform(+-1/sqrt(hidden)).
        self.gru = nn.GRUCell(hidden_size, hidden_size)
        self.classifier = head_linear(4 * hidden_size, num_labels, std)  # W3

    def step_probabilities(self, states: torch.Tensor, attention_mask: torch.Tensor,
                           token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """P_k for every step. states: (batch, seq, hidden) -> (batch, steps, num_labels)."""
        mask = attention_mask.bool()
        if token_type_ids is None:  # no segment ids (e.g. RoBERTa): both memories are the whole sequence
            premise, hypothesis = mask, mask
        else:
            premise, hypothesis = mask & (token_type_ids == 0), mask & (token_type_ids == 1)
            hypothesis = torch.where(hypothesis.any(-1, keepdim=True), hypothesis, mask)  # hypothesis truncated away
        memory = self.dropout(states).float()
        alpha = masked_softmax(self.summary(memory).squeeze(-1), hypothesis)  # (batch, seq)
        state = torch.einsum("bs,bsh->bh", alpha, memory)  # s0: (batch, hidden)
        probabilities = []
        for _ in range(self.steps):
            beta = masked_softmax(torch.einsum("bh,bsh->bs", self.bilinear(state), memory), premise)
            x = torch.einsum("bs,bsh->bh", beta, memory)  # (batch, hidden)
            state = self.gru(x, state)
            features = torch.cat([state, x, (state - x).abs(), state * x], dim=-1)  # (batch, 4 hidden)
            probabilities.append(torch.softmax(self.classifier(self.dropout(features)), dim=-1))
        return torch.stack(probabilities, dim=1)

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        probabilities = self.step_probabilities(states, attention_mask, token_type_ids)  # (batch, steps, labels)
        if self.training:
            keep = step_keep_mask(probabilities.shape[0], self.steps, self.step_dropout, probabilities.device)
            weights = keep.float() / keep.sum(dim=1, keepdim=True)  # (batch, steps): mean over kept steps
            averaged = torch.einsum("bk,bkl->bl", weights, probabilities)
        else:
            averaged = probabilities.mean(dim=1)
        return averaged.clamp_min(torch.finfo(averaged.dtype).tiny).log()  # (batch, num_labels)


def classification_head(task: TaskSpec, hidden_size: int, initializer_range: float) -> nn.Module:
    return LinearHead(hidden_size, task.num_labels, task.dropout, initializer_range)


def scalar_head(task: TaskSpec, hidden_size: int, initializer_range: float) -> nn.Module:
    """One output: the STS-B similarity, or the relevance score Rel(Q, A) = w^T x of paper eq. 5."""
    return LinearHead(hidden_size, 1, task.dropout, initializer_range)


HEADS = {
    "single_classification": classification_head,
    "pair_classification": classification_head,
    "regression": scalar_head,
    "ranking": scalar_head,
    "multi_label_classification": classification_head,  # one logit per label, read through a sigmoid
}


def build_head(task: TaskSpec, hidden_size: int, initializer_range: float) -> nn.Module:
    """The task's head: SAN where the task asks for it (`answer_module: san`), else its type's linear head.

    `initializer_range`: the std of its linear layers' weights; the encoder's (`initializer_range_of(config)`),
    as transformers initialises a classifier on that encoder."""
    if task.answer_module == "san":
        return SANHead(hidden_size, task.num_labels, task.san_steps, task.san_step_dropout, task.dropout,
                       initializer_range)
    return HEADS[task.type](task, hidden_size, initializer_range)
