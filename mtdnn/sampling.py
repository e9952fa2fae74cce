"""Which task, and which of its examples, each training step uses.

The default is MT-DNN's schedule (paper, Algorithm 1): each task's data is cut into mini-batches of one task;
each epoch, all tasks' batches are merged and shuffled, so every batch of every task is seen exactly once per
epoch in a random task order. The other strategies of the toolbox change how often each task is picked.
Every schedule is a pure function of (seed, epoch): a resumed run and every process get the same steps.
Within a task, batches are formed from examples of similar length (bucketing), which removes most padding
without changing what the model sees per epoch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from mtdnn.config import SamplingSettings
from mtdnn.errors import MTDNNError

logger = logging.getLogger(__name__)

BUCKET_BATCHES = 50
"""Examples are sorted by length inside windows of this many batches (as `group_by_length` does)."""

Step = tuple[str, np.ndarray]
"""A task name and the positions of its examples that form one batch."""


def task_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool = True) -> list[np.ndarray]:
    """Shuffle one task's examples and cut them into batches; with `bucket`, similar lengths share a batch."""
    order = rng.permutation(len(lengths))
    if bucket:
        window = batch_size * BUCKET_BATCHES
        order = np.concatenate([
            chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in np.array_split(order, max(1, -(-len(order) // window)))
        ])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def cycled_batches(lengths: np.ndarray, batch_size: int, count: int, rng: np.random.Generator,
                   bucket: bool = True) -> list[np.ndarray]:
    """`count` batches of one task: its shuffled passes one after another, as many as needed."""
    batches: list[np.ndarray] = []
    while len(batches) < count:
        batches += task_batches(lengths, batch_size, rng, bucket)
    return batches[:count]


def num_batches(lengths: np.ndarray, batch_size: int) -> int:
    return -(-len(lengths) // batch_size)


@dataclass
class MultiTaskSchedule:
    """Which task and which examples each step of an epoch uses; a pure function of (seed, epoch)."""

    lengths: dict[str, np.ndarray]
    """Task name -> token count of each training example."""
    batch_size: int
    """Examples per batch (the global batch: all processes together)."""
    seed: int
    bucket: bool = True

    def epoch(self, epoch: int) -> list[Step]:
        rng = np.random.default_rng([self.seed, epoch])
        steps = [(name, batch) for name, lengths in self.lengths.items()
                 for batch in task_batches(lengths, self.batch_size, rng, self.bucket)]
        return [steps[i] for i in rng.permutation(len(steps))]

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return sum(num_batches(lengths, self.batch_size) for lengths in self.lengths.values())


def temperature_probabilities(sizes: dict[str, int], temperature: float) -> np.ndarray:
    """p_t proportional to n_t^(1/T): T = 1 is proportional to the data, T -> inf is uniform. (tasks,)"""
    weights = np.asarray(list(sizes.values()), dtype=np.float64) ** (1.0 / temperature)
    return weights / weights.sum()


@dataclass
class SampledSchedule:
    """Each step draws its task at random with probability p_t, then takes that task's next batch.

    An epoch has as many steps as MT-DNN's. With `final_temperature`, T moves step by step from `temperature`
    (at the first step of the run) to `final_temperature` (at its last, `total_batches`): annealed sampling,
    as in Stickland and Murray (2019), which starts proportional and ends closer to uniform.
    """

    lengths: dict[str, np.ndarray]
    batch_size: int
    seed: int
    temperature: float = 1.0
    """math.inf samples the tasks uniformly."""
    final_temperature: float | None = None
    total_batches: int = 1
    bucket: bool = True

    def probabilities(self, progress: float) -> np.ndarray:
        """p_t at a point of the run (0: first step, 1: last step). (tasks,)"""
        sizes = {name: len(lengths) for name, lengths in self.lengths.items()}
        if self.final_temperature is None:
            return temperature_probabilities(sizes, self.temperature)
        exponent = 1 / self.temperature + (1 / self.final_temperature - 1 / self.temperature) * progress
        return temperature_probabilities(sizes, 1 / exponent)

    def epoch(self, epoch: int) -> list[Step]:
        rng = np.random.default_rng([self.seed, epoch])
        size = self.batches_per_epoch()
        if self.final_temperature is None:
            tasks = rng.choice(len(self.lengths), size=size, p=self.probabilities(0.0))
        else:  # inverse-CDF draws from each step's own distribution
            progress = (epoch * size + np.arange(size)) / max(1, self.total_batches - 1)
            cumulative = np.cumsum([self.probabilities(min(1.0, x)) for x in progress], axis=1)  # (steps, tasks)
            tasks = np.minimum((rng.random(size)[:, None] >= cumulative).sum(axis=1), len(self.lengths) - 1)
        names = list(self.lengths)
        queues = {k: iter(cycled_batches(self.lengths[name], self.batch_size, int((tasks == k).sum()), rng,
                                         self.bucket)) for k, name in enumerate(names)}
        return [(names[k], next(queues[k])) for k in tasks]

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return sum(num_batches(lengths, self.batch_size) for lengths in self.lengths.values())


@dataclass
class MainTaskSchedule:
    """All of the main task's batches each epoch, plus at most ratio x as many batches drawn at random without
    replacement from the other tasks' (the `extra_task_ratio` of the MT-DNN code), shuffled together."""

    lengths: dict[str, np.ndarray]
    batch_size: int
    seed: int
    main_task: str
    ratio: float
    bucket: bool = True

    def epoch(self, epoch: int) -> list[Step]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = {name: task_batches(lengths, self.batch_size, rng, self.bucket)
                   for name, lengths in self.lengths.items()}
        auxiliary = [(name, batch) for name, task in batches.items() if name != self.main_task for batch in task]
        chosen = np.sort(rng.choice(len(auxiliary), size=self._auxiliary_count(), replace=False))
        steps = [(self.main_task, batch) for batch in batches[self.main_task]] + [auxiliary[i] for i in chosen]
        return [steps[i] for i in rng.permutation(len(steps))]

    def _auxiliary_count(self) -> int:
        main = num_batches(self.lengths[self.main_task], self.batch_size)
        others = sum(num_batches(lengths, self.batch_size) for name, lengths in self.lengths.items()
                     if name != self.main_task)
        return min(others, int(self.ratio * main))

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return num_batches(self.lengths[self.main_task], self.batch_size) + self._auxiliary_count()


@dataclass
class ContinualSchedule:
    """ERNIE 2.0's continual multi-task learning: stage k (epoch k) trains the tasks introduced in stages 0..k.

    Each task's total number of batches is fixed (`epochs` x its batches per epoch) and split evenly over the
    stages it takes part in, so a task introduced late is trained more densely, and early tasks keep being
    trained (and are not forgotten) while new ones arrive. Within a stage the batches are shuffled together.
    """

    lengths: dict[str, np.ndarray]
    batch_size: int
    seed: int
    stages: list[list[str]]
    """The tasks each stage adds."""
    epochs: int
    """Each task's total batches are `epochs` passes over its data."""
    bucket: bool = True

    def batches_in_stage(self, stage: int) -> dict[str, int]:
        """How many batches of each task stage `stage` trains (beyond the last stage: none)."""
        counts = {}
        for first, added in enumerate(self.stages):
            for name in added:
                total, spread = self.epochs * num_batches(self.lengths[name], self.batch_size), len(self.stages) - first
                if first <= stage < len(self.stages):  # earlier stages of its span take the remainder
                    counts[name] = total // spread + (1 if stage - first < total % spread else 0)
        return counts

    def epoch(self, epoch: int) -> list[Step]:
        rng = np.random.default_rng([self.seed, epoch])
        steps = [(name, batch) for name, count in self.batches_in_stage(epoch).items()
                 for batch in cycled_batches(self.lengths[name], self.batch_size, count, rng, self.bucket)]
        return [steps[i] for i in rng.permutation(len(steps))]

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return sum(self.batches_in_stage(epoch).values())


def _check_task(name, lengths: dict, key: str) -> None:
    if name not in lengths:
        raise MTDNNError(f"config key `train.sampling.{key}` names `{name}`, which is not a task with training data "
                         f"({', '.join(lengths)}).")


def build_schedule(settings: SamplingSettings, lengths: dict[str, np.ndarray], batch_size: int, seed: int,
                   epochs: int, max_steps: int | None, accumulation: int):
    """The schedule of `settings.strategy`, the number of epochs (stages) to run and the number of updates."""
    base = MultiTaskSchedule(lengths, batch_size, seed)
    if settings.strategy == "proportional" or len(lengths) == 1:  # one task: every strategy is this one
        return (base, *plan_updates(base, epochs, max_steps, accumulation))
    if settings.strategy == "continual":
        stages = [[group] if isinstance(group, str) else list(group) for group in settings.stages]
        listed = [name for stage in stages for name in stage]
        for name in listed:
            _check_task(name, lengths, "stages")
        unstaged = [name for name in lengths if name not in listed]
        if unstaged or len(set(listed)) != len(listed):
            raise MTDNNError(f"config key `train.sampling.stages` must name every training task exactly once; "
                             f"{'missing: ' + ', '.join(unstaged) if unstaged else 'a task is listed twice'}.")
        schedule = ContinualSchedule(lengths, batch_size, seed, stages, epochs)
        stage_count, total = plan_updates(schedule, len(stages), None, accumulation)
        if max_steps is not None and max_steps > total:
            logger.warning("train.max_steps=%d is more than the %d updates the continual stages hold; stopping at %d",
                           max_steps, total, total)
        return schedule, *plan_updates(schedule, stage_count, min(max_steps or total, total), accumulation)
    if settings.strategy == "main_task_ratio":
        _check_task(settings.main_task, lengths, "main_task")
        schedule = MainTaskSchedule(lengths, batch_size, seed, settings.main_task, settings.ratio)
        return (schedule, *plan_updates(schedule, epochs, max_steps, accumulation))
    run_epochs, total = plan_updates(base, epochs, max_steps, accumulation)
    temperature = {"uniform": math.inf, "temperature": settings.temperature, "annealed_temperature": 1.0}
    schedule = SampledSchedule(lengths, batch_size, seed, temperature[settings.strategy],
                               settings.temperature if settings.strategy == "annealed_temperature" else None,
                               total_batches=total * accumulation)
    return schedule, run_epochs, total


def plan_updates(schedule, epochs: int, max_steps: int | None, accumulation: int) -> tuple[int, int]:
    """(epochs to run, optimizer updates in all): `epochs` whole epochs, or as many as `max_steps` needs."""
    updates = lambda epoch: max(1, schedule.batches_per_epoch(epoch) // accumulation)  # noqa: E731
    if max_steps is None:
        return epochs, sum(updates(epoch) for epoch in range(epochs))
    run_epochs, planned = 0, 0
    while planned < max_steps:
        planned += updates(run_epochs)
        run_epochs += 1
    return run_epochs, max_steps
