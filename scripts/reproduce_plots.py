"""The plots of scripts.reproduce: dev score per task and arm, and stage 2's learning curves."""

from __future__ import annotations

import json
from pathlib import Path

from mtdnn.metrics import task_score


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    return plt


def plot_scores(stats: dict[str, list[tuple[float | None, float | None]]], tasks: list[str], path: Path) -> None:
    """Bars of each arm's (label -> per task (mean, std) over seeds) dev score, task by task."""
    import numpy as np

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(stats)
    for i, (label, per_task) in enumerate(stats.items()):
        means = [100 * (m if m is not None else np.nan) for m, _ in per_task]
        errors = [100 * (s or 0.0) for _, s in per_task]
        axes.bar(np.arange(len(tasks)) + (i - (len(stats) - 1) / 2) * width, means, width, yerr=errors, capsize=2,
                 label=label)
    axes.set_xticks(np.arange(len(tasks)), tasks)
    axes.set_ylabel("dev score (mean of the task's metrics, ×100)")
    axes.set_title("GLUE dev, MiniLM-L6: mean ± std over seeds")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_curves(run_dir: Path | None, tasks: list[str], path: Path) -> None:
    """The stage-2 run's training loss (a running mean per task) and dev score per task; nothing without a run."""
    import numpy as np

    if run_dir is None or not (run_dir / "metrics.jsonl").is_file():
        return
    plt = _pyplot()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    figure, (loss_axes, dev_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for task in tasks:
        points = [(row["step"], row["loss"]) for row in rows if row["type"] == "train" and row["task"] == task]
        if points:
            steps, losses = zip(*points)
            window = max(1, min(20, len(losses) // 5))  # running mean over this task's last batches
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            loss_axes.plot(steps[window - 1:], smooth, label=task)
        evals = [(row["step"], 100 * task_score(row["metrics"][task])) for row in rows
                 if row["type"] == "eval" and task in row["metrics"]]
        if evals:
            dev_axes.plot(*zip(*evals), "o-", label=task)
    loss_axes.set(xlabel="update", ylabel="training loss (running mean per task)", title="stage 2: training loss",
                  yscale="log")
    dev_axes.set(xlabel="update", ylabel="dev score ×100", title="stage 2: dev score per task")
    for axes in (loss_axes, dev_axes):
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
