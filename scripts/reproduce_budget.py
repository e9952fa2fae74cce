"""The budget probe's verdicts (issue 20): whether a single-task baseline has learnt its task, and at which of the
plan's candidate budgets the reproduction trains. A comparison against a baseline that never left the majority
class measures the baseline's failure, not what multi-task training adds."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mtdnn.metrics import compute_metrics, task_score
from mtdnn.tasks import TaskSpec
from scripts.reproduce_plan import ReproducePlan


class BudgetRefused(Exception):
    """No candidate budget lets every baseline learn, and none was accepted anyway."""


def majority_floor(task: TaskSpec, labels: np.ndarray) -> float:
    """The dev score of always predicting the most frequent dev label; 0 for a regression task (a constant
    prediction has no correlation with anything)."""
    if task.type == "regression":
        return 0.0
    labels = np.asarray(labels)
    majority = np.full_like(labels, Counter(labels.tolist()).most_common(1)[0][0])
    return task_score(compute_metrics(task.metrics, task.type, majority, labels))


def judge(plan: ReproducePlan, task: str, seed: int, metrics: dict[str, float], floor: float) -> dict:
    """One arm-1 run's verdict: its score against the floor plus the plan's margin, and the plan's minimums."""
    score, threshold = task_score(metrics), floor + plan.margin
    minimums = {metric: [metrics[metric], least] for metric, least in plan.minimums.get(task, {}).items()}
    exempt = task in plan.exempt
    learnt = score >= threshold and all(value >= least for value, least in minimums.values())
    return {"task": task, "seed": seed, "score": score, "floor": floor, "threshold": threshold,
            "minimums": minimums, "exempt": exempt, "passed": exempt or learnt}


def miss(verdict: dict) -> str:
    """What a failed verdict missed, in points: `cola seed 1: 8.2 < 15.0 (matthews_correlation 8.2 < 15.0)`."""
    below = [f"{metric} {100 * value:.1f} < {100 * least:.1f}" for metric, (value, least) in verdict["minimums"].items()
             if value < least]
    score = f"{100 * verdict['score']:.1f} {'<' if verdict['score'] < verdict['threshold'] else '≥'} " \
            f"{100 * verdict['threshold']:.1f}"
    return f"{verdict['task']} seed {verdict['seed']}: {score}" + (f" ({'; '.join(below)})" if below else "")


def candidate(index: int, plan: ReproducePlan, verdicts: list[dict]) -> dict:
    """A candidate's record in budget.json: its budget, its runs' verdicts, and `passed` when every task and seed
    ran and passed."""
    complete = len(verdicts) == len(plan.tasks) * len(plan.seeds)
    return {"candidate": index, "epochs": plan.epochs, "learning_rate": plan.learning_rate,
            "label": plan.budget_label, "verdicts": verdicts,
            "passed": complete and all(verdict["passed"] for verdict in verdicts)}


def choose(candidates: list[dict], accept: int | None) -> dict:
    """budget.json's content: the first candidate that passed; else candidate `accept` (1-based), marked
    accepted; else BudgetRefused, naming every candidate's misses."""
    for record in candidates:
        if record["passed"]:
            return {"chosen": record["candidate"], "accepted": False, "candidates": candidates}
    if accept is not None:
        return {"chosen": accept, "accepted": True, "candidates": candidates}
    lines = ["no candidate budget lets every single-task baseline learn (score ≥ majority-class floor + margin, "
             "and the plan's minimums):"]
    for record in candidates:
        misses = [miss(verdict) for verdict in record["verdicts"] if not verdict["passed"]]
        lines.append(f"  candidate {record['candidate']} ({record['epochs']} epochs, lr {record['learning_rate']:g}): "
                     + ("; ".join(misses) or "not every run finished"))
    lines.append("Add a larger budget at the end of `budgets` in scripts/reproduce_plan.py (the runs so far are "
                 "kept), or go on with candidate N anyway: --accept-budget N (the report then names the tasks whose "
                 "baseline did not learn).")
    raise BudgetRefused("\n".join(lines))


def not_learnt(choice: dict) -> list[str]:
    """The tasks on which the chosen budget's baseline missed its threshold on some seed (an accepted budget)."""
    record = choice["candidates"][choice["chosen"] - 1]
    return sorted({verdict["task"] for verdict in record["verdicts"] if not verdict["passed"]})
