"""What the reproduction (issue 6) trains: the same settings for every arm, task and seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from scripts.plan import Plan

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")


@dataclass(frozen=True, kw_only=True)
class ReproducePlan(Plan):
    """What one run of the experiment trains; the same settings for every arm."""

    name: str
    seeds: tuple[int, ...]
    """Training seeds (head initialisation, dropout, batch order); stage 2 is trained once per seed."""
    train_caps: dict[str, int] = field(default_factory=dict)
    """Task -> training examples kept (a random subset, the same for every arm and seed); absent: all."""
    stage2_evals_per_epoch: int = 2
    """Dev evaluations per epoch of the stage-2 run, for its learning curves (training is unaffected)."""
    tasks: tuple = TASKS
    subset_seed: int = 0


# One epoch, and SST-2 capped, so that four arms x three seeds fit issue 6's 2-hour budget on 2 CPU cores; two
# epochs would not (the measured times: docs/results.md, "How the experiments' budgets were chosen").
FULL = ReproducePlan(name="full", seeds=(1, 2, 3), epochs=1, train_caps={"sst2": 4000}, stage2_evals_per_epoch=4)
QUICK = ReproducePlan(name="quick", seeds=(1,), epochs=1, train_caps={task: 64 for task in TASKS},
                      max_eval_samples=128, stage2_evals_per_epoch=2)
