"""The tables of scripts.reproduce's report: per-seed results aggregated per arm, the Δs with their bootstrap
intervals, WNLI on its own, the metrics per task, and the budget probe's evidence."""

from __future__ import annotations

import numpy as np

from mtdnn.metrics import task_score
from scripts.bootstrap import Interval, Scored, compare
from scripts.stats import format_mean_std, mean_std

ARMS = {
    "single": "arm 1: single-task",
    "control": "control: arm 1 + stage 3",
    "mtdnn": "arm 2: MT-DNN (stage 2 only)",
    "finetuned": "arm 3: MT-DNN + fine-tuning",
}
CONTRASTS = {"control": ("finetuned", "control"), "single": ("finetuned", "single")}
"""Baseline -> (arm, baseline) of each Δ the report gives an interval for."""
PAPER_TABLE3: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cola": ((61.8,), (63.5,)),
    "sst2": ((93.5,), (94.3,)),
    "mrpc": ((89.5, 85.8), (91.0, 87.5)),
    "stsb": ((89.6, 89.3), (90.7, 90.6)),
    "rte": ((71.1,), (83.4,)),
}
"""GLUE dev results of BERT-large and of MT-DNN (stage 3, BERT-large initialised) in Table 3 of Liu et al.
(2019), "Multi-Task Deep Neural Networks for Natural Language Understanding" (arXiv:1901.11504 / ACL 2019):
task -> (BERT-large's numbers, MT-DNN's), as printed (MRPC: two numbers, STS-B: Pearson/Spearman). WNLI is not
in that table (the paper left it out of its dev results)."""


def paper_delta(task: str) -> float | None:
    """MT-DNN − BERT-large on `task` in the paper's Table 3, in points, as the mean of the task's numbers (the
    same one-number-per-task score as ours)."""
    if task not in PAPER_TABLE3:
        return None
    bert, mtdnn = PAPER_TABLE3[task]
    return sum(mtdnn) / len(mtdnn) - sum(bert) / len(bert)


def collect(rows: list[dict], key: str = "metrics") -> dict[str, dict[str, dict[int, object]]]:
    """arm -> task -> seed -> the rows' `key` (metrics, or predictions)."""
    table: dict = {}
    for row in rows:
        if key in row:
            table.setdefault(row["arm"], {}).setdefault(row["task"], {})[row["seed"]] = row[key]
    return table


def scores(table: dict, arm: str, task: str, metric: str | None = None) -> list[float]:
    """One value per seed: a metric, or the task score (mean of the task's metrics)."""
    by_seed = table.get(arm, {}).get(task, {})
    return [metrics[metric] if metric else task_score(metrics) for _, metrics in sorted(by_seed.items())]


def mean_delta(table: dict, arm: str, baseline: str, task: str, metric: str | None = None) -> float | None:
    """Δ(arm − baseline) of the means over seeds, in points."""
    first, second = mean_std(scores(table, arm, task, metric))[0], mean_std(scores(table, baseline, task, metric))[0]
    return None if first is None or second is None else 100 * (first - second)


def small_task_average(table: dict, arm: str, tasks) -> list[float]:
    """Per seed, the mean task score over `tasks` (seeds that have all of them)."""
    per_task = [table.get(arm, {}).get(task, {}) for task in tasks]
    seeds = set.intersection(*(set(by_seed) for by_seed in per_task)) if per_task else set()
    return [sum(task_score(by_seed[seed]) for by_seed in per_task) / len(per_task) for seed in sorted(seeds)]


def intervals(predictions: dict, labels: dict, specs: dict, tasks, resamples: int, seed: int
              ) -> dict[str, dict[str, Interval]]:
    """Baseline -> task (and "average" over `tasks`) -> the interval of arm 3 − baseline."""
    def arm(name: str) -> dict[str, Scored]:
        return {task: Scored({seed: np.asarray(values) for seed, values in predictions[name][task].items()},
                             labels[task], tuple(specs[task].metrics), specs[task].type)
                for task in tasks if task in predictions.get(name, {}) and task in labels}

    return {baseline: compare(arm(first), arm(second), resamples, seed) for baseline, (first, second)
            in CONTRASTS.items()}


def format_delta(value: float | None, interval: Interval | None = None) -> str:
    """`+5.6 [+3.1, +8.0]` (points), the bare Δ without an interval, `–` without a Δ."""
    if interval is not None:
        return f"{100 * interval.delta:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
    return "–" if value is None else f"{value:+.1f}"


def summary_table(table: dict, found: dict, tasks) -> list[str]:
    """A row per task and the small-task average: each arm's score, Δ(3 − 1) and Δ(3 − control) with their
    intervals (`found`: `intervals` of these tasks), and the paper's Δ."""
    lines = ["| task | " + " | ".join(label.split(":")[0] for label in ARMS.values()) + " | Δ(3 − 1) [95% CI] | "
             "Δ(3 − control) [95% CI] | paper Δ (Table 3) | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        cells = [format_mean_std(scores(table, arm, task)) for arm in ARMS]
        deltas = [format_delta(mean_delta(table, "finetuned", baseline, task), found[baseline].get(task))
                  for baseline in ("single", "control")]
        paper = "not in Table 3" if paper_delta(task) is None else format_delta(paper_delta(task))
        lines.append(f"| {task} | {' | '.join(cells + deltas)} | {paper} | {len(scores(table, 'single', task))} |")
    cells = [format_mean_std(small_task_average(table, arm, tasks)) for arm in ARMS]
    deltas = [format_delta(None, found[baseline].get("average")) for baseline in ("single", "control")]
    known = [paper_delta(task) for task in tasks if paper_delta(task) is not None]
    paper = format_delta(sum(known) / len(known)) if len(known) == len(tasks) else ""
    lines.append(f"| small-task average | {' | '.join(cells + deltas)} | {paper} | |")
    return lines


def separate_table(table: dict, found: dict, tasks, floors: dict[str, float]) -> list[str]:
    """The tasks out of stage 2 (WNLI), each arm and Δ as in the summary, beside its majority-class score."""
    lines = ["| task | arm 1 | control | arm 3 (new head on the stage-2 encoder) | Δ(3 − 1) [95% CI] | "
             "Δ(3 − control) [95% CI] | majority class | seeds |", "|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        cells = [format_mean_std(scores(table, arm, task)) for arm in ("single", "control", "finetuned")]
        deltas = [format_delta(mean_delta(table, "finetuned", baseline, task), found[baseline].get(task))
                  for baseline in ("single", "control")]
        floor = f"{100 * floors[task]:.1f}" if task in floors else "–"
        lines.append(f"| {task} | {' | '.join(cells + deltas)} | {floor} | {len(scores(table, 'single', task))} |")
    return lines


def task_table(table: dict, task: str, metrics: tuple[str, ...]) -> list[str]:
    lines = ["| metric | " + " | ".join(label.split(":")[0] for label in ARMS.values()) + " | Δ(3 − 1) | "
             "Δ(3 − control) | seeds |", "|---|---|---|---|---|---|---|---|"]
    for metric in metrics:
        cells = [format_mean_std(scores(table, arm, task, metric)) for arm in ARMS]
        deltas = [format_delta(mean_delta(table, "finetuned", baseline, task, metric)) for baseline in ("single",
                                                                                                     "control")]
        seeds = "/".join(str(len(scores(table, arm, task, metric))) for arm in ARMS)
        lines.append(f"| {metric} | {' | '.join(cells + deltas)} | {seeds} |")
    return lines


def budget_table(choice: dict) -> list[str]:
    """A row per candidate and task the probe ran: floor, threshold, each seed's score, the verdict."""
    lines = ["| candidate | epochs | lr | task | majority floor | threshold | score per seed | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for record in choice["candidates"]:
        by_task: dict[str, list[dict]] = {}
        for verdict in record["verdicts"]:
            by_task.setdefault(verdict["task"], []).append(verdict)
        chosen = " (chosen)" if record["candidate"] == choice.get("chosen") else ""
        for task, verdicts in by_task.items():
            first = verdicts[0]
            threshold = f"≥ {100 * first['threshold']:.1f}" + "".join(
                f", {metric} ≥ {100 * least:.1f}" for metric, (_, least) in first["minimums"].items())
            seeds = ", ".join(f"{100 * verdict['score']:.1f} (s{verdict['seed']})" for verdict in verdicts)
            verdict = "exempt" if first["exempt"] else ("learnt" if all(v["passed"] for v in verdicts) else "MISSED")
            lines.append(f"| {record['candidate']}{chosen} | {record['epochs']} | {record['learning_rate']:g} | "
                         f"{task} | {100 * first['floor']:.1f} | {threshold} | {seeds} | {verdict} |")
    return lines
