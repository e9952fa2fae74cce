"""The report of scripts.reproduce: its section of docs/results.md (the chosen budget's results aggregated over
seeds, with bootstrap intervals, a generated reading, the budget probe's evidence) and its plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mtdnn.metrics import task_score
from mtdnn.sources import glue_dir_from, load_split
from mtdnn.tasks import resolve_tasks
from scripts.plan import task_name
from scripts.predictions import load_labels
from scripts.report import how_jobs_ran, report_header, write_section
from scripts.reproduce_budget import majority_floor, not_learnt
from scripts.reproduce_plan import ReproducePlan
from scripts.reproduce_plots import plot_curves, plot_scores
from scripts.reproduce_reading import reading
from scripts.reproduce_tables import (ARMS, PAPER_TABLE3, budget_table, collect, intervals, scores, separate_table,
                                      summary_table, task_table)
from scripts.results import ResultStore
from scripts.stats import format_mean_std, mean_std


def plan_lines(plan: ReproducePlan, sizes: dict[str, tuple[int, int]]) -> list[str]:
    lines = ["| task | training examples used | of | in stage 2 | epochs per stage | seeds |",
             "|---|---|---|---|---|---|"]
    for task, (used, total) in sizes.items():
        stage2 = "no (as in the paper)" if task in plan.separate else "yes"
        lines.append(f"| {task} | {used:,} | {total:,} | {stage2} | {plan.epochs} | {len(plan.seeds)} |")
    return lines


def training_sizes(plan: ReproducePlan) -> dict[str, tuple[int, int]]:
    """Task -> (training examples used, training examples there are)."""
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


def budget_lines(plan: ReproducePlan, choice: dict) -> list[str]:
    """The budget section: what the probe tried, its evidence, what it chose and why."""
    failed = not_learnt(choice)
    lines = [f"### Budget: {plan.epochs} epoch(s) per stage, lr {plan.learning_rate:g} (candidate {choice['chosen']} "
             f"of {len(plan.budgets)})", ""]
    if choice["accepted"]:
        how = "a `--quick` run goes on with it by itself" if plan.name == "quick" else "`--accept-budget`"
        lines += [f"> **No candidate budget let arm 1 learn every task; candidate {choice['chosen']} was accepted "
                  f"anyway ({how}).** Arm 1 did not clear its threshold on {', '.join(failed) or 'no task'} (some "
                  "seed): their Δs, and an average over them, measure a baseline that failed and cannot carry the "
                  "claim.", ""]
    lines += [
        "Candidates, cheapest first: " + ", ".join(f"{epochs} epoch(s) at lr {rate:g}" for epochs, rate in plan.budgets)
        + " (learning rates from the paper's grid {2e-5, 3e-5, 5e-5}); "
        + ("training sets capped at random subsets (" + ", ".join(f"{task} {cap:,}" for task, cap in
                                                                   plan.train_caps.items())
           + " examples) for the compute of 2 CPU cores; " if plan.train_caps else "")
        + "the same budget for every arm. The probe trains arm 1 task by task (hardest first: "
        f"{', '.join(plan.probe_first)}), seed by seed, and rejects a candidate at the first run that misses; the "
        "first candidate whose every run passes is the budget, and its arm-1 runs are arm 1. A run passes when its "
        f"score is at least the dev set's majority-class score + {100 * plan.margin:.0f} points (a constant "
        "prediction's correlation counts as 0)"
        + "".join(f", and {task} needs {metric} ≥ {least:g} ({100 * least:g} points)"
                  for task, minimums in plan.minimums.items() for metric, least in minimums.items())
        + f". Exempt: {', '.join(plan.exempt)} (its dev set is built against its training set; BERT and the paper "
        "predict its majority class). The budget is chosen on arm 1's dev scores alone, before any multi-task run: "
        "arm 3 plays no part, and choosing by arm 1 can only favour arm 1.", "", *budget_table(choice)]
    return lines


def setup_lines(plan: ReproducePlan, shared: list[str], separate: list[str]) -> list[str]:
    """The settings every arm shares, and what each arm trains."""
    dev = "complete" if plan.max_eval_samples is None else f"cut to their first {plan.max_eval_samples} examples"
    return [
        f"Encoder `{plan.model}` (6 layers, hidden 384). Same settings in every arm and stage: max length "
        f"{plan.max_seq_length}, batch {plan.batch_size}, AdamW lr {plan.learning_rate:g}, linear warm-up over "
        f"{plan.warmup_ratio:.0%} of a stage's updates then linear decay, weight decay {plan.weight_decay}, "
        f"{plan.epochs} epoch(s) per stage; dev metrics after the last update (no checkpoint selection on dev); dev "
        f"sets {dev}. Capped training sets are random subsets (seed {plan.subset_seed}), the same in every arm.",
        "",
        f"- **arm 1**: single-task fine-tuning, {plan.epochs} epoch(s) on the task.",
        f"- **control**: arm 1's final model fine-tuned again on its task for {plan.epochs} epoch(s) exactly as arm "
        f"3's stage 3 is (a new warm-up and decay): {2 * plan.epochs} passes over the task and arm 3's two "
        "learning-rate schedules; it differs from arm 3 only in that its first stage saw one task.",
        f"- **arm 2**: MT-DNN stage 2, multi-task on {', '.join(shared)} for {plan.epochs} epoch(s).",
        f"- **arm 3**: stage 2 then stage 3, each task fine-tuned from stage 2's final checkpoint of the same seed for "
        f"{plan.epochs} epoch(s); {', '.join(separate) or 'no task'} (out of stage 2) with a new head on its encoder.",
        "- Parity of arm 1 with `transformers.Trainer` is measured in [head_init.md](head_init.md).",
        "",
        *plan_lines(plan, training_sizes(plan)),
    ]


def interval_note(plan: ReproducePlan) -> str:
    return (f"Δ: arm 3 − the baseline, in points, with a 95% paired bootstrap interval ({plan.bootstrap_resamples} "
            f"resamples, seed {plan.bootstrap_seed}): each resample draws dev examples and seeds with replacement, the "
            "same for both arms, and averages each arm's task score over the drawn seeds; the average's interval "
            "draws every task in each resample. Paper Δ: MT-DNN (our arm 3) − BERT-large fine-tuned per task (our "
            "arm 1) on GLUE dev, Table 3 of Liu et al. (2019), each task's numbers averaged as ours are: "
            + "; ".join(f"{task} {'/'.join(map(str, bert))} → {'/'.join(map(str, mtdnn))}"
                        for task, (bert, mtdnn) in PAPER_TABLE3.items()) + ".")


def differ_lines(plan: ReproducePlan, shared: list[str]) -> list[str]:
    return [
        "### Why these numbers may differ from the paper's",
        "",
        "- No MNLI, QQP or QNLI training data here: the paper's stage 2 drew most of its examples (and its RTE gain) "
        f"from MNLI, a task close to RTE; ours shares an encoder between {', '.join(shared)} only, which are small "
        "and, except RTE/MRPC, unlike each other.",
        "- A 6-layer, 384-wide MiniLM (22M parameters) instead of BERT-large (24 layers, 335M), already tuned for "
        "sentence embeddings.",
        f"- CPU budget: {plan.epochs} epoch(s) per stage (the paper: 5 for stage 2), capped SST-2, AdamW instead of "
        "Adamax, no SAN answer module, no hyper-parameter search beyond the budget probe.",
        "- Few seeds and small dev sets: the intervals above show how much that leaves undecided.",
    ]


def write_report(plan: ReproducePlan, store: ResultStore, output_dir: Path, report: Path, command: str,
                 rerun: Path | None = None) -> str:
    """The report's section and plots at the chosen budget (`output_dir/budget.json`); `rerun`: the output
    directory of a second run of the same plan to compare. Returns the summary tables."""
    choice = json.loads((output_dir / "budget.json").read_text())
    plan = plan.at(plan.budgets[choice["chosen"] - 1])
    all_rows = store.rows()
    rows = [row for row in all_rows if row.get("budget") == plan.budget_label]
    table, predictions = collect(rows), collect(rows, "predictions")
    specs, labels = resolve_tasks(list(plan.tasks)), load_labels(output_dir / "dev_labels")
    tasks = [task_name(entry) for entry in plan.tasks]
    shared, separate = [task for task in tasks if task not in plan.separate], [t for t in tasks if t in plan.separate]
    found, found_separate = (intervals(predictions, labels, specs, chosen, plan.bootstrap_resamples,
                                       plan.bootstrap_seed) for chosen in (shared, separate))
    floors = {task: majority_floor(specs[task], labels[task]) for task in tasks if task in labels}
    summary = [*summary_table(table, found, shared), "", interval_note(plan), "",
               "**Out of stage 2, as in the paper** (not in the average):", "",
               *separate_table(table, found_separate, separate, floors)]
    metrics_png, curves_png = report.parent / "reproduce.png", report.parent / "reproduce_curves.png"
    plot_scores({label: [mean_std(scores(table, arm, task)) for task in tasks] for arm, label in ARMS.items()},
                tasks, metrics_png)
    plot_curves(output_dir / "runs" / plan.budget_label / "mtdnn" / f"seed-{plan.seeds[0]}", shared, curves_png)
    text = report_header(
        "## Reproduction: single-task fine-tuning vs MT-DNN, against its controls (issues 6, 20)", command=command,
        target="reproduce", output_dir=output_dir,
        smoke=None if plan.name == "full" else f"tiny training subsets, {len(plan.seeds)} seed",
        job_time=f"{job_hours(all_rows):.2f} h of job time in all, the probe's rejected runs included (summed over "
                 f"jobs and invocations, {how_jobs_ran(all_rows)}; jobs side by side each count their own time)")
    text += [*setup_lines(plan, shared, separate), "",
             "### Summary: dev score (mean of the task's metrics ×100), mean ± std over seeds", "", *summary, "",
             "### Reading", "",
             reading(plan, found, shared, not_learnt(choice) if choice["accepted"] else [],
                     {task: len(labels[task]) for task in shared if task in labels}), "",
             *budget_lines(plan, choice), "", "### Per task", ""]
    for task, spec in specs.items():
        text += [f"#### {task} ({', '.join(spec.metrics)})", "", *task_table(table, task, spec.metrics), ""]
    text += [*differ_lines(plan, shared), "",
             f"![dev score per task and arm]({os.path.relpath(metrics_png, report.parent)})", "",
             f"![stage 2 learning curves, seed {plan.seeds[0]}]({os.path.relpath(curves_png, report.parent)})"]
    if rerun:
        other = [row for row in ResultStore(rerun / "results").rows() if row.get("budget") == plan.budget_label]
        text += ["", "### A re-run", "", *rerun_lines(table, collect(other), rerun)]
    write_section(report, "reproduce", "\n".join(text))
    return "\n".join(summary)
