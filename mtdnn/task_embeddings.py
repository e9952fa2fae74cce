"""ERNIE 2.0 task embeddings (Sun et al. 2020): a learned vector per task added to the input embeddings.

The vector is added to the word embeddings before the encoder sums them with the position and segment
embeddings, which is the same as adding it to that sum. The table lives on the encoder module
(`encoder.task_embeddings`) so that it travels with the encoder: a checkpoint saves it with the encoder's
weights, and a fine-tuning model built around a trained encoder keeps every task's vector.
"""

from __future__ import annotations

import torch
from torch import nn

from mtdnn.errors import MTDNNError

ATTRIBUTE = "task_embeddings"
PREFIX = f"{ATTRIBUTE}.vectors."
"""Where the vectors sit in the encoder's state dict: `task_embeddings.vectors.<task>`."""


class TaskEmbeddings(nn.Module):
    """One (hidden,) vector per task name; a new task starts at zero, i.e. at the pre-trained encoder."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.vectors = nn.ParameterDict()

    def add(self, task_name: str, like: torch.Tensor) -> None:
        if "." in task_name:
            raise MTDNNError(f"task `{task_name}`: a task with task embeddings needs a name without dots.")
        if task_name in self.vectors:
            return
        vectors = {**self.vectors, task_name: nn.Parameter(torch.zeros(self.hidden_size, dtype=like.dtype,
                                                                      device=like.device))}
        # Sorted by name, so that a model built afresh and one loaded from a checkpoint list their parameters
        # in the same order (the optimizer state saved for --resume is matched to parameters by position).
        self.vectors = nn.ParameterDict({name: vectors[name] for name in sorted(vectors)})

    def forward(self, task_name: str) -> torch.Tensor:
        return self.vectors[task_name]  # (hidden,)


def table_of(encoder: nn.Module) -> TaskEmbeddings | None:
    return getattr(encoder, ATTRIBUTE, None)


def attach(encoder: nn.Module, task_names) -> TaskEmbeddings:
    """Give `encoder` a task-embedding table (if it has none) holding a vector for each of `task_names`."""
    table = table_of(encoder)
    if table is None:
        table = TaskEmbeddings(encoder.config.hidden_size)
        setattr(encoder, ATTRIBUTE, table)
    like = encoder.get_input_embeddings().weight
    for name in task_names:
        table.add(name, like)
    return table


def names_in_state(state: dict, prefix: str) -> list[str]:
    """Task names whose vectors a saved state dict holds under `prefix` (e.g. `encoder.`)."""
    start = prefix + PREFIX
    return [key[len(start):] for key in state if key.startswith(start)]
