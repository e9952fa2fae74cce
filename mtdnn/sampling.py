"""The multi-task batch schedule of MT-DNN (paper, Algorithm 1).

Each task's data is cut into mini-batches of one task; each epoch, all tasks' batches are merged and
shuffled, so every batch of every task is seen exactly once per epoch in a random task order.
Within a task, batches are formed from examples of similar length (bucketing), which removes most
padding without changing what the model sees per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BUCKET_BATCHES = 50
"""Examples are sorted by length inside windows of this many batches (as `group_by_length` does)."""


def task_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool = True) -> list[np.ndarray]:
    """Shuffle one task's examples and cut them into batches; with `bucket`, similar lengths share a batch."""
    order = rng.permutation(len(lengths))
    if bucket:
        window = batch_size * BUCKET_BATCHES
        order = np.concatenate([
            chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in np.array_split(order, max(1, -(-len(order) // window)))
        ])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@dataclass
class MultiTaskSchedule:
    """Which task and which examples each step of an epoch uses; a pure function of (seed, epoch)."""

    lengths: dict[str, np.ndarray]
    """Task name -> token count of each training example."""
    batch_size: int
    """Examples per batch (the global batch: all processes together)."""
    seed: int
    bucket: bool = True

    def epoch(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        steps = [(name, batch) for name, lengths in self.lengths.items()
                 for batch in task_batches(lengths, self.batch_size, rng, self.bucket)]
        return [steps[i] for i in rng.permutation(len(steps))]

    def batches_per_epoch(self) -> int:
        return sum(-(-len(lengths) // self.batch_size) for lengths in self.lengths.values())
