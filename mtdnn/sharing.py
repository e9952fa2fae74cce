"""Soft parameter sharing: one encoder per task (or per group of tasks), tied by an L2 penalty.

The alternative to MT-DNN's hard sharing (one encoder for all tasks), after Duong et al. (2015) and
Ruder's overview of multi-task learning (2017): each group has its own copy of the pre-trained encoder, and
the loss adds lambda * sum_t ||theta_t - theta_mean||^2 over the encoders' parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from mtdnn.errors import MTDNNError
from mtdnn.tasks import TaskSpec


def resolve_groups(tasks: dict[str, TaskSpec], groups: list | None) -> list[list[str]]:
    """The encoder groups: those listed (lists of task names), then one group for each task not listed.

    Tasks predicted by another task's head (`head: mnli`) use that task's encoder and are not listed.
    """
    owners = [name for name, task in tasks.items() if task.head is None]
    resolved, seen = [], set()
    for i, group in enumerate(groups or []):
        group = [group] if isinstance(group, str) else group
        if not isinstance(group, list) or not group:
            raise MTDNNError(f"config key `model.encoder_groups[{i}]` must be a non-empty list of task names.")
        for name in group:
            if name not in owners:
                raise MTDNNError(f"config key `model.encoder_groups[{i}]` names `{name}`, which is not a task with "
                                 f"its own head in `tasks` ({', '.join(owners)}).")
            if name in seen:
                raise MTDNNError(f"config key `model.encoder_groups`: task `{name}` is in two groups.")
            seen.add(name)
        resolved.append(list(group))
    return resolved + [[name] for name in owners if name not in seen]


def soft_sharing_penalty(encoders: list[nn.Module]) -> torch.Tensor:
    """sum_t ||theta_t - theta_mean||^2 over the encoders' parameters, taken in the same order from each."""
    total = torch.zeros((), device=next(encoders[0].parameters()).device)
    if len(encoders) < 2:
        return total
    for parameters in zip(*(encoder.parameters() for encoder in encoders), strict=True):
        stacked = torch.stack([parameter.float() for parameter in parameters])  # (encoders, *shape)
        total = total + (stacked - stacked.mean(dim=0)).pow(2).sum()
    return total
