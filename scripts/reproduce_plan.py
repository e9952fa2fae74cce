"""What the reproduction (issues 6 and 20) trains: the same settings for every arm, task and seed, at a training
budget (epochs, learning rate) that a probe picks from the plan's candidates."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from scripts.plan import Plan

STAGE2_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
"""The small GLUE tasks here that the paper trained multi-task; their average carries the claim."""
SEPARATE_TASKS = ("wnli",)
"""Left out of stage 2, as the paper left WNLI out; each is learnt by stage 3 from the stage-2 encoder, new head."""


@dataclass(frozen=True, kw_only=True)
class ReproducePlan(Plan):
    """What one run of the experiment trains; the same settings for every arm. `epochs` and `learning_rate` are
    None until a budget is chosen (`at`): every run trains at one of `budgets`."""

    name: str
    seeds: tuple[int, ...]
    """Training seeds (head initialisation, dropout, batch order); stage 2 is trained once per seed."""
    budgets: tuple[tuple[int, float], ...]
    """Candidate (epochs, learning rate) pairs, cheapest first: the first at which every single-task baseline
    learns every task (see `margin`) is the budget of every arm."""
    epochs: int | None = None
    learning_rate: float | None = None
    train_caps: dict[str, int] = field(default_factory=dict)
    """Task -> training examples kept (a random subset, the same for every arm and seed); absent: all."""
    stage2_evals_per_epoch: int = 2
    """Dev evaluations per epoch of the stage-2 run, for its learning curves (training is unaffected)."""
    tasks: tuple = STAGE2_TASKS + SEPARATE_TASKS
    """Config entries (GLUE names or own task mappings); those named in `separate` stay out of stage 2."""
    separate: tuple[str, ...] = SEPARATE_TASKS
    probe_first: tuple[str, ...] = ("cola", "rte")
    """Tasks the budget probe runs first, the likeliest to stay at the majority class, so a budget too small is
    rejected after as few runs as possible; then the others in the plan's order."""
    margin: float = 0.05
    """A baseline has learnt a task when its dev score is at least the majority-class score plus this (0.05: 5
    points); for a correlation metric a constant prediction scores 0."""
    minimums: dict[str, dict[str, float]] = field(default_factory=lambda: {"cola": {"matthews_correlation": 0.15}})
    """Task -> metric -> the least value a learnt baseline has, besides the margin."""
    exempt: tuple[str, ...] = SEPARATE_TASKS
    """Tasks the probe runs but does not judge: WNLI's dev set is built against its training set, and BERT and
    the paper predict its majority class."""
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0
    subset_seed: int = 0

    def at(self, budget: tuple[int, float]) -> "ReproducePlan":
        """This plan trained at `budget` (epochs, learning rate)."""
        epochs, learning_rate = budget
        return dataclasses.replace(self, epochs=epochs, learning_rate=learning_rate)

    @property
    def budget_label(self) -> str:
        """The chosen budget as a directory name (`e3-lr5e-05`): results of different budgets never mix."""
        return f"e{self.epochs}-lr{self.learning_rate:g}"


# SST-2 capped at 4,000 random examples (of 67,349) so that the arms x 3 seeds fit 2 CPU cores; the candidates are
# from the paper's learning-rate grid {2e-5, 3e-5, 5e-5} and start at 3 epochs, because at one epoch (issue 6's
# budget) single-task CoLA never left the majority class.
FULL = ReproducePlan(name="full", seeds=(1, 2, 3), budgets=((3, 5e-5), (3, 3e-5), (5, 5e-5)),
                     train_caps={"sst2": 4000}, stage2_evals_per_epoch=2)
QUICK = ReproducePlan(name="quick", seeds=(1,), budgets=((1, 5e-5), (1, 3e-5)),
                      train_caps={task: 64 for task in STAGE2_TASKS + SEPARATE_TASKS}, max_eval_samples=128,
                      stage2_evals_per_epoch=1)
QUICK_ACCEPTS = 1
"""The candidate a `--quick` run goes on with: 64 examples learn nothing, so no candidate passes, and the smoke
run checks the rest of the plumbing at the first."""
