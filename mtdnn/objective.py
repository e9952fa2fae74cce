"""The loss of one training batch: the task's own loss, plus the toolbox's optional terms.

    loss = (1 - w) * task loss + w * soft-target loss      (distillation, for tasks with soft targets)
         + alpha * SMART smoothness loss                    (adversarial regularisation)
         + lambda * sum_t ||theta_t - theta_mean||^2        (soft parameter sharing)

With every option off (the default) it is exactly the task loss of `MTDNNModel.forward`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from mtdnn.adversarial import adversarial_loss
from mtdnn.config import AdversarialSettings, DistillationSettings
from mtdnn.data import TaskData
from mtdnn.losses import distillation_loss
from mtdnn.soft_targets import read_soft_targets

logger = logging.getLogger(__name__)


@dataclass
class Objective:
    distillation: DistillationSettings = field(default_factory=DistillationSettings)
    adversarial: AdversarialSettings = field(default_factory=AdversarialSettings)
    sharing_weight: float = 0.0
    """lambda of the soft-sharing penalty (models with several encoders)."""
    soft_targets: dict[str, torch.Tensor] = field(default_factory=dict)
    """Task -> the teachers' logits for its training examples, (teachers, examples, outputs)."""

    @classmethod
    def build(cls, distillation: DistillationSettings, adversarial: AdversarialSettings, sharing_weight: float,
              train_data: dict[str, TaskData]) -> "Objective":
        """The objective of a run, with the soft targets of its training tasks read from `distillation`'s directory."""
        directory = distillation.soft_targets
        soft_targets = {}
        for name, data in train_data.items() if directory else ():
            targets = read_soft_targets(directory, data)
            if targets is None:
                logger.info("no soft targets for task %s in %s: it trains on its labels only", name, directory)
            else:
                soft_targets[name] = targets
        return cls(distillation, adversarial, sharing_weight, soft_targets)

    def __call__(self, model, module, task_name: str, batch: dict[str, torch.Tensor],
                 positions: np.ndarray) -> torch.Tensor:
        """`model` as prepared by accelerate (it runs the clean forward pass), `module` the MTDNNModel inside it."""
        tied = len(module.encoders()) > 1 and self.sharing_weight > 0
        output = model(task_name, **batch, sharing_penalty=True) if tied else model(task_name, **batch)
        loss = output.loss
        task_type = module.head_task(module.tasks[task_name].head_name).type
        distillation, adversarial = self.distillation, self.adversarial
        if task_name in self.soft_targets and distillation.weight > 0:
            teachers = self.soft_targets[task_name][:, positions, : output.logits.shape[-1]].to(output.logits.device)
            soft = distillation_loss(task_type, output.logits, teachers, distillation.temperature)
            loss = (1 - distillation.weight) * loss + distillation.weight * soft
        if adversarial.weight > 0:
            loss = loss + adversarial.weight * adversarial_loss(
                module, task_name, batch, output.logits, adversarial.epsilon, adversarial.step_size,
                adversarial.noise, adversarial.steps)
        if tied:
            loss = loss + self.sharing_weight * output.sharing_penalty
        return loss
