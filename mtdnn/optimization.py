"""The optimizer of every training loop: AdamW, or the paper's Adamax, both with decoupled weight decay."""

from __future__ import annotations

import torch

from mtdnn.config import OptimizationSettings


class AdamaxW(torch.optim.Adamax):
    """Adamax with decoupled weight decay, as AdamW is Adam with decoupled weight decay (Loshchilov and Hutter).

    `torch.optim.Adamax(weight_decay=...)` adds the decay to the gradient (L2). Adamax then divides the step by
    the largest gradient seen, so a parameter the data never touches (an unused word-embedding row) moves by
    about the whole learning rate every step and collapses to zero. Here each step first shrinks every
    parameter that has a gradient by `lr * weight_decay`, then takes Adamax's step on the gradient alone.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, **kwargs):
        super().__init__(params, lr=lr, weight_decay=weight_decay, **kwargs)
        for group in [*self.param_groups, self.defaults]:  # each group's weight_decay becomes its decoupled decay
            group["decoupled_weight_decay"], group["weight_decay"] = group["weight_decay"], 0.0

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            shrink = 1.0 - group["lr"] * group.get("decoupled_weight_decay", 0.0)
            for parameter in group["params"] if shrink != 1.0 else ():
                if parameter.grad is not None:
                    parameter.mul_(shrink)
        return super().step(closure)


def build_optimizer(model: torch.nn.Module, settings: OptimizationSettings) -> torch.optim.Optimizer:
    """AdamW (fused) or Adamax, each with decoupled weight decay; none on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "adamax":
        return AdamaxW(groups, lr=settings.learning_rate)
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)
