"""The report of scripts.reproduce: per-seed results aggregated into docs/results.md, and its plots."""

from __future__ import annotations

import os
from pathlib import Path

from mtdnn.metrics import task_score
from scripts.plan import task_name
from scripts.report import how_jobs_ran, report_header, write_section
from scripts.reproduce_plan import ReproducePlan
from scripts.reproduce_plots import plot_curves, plot_scores
from scripts.results import ResultStore
from scripts.stats import format_mean_std, mean_std

SMALL_TASKS = ("rte", "mrpc", "stsb", "cola", "wnli")
ARMS = {
    "single": "arm 1: single-task (mtdnn)",
    "trainer": "arm 1': single-task (Trainer)",
    "mtdnn": "arm 2: MT-DNN (stage 2 only)",
    "finetuned": "arm 3: MT-DNN + fine-tuning",
}
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


def collect(rows: list[dict]) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """arm -> task -> seed -> metrics."""
    table: dict = {}
    for row in rows:
        table.setdefault(row["arm"], {}).setdefault(row["task"], {})[row["seed"]] = row["metrics"]
    return table


def scores(table: dict, arm: str, task: str, metric: str | None = None) -> list[float]:
    """One value per seed: a metric, or the task score (mean of the task's metrics)."""
    by_seed = table.get(arm, {}).get(task, {})
    return [metrics[metric] if metric else task_score(metrics) for _, metrics in sorted(by_seed.items())]


def delta(table: dict, task: str, metric: str | None = None) -> float | None:
    """Δ(arm 3 − arm 1) of the means, in points."""
    single, finetuned = mean_std(scores(table, "single", task, metric))[0], mean_std(
        scores(table, "finetuned", task, metric))[0]
    return None if single is None or finetuned is None else 100 * (finetuned - single)


def small_task_average(table: dict, arm: str, tasks) -> list[float]:
    """Per seed, the mean task score over the small tasks (seeds that have all of them)."""
    per_task = [dict(sorted(table.get(arm, {}).get(task, {}).items())) for task in tasks]
    seeds = set.intersection(*(set(by_seed) for by_seed in per_task)) if per_task else set()
    return [sum(task_score(by_seed[seed]) for by_seed in per_task) / len(per_task) for seed in sorted(seeds)]


def targets(table: dict, tasks) -> list[str]:
    """The issue's targets, each stated as met or not, with its numbers."""
    lines = []
    for task in tasks:
        ours, reference = mean_std(scores(table, "single", task))[0], mean_std(scores(table, "trainer", task))[0]
        if ours is not None and reference is not None:
            gap = 100 * (ours - reference)
            within = abs(round(gap, 1)) <= 1.0  # as shown, to one decimal
            lines.append(f"- {task}: ours − Trainer = {gap:+.1f} points ({'within' if within else 'NOT within'} 1 point)")
    small = [task for task in SMALL_TASKS if task in tasks]
    single, finetuned = small_task_average(table, "single", small), small_task_average(table, "finetuned", small)
    if single and finetuned:
        gain = 100 * (mean_std(finetuned)[0] - mean_std(single)[0])
        lines.append(f"- small-task average ({', '.join(small)}): arm 3 {format_mean_std(finetuned)} vs arm 1 "
                     f"{format_mean_std(single)}: Δ {gain:+.1f} points: {'met' if gain > 0 else 'NOT met'} "
                     "(target: arm 3 ahead)")
    for task in tasks:
        single_mean, single_std = mean_std(scores(table, "single", task))
        change = delta(table, task)
        if change is not None and single_std is None:
            lines.append(f"- {task}: arm 3 − arm 1 = {change:+.1f} points; one seed, so no std to judge it by")
        elif change is not None:
            behind = change < -100 * single_std
            lines.append(f"- {task}: arm 3 − arm 1 = {change:+.1f} points, arm 1 std {100 * single_std:.1f}: "
                         f"{'NOT met: behind by more than one std' if behind else 'not behind by more than one std'}")
    return lines


def format_delta(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def summary_table(table: dict, tasks) -> list[str]:
    lines = ["| task | arm 1 ours | arm 1 Trainer | arm 2 | arm 3 | Δ(3 − 1) | paper Δ (Table 3) | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        cells = [format_mean_std(scores(table, arm, task)) for arm in ARMS]
        seeds = len(scores(table, "single", task))
        paper = "not in Table 3" if paper_delta(task) is None else format_delta(paper_delta(task))
        lines.append(f"| {task} | {' | '.join(cells)} | {format_delta(delta(table, task))} | {paper} | {seeds} |")
    small = [task for task in SMALL_TASKS if task in tasks]
    cells = [format_mean_std(small_task_average(table, arm, small)) for arm in ARMS]
    averages = [mean_std(small_task_average(table, arm, small))[0] for arm in ("single", "finetuned")]
    gain = None if None in averages else 100 * (averages[1] - averages[0])
    lines.append(f"| small-task average | {' | '.join(cells)} | {format_delta(gain)} | | |")
    return lines


def task_table(table: dict, task: str, metrics: tuple[str, ...]) -> list[str]:
    lines = ["| metric | arm 1 ours | arm 1 Trainer | arm 2 | arm 3 | Δ(3 − 1) | seeds |", "|---|---|---|---|---|---|---|"]
    for metric in metrics:
        cells = [format_mean_std(scores(table, arm, task, metric)) for arm in ARMS]
        seeds = "/".join(str(len(scores(table, arm, task, metric))) for arm in ARMS)
        lines.append(f"| {metric} | {' | '.join(cells)} | {format_delta(delta(table, task, metric))} | {seeds} |")
    return lines


def plan_lines(plan: ReproducePlan, sizes: dict[str, tuple[int, int]]) -> list[str]:
    lines = ["| task | training examples used | of | epochs | seeds |", "|---|---|---|---|---|"]
    for task, (used, total) in sizes.items():
        lines.append(f"| {task} | {used:,} | {total:,} | {plan.epochs} | {len(plan.seeds)} |")
    return lines


def training_sizes(plan: ReproducePlan) -> dict[str, tuple[int, int]]:
    """Task -> (training examples used, training examples there are)."""
    from mtdnn.sources import glue_dir_from, load_split
    from mtdnn.tasks import resolve_tasks

    sizes = {}
    for name, task in resolve_tasks(list(plan.tasks)).items():
        total = len(load_split(task, "train", glue_dir_from(None))["idx"])
        sizes[name] = (min(plan.train_caps.get(name, total), total), total)
    return sizes


def rerun_lines(table: dict, other: dict, other_dir: Path | str) -> list[str]:
    """A second run of the same plan against this one, over the seeds both have: per arm and task the two means,
    the re-run's minus this run's, and whether that is within seed noise (at most the larger of the two standard
    deviations over seeds; with one seed there is no measure of noise)."""
    lines = ["| arm | task | seeds | this run | re-run | re-run − this run | within seed noise |",
             "|---|---|---|---|---|---|---|"]
    verdicts, identical = [], []
    for arm in ARMS:
        for task, by_seed in table.get(arm, {}).items():
            seeds = sorted(set(by_seed) & set(other.get(arm, {}).get(task, {})))
            if not seeds:
                continue
            ours = [task_score(by_seed[seed]) for seed in seeds]
            theirs = [task_score(other[arm][task][seed]) for seed in seeds]
            (mean, std), (mean_other, std_other) = mean_std(ours), mean_std(theirs)
            identical.append(ours == theirs)
            if std is None:
                verdict = "one seed: no noise measured"
            else:
                verdicts.append(abs(mean - mean_other) <= max(std, std_other) + 1e-9)
                verdict = "yes" if verdicts[-1] else "no"
            lines.append(f"| {ARMS[arm].split(':')[0]} | {task} | {','.join(map(str, seeds))} | "
                         f"{format_mean_std(ours)} | {format_mean_std(theirs)} | {100 * (mean_other - mean):+.1f} | "
                         f"{verdict} |")
    if len(lines) == 2:
        return [f"No arm, task and seed of the re-run in `{other_dir}` is in this run too."]
    return [f"The same plan run again from scratch (results in `{other_dir}`), over the seeds both runs have: "
            f"{sum(verdicts)} of {len(verdicts)} arm/task means differ by at most the larger of the two runs' "
            f"standard deviations over seeds, and {sum(identical)} of {len(identical)} arm/task results are identical "
            "seed for seed.", "", *lines]


def job_hours(rows: list[dict]) -> float:
    """Compute time of all jobs; a stage-2 run shared by several rows counts once."""
    shared = {row["shared_run"]: row["seconds"] for row in rows if "shared_run" in row}
    return (sum(row.get("seconds", 0) for row in rows if "shared_run" not in row) + sum(shared.values())) / 3600


def write_report(plan: ReproducePlan, store: ResultStore, output_dir: Path, report: Path, command: str,
                 rerun: Path | None = None) -> str:
    """The report's section and plots; `rerun`: the output directory of a second run of the same plan to compare."""
    from mtdnn.tasks import resolve_tasks

    rows = store.rows()
    table = collect(rows)
    tasks = [task_name(entry) for entry in plan.tasks]
    metrics_png, curves_png = report.parent / "reproduce.png", report.parent / "reproduce_curves.png"
    first_seed = output_dir / "runs" / "mtdnn" / f"seed-{plan.seeds[0]}"
    plot_scores({label: [mean_std(scores(table, arm, task)) for task in tasks] for arm, label in ARMS.items()},
                tasks, metrics_png)
    plot_curves(first_seed, tasks, curves_png)
    hours = job_hours(rows)
    relative = lambda path: os.path.relpath(path, report.parent)  # noqa: E731
    text = report_header(
        "## Reproduction: single-task fine-tuning vs MT-DNN (issue 6)", command=command, target="reproduce",
        output_dir=output_dir, smoke=None if plan.name == "full" else f"tiny training subsets, {len(plan.seeds)} seed",
        job_time=f"{hours:.2f} h of job time in all (summed over jobs and invocations, {how_jobs_ran(rows)}; "
                 "jobs side by side each count their own time, and a load from other processes slows them)")
    text += [
        f"Encoder `{plan.model}` (6 layers, hidden 384). Same settings in every arm: max length "
        f"{plan.max_seq_length}, batch {plan.batch_size}, AdamW lr {plan.learning_rate:g}, linear warm-up over "
        f"{plan.warmup_ratio:.0%} of the updates then linear decay, weight decay {plan.weight_decay}, "
        f"{plan.epochs} epoch(s); dev metrics after the last update (no checkpoint selection on dev); dev sets "
        f"{'complete' if plan.max_eval_samples is None else f'cut to their first {plan.max_eval_samples} examples'}."
        " Capped training sets are random subsets (seed "
        f"{plan.subset_seed}), the same in every arm. Stage 3 starts from stage 2's final checkpoint of the same seed.",
        "",
        *plan_lines(plan, training_sizes(plan)),
        "",
        "### Summary: dev score (mean of the task's metrics ×100), mean ± std over seeds",
        "",
        *summary_table(table, tasks),
        "",
        "Paper Δ: MT-DNN (multi-task, then fine-tuned per task: our arm 3) − BERT-large fine-tuned per task (our "
        "arm 1) on GLUE dev, Table 3 of Liu et al. (2019), with each task's numbers averaged as ours are: "
        + "; ".join(f"{task} {'/'.join(map(str, bert))} → {'/'.join(map(str, mtdnn))}"
                    for task, (bert, mtdnn) in PAPER_TABLE3.items()) + ". "
        "The paper's stage 2 trained on all GLUE tasks but WNLI, MNLI's 393k pairs among them.",
        "",
        "### Targets",
        "",
        *targets(table, tasks),
        "",
        "### Per task",
        "",
    ]
    for task, spec in resolve_tasks(list(plan.tasks)).items():
        metrics = spec.metrics
        text += [f"#### {task} ({', '.join(metrics)})", "", *task_table(table, task, metrics), ""]
    text += [
        "### Why these numbers may differ from the paper's",
        "",
        "- No MNLI, QQP or QNLI training data here: the paper's stage 2 drew most of its examples (and its "
        "RTE gain) from MNLI, a task close to RTE; ours shares an encoder between CoLA, SST-2, MRPC, STS-B, RTE "
        "and WNLI only, which are small and, except RTE/MRPC, unlike each other.",
        "- A 6-layer, 384-wide MiniLM (22M parameters) instead of BERT-large (24 layers, 335M), already tuned "
        "for sentence embeddings.",
        f"- CPU budget: {plan.epochs} epoch(s) per stage instead of the paper's 5 for stage 2, capped SST-2, "
        "AdamW instead of Adamax, no SAN answer module, no ranking formulation of QNLI, no hyper-parameter search.",
        "- WNLI is in the multi-task mix (the paper left it out of stage 2); its dev set (71 examples) is built "
        "against its training set, and predicting the majority class (56.3% of dev) is hard to beat.",
        "- Few seeds: small dev sets (RTE 277, MRPC 408, WNLI 71 examples) move by several points between seeds.",
        f"- Passes over the data: arm 3 sees each task's training set {plan.epochs} epoch(s) in stage 2 and "
        f"{plan.epochs} more in stage 3, arm 1 only {plan.epochs}, as in the paper's comparison. The paper trained "
        "to convergence, where the extra pass matters little; at this short budget part of arm 3's lead over "
        "arm 1 can be that second pass rather than the other tasks. Comparing arm 3 with single-task runs of "
        f"{2 * plan.epochs} epoch(s) separates the two.",
        "",
        f"![dev score per task and arm]({relative(metrics_png)})",
        "",
        f"![stage 2 learning curves, seed {plan.seeds[0]}]({relative(curves_png)})",
        *(["", "### A re-run", "", *rerun_lines(table, collect(ResultStore(rerun / "results").rows()), rerun)]
          if rerun else []),
    ]
    body = "\n".join(text)
    write_section(report, "reproduce", body)
    return "\n".join(summary_table(table, tasks))
