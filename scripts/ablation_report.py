"""The report of scripts.ablation: its result files as the ablation table of docs/results.md, read honestly."""

from __future__ import annotations

from mtdnn.metrics import compute_metrics, task_score
from scripts.ablation_plan import ARMS, RANKING_TASK, AblationPlan, describe
from scripts.report import how_jobs_ran, report_header
from scripts.results import ResultStore
from scripts.stats import format_mean_std, mean_std


def arm_score(run: dict, task: str | list[str]) -> float:
    """A run's score on a task (the task score of its metrics), or for a list of tasks their average."""
    if isinstance(task, list):
        return sum(arm_score(run, name) for name in task) / len(task)
    return task_score(run["metrics"][task])


def majority_scores(plan: AblationPlan) -> dict[str, float]:
    """Each GLUE classification task's dev score when always predicting its most frequent dev label."""
    from collections import Counter

    import numpy as np

    from mtdnn.sources import glue_dir_from, load_split
    from mtdnn.tasks import GLUE_TASKS

    scores = {}
    for name in plan.task_names():
        task = GLUE_TASKS.get(name)
        if task is None or task.type == "regression":  # an own task; a constant has no correlation
            continue
        labels = np.asarray(load_split(task, "dev", glue_dir_from(None))["label"])[:plan.max_eval_samples]
        majority = np.full_like(labels, Counter(labels.tolist()).most_common(1)[0][0])
        scores[name] = task_score(compute_metrics(task.metrics, task.type, majority, labels))
    return scores


def scores(runs: dict[int, dict], task: str | list[str]) -> str:
    """An arm's score on a task (or the average over tasks), mean ± std over its seeds."""
    return format_mean_std([arm_score(run, task) for run in runs.values()])


def delta(runs: dict[int, dict], baseline: dict[int, dict], task: str | list[str]) -> str:
    """Arm − baseline with the same seed, mean ± std over the seeds both have."""
    mean, std = mean_std([arm_score(run, task) - arm_score(baseline[seed], task)
                          for seed, run in runs.items() if seed in baseline])
    return "–" if mean is None else f"{mean * 100:+.1f}" + (f" ± {std * 100:.1f}" if std is not None else "")


def table_lines(plan: AblationPlan, runs: dict[str, dict[int, dict]], majority: dict[str, float]) -> list[str]:
    """The ablation table (a row per arm that has results, then the majority class) and the per-task Δs."""
    tasks, baseline = plan.task_names(), runs.get("baseline", {})
    lines = ["| arm | what is on | " + " | ".join(tasks) + " | average | Δ average | updates | reload | minutes |",
             "|---|---|" + "---|" * (len(tasks) + 5)]
    for arm in [arm for arm in ARMS if arm in runs]:
        done = list(runs[arm].values())
        reload = "ok" if all(run["reload_reproduces_metrics"] for run in done) else "MISMATCH"
        minutes = sum(run["seconds"] for run in done) / len(done) / 60
        updates = "/".join(map(str, sorted({run["updates"] for run in done})))
        cells = " | ".join(scores(runs[arm], task) for task in tasks)
        lines.append(f"| {arm} | {describe(arm, plan)} | {cells} | {scores(runs[arm], tasks)} | "
                     f"{'' if arm == 'baseline' else delta(runs[arm], baseline, tasks)} | {updates} | {reload} | "
                     f"{minutes:.1f} |")
    if majority:
        cells = " | ".join(f"{majority[task] * 100:.1f}" if task in majority else "–" for task in tasks)
        lines.append(f"| *majority class* | always the most frequent dev label (reference) | {cells} | | | | | |")
    lines += ["", "Per-task Δ (arm − baseline, points):", "",
              "| arm | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    return lines + [f"| {arm} | " + " | ".join(delta(runs[arm], baseline, task) for task in tasks) + " |"
                    for arm in ARMS if arm != "baseline" and arm in runs]


def report(plan: AblationPlan, store: ResultStore, seeds: list[int], command: str,
           majority: dict[str, float] | None = None) -> str:
    """The ablation's section of docs/results.md, from the stored results of `seeds`."""
    tasks = plan.task_names()
    runs: dict[str, dict[int, dict]] = {}  # arm -> seed -> result
    for row in store.rows():
        if row["seed"] in seeds:
            runs.setdefault(row["arm"], {})[row["seed"]] = row
    rows = [run for arm in runs.values() for run in arm.values()]
    hours = sum(run.get("seconds", 0.0) for run in rows) / 3600
    smoke = (f"{plan.train_caps.get(tasks[0])} training examples per task" if plan.name == "quick" else None)
    lines = report_header("## Ablation: the multi-task toolbox (issue 7)", command=command, target="ablation",
                          output_dir=store.root.parent, smoke=smoke,
                          job_time=f"{hours:.2f} h of job time, {how_jobs_ran(rows)}")
    caps = ", ".join(f"{task} {plan.train_caps[task]}" for task in tasks if task in plan.train_caps)
    lines += [
        f"Every arm is the multi-task run (stage 2, no per-task fine-tuning) of `{plan.model}` on "
        f"{', '.join(tasks)}, trained from its config file as `mtdnn train` trains it (`mtdnn distill` for "
        "the distillation arm)"
        + (f" on random training subsets (seed {plan.subset_seed}) of {caps} examples" if caps else "") +
        f", with: max length {plan.max_seq_length}, batch {plan.batch_size}, AdamW lr {plan.learning_rate:g}, "
        f"warm-up {plan.warmup_ratio:.0%} then linear decay, {plan.epochs} epoch(s) of MT-DNN's schedule (the "
        f"sampling arms draw as many steps per epoch), seed(s) {', '.join(map(str, seeds))}. Dev metrics after the "
        "last update on "
        + (f"the first {plan.max_eval_samples} examples of each dev set" if plan.max_eval_samples
           else "the complete dev sets") + " (no checkpoint selection). Score = mean of the task's GLUE metrics "
        f"x100; the average is over the {len(tasks)} tasks. Δ is arm − baseline with the same seed (mean ± std "
        "over seeds where there are several).",
        "",
        *table_lines(plan, runs, majority or {}),
    ]
    return "\n".join([*lines, "", *reading(plan, runs, majority or {})])


def reading(plan: AblationPlan, runs: dict[str, dict[int, dict]], majority: dict[str, float]) -> list[str]:
    """How to read the table: the tasks at the floor, the seed noise, what the table can and cannot show."""
    tasks, baseline = plan.task_names(), runs.get("baseline", {})
    at_floor = [task for task in tasks if task in majority and baseline
                and max(arm_score(run, task) for run in baseline.values()) <= majority[task] + 0.02]
    floor = ([f"- At this budget the baseline has not left the majority-class level on {', '.join(at_floor)} "
              "(compare the *majority class* row): those columns cannot show a gain or a loss, and an arm that moves "
              "them has mostly moved its random draws."] if at_floor else [])
    spread = [f"{task} {format_mean_std([arm_score(run, task) for run in baseline.values()])}" for task in tasks]
    seeds_line = ("one seed: no spread is measured, and a Δ of a few points is not evidence for or against a "
                  "mechanism; run `--seeds 1,2,3`" if len(baseline) < 2 else
                  f"{len(baseline)} seeds of the baseline: its own spread (mean ± std over seeds) is "
                  f"{', '.join(spread)}; a mean Δ smaller than its ± is within seed noise, and is not evidence for "
                  "or against a mechanism")
    caps = [plan.train_caps[task] for task in tasks if task in plan.train_caps]
    size = (f"{min(caps)}{f' to {max(caps)}' if max(caps) > min(caps) else ''} training examples per task, "
            if caps else "")
    return [
        "How to read this table honestly:",
        "",
        *floor,
        f"- This is a short budget ({size}{plan.epochs} epoch(s)) with {seeds_line}.",
        "- The papers' gains (SAN, SMART, MT-DNN-KD, ERNIE 2.0) were measured with BERT-base/large, full "
        "training sets and tuned hyper-parameters; this table checks that each mechanism runs end to end on "
        "real data, saves, reloads and evaluates (the `reload` column: `mtdnn evaluate` on the saved checkpoint "
        f"reproduces the logged {tasks[0]} metrics), and shows its cost (`minutes`, `updates`).",
        *consistent_lines(runs, baseline, tasks, at_floor),
        "- `main_task` trains fewer updates (the other tasks' batches are capped; see `updates`); `continual` "
        "spreads each task's batches over its stages; the other sampling arms change the task mix, not the number "
        "of steps.",
        *ranking_lines(runs.get("ranking", {})),
    ]


def consistent(runs: dict[int, dict], baseline: dict[int, dict], task: str) -> float | None:
    """The arm's mean Δ on a task where it is a screening-level effect: the same sign on every seed (at least two),
    at least 1 point, and at least twice its std over seeds; otherwise None."""
    deltas = [arm_score(run, task) - arm_score(baseline[seed], task) for seed, run in runs.items() if seed in baseline]
    mean, std = mean_std(deltas)
    same_sign = all(d > 0 for d in deltas) or all(d < 0 for d in deltas)
    return mean if std is not None and same_sign and abs(mean) >= max(0.01, 2 * std) else None


def consistent_lines(runs: dict[str, dict[int, dict]], baseline: dict[int, dict], tasks: list[str],
                     at_floor: list[str]) -> list[str]:
    """The Δs that hold on every seed, named; everything else is left to the seed noise."""
    if len(baseline) < 2:
        return []
    found = [f"{arm} on {task} {mean * 100:+.1f}" + (" (a task at the majority-class level)" if task in at_floor
                                                      else "")
             for arm in ARMS if arm != "baseline" and arm in runs
             for task in tasks if (mean := consistent(runs[arm], baseline, task)) is not None]
    return ["- Paired by seed, the Δs with the same sign on every seed, at least 1 point and at least twice their "
            "std: " + ("; ".join(found) if found else "none") + ". With so few seeds this is a screen, not a "
            "significance test; every other Δ is within seed noise."]


def ranking_lines(runs: dict[int, dict]) -> list[str]:
    """The ranking arm's own task, which the table's columns leave out."""
    if not runs:
        return ["- Relevance ranking is the `ranking` arm (`--arms ranking`), not run here: QNLI has no training set "
                "here, so that arm trains on part of QNLI's dev questions."]
    run = next(iter(runs.values()))
    accuracy = format_mean_std([r["metrics"][RANKING_TASK]["accuracy"] for r in runs.values()])
    return [f"- The `ranking` arm adds QNLI as the paper's listwise ranking task: QNLI has no training set here, so "
            f"its dev questions with one entailing sentence among two or more candidates were split at random "
            f"(seed 0) into {run['ranking_train_questions']} training questions and {run['ranking_questions']} scored "
            "ones. "
            f"Accuracy (the positive ranked first): {accuracy}, where ranking at random scores "
            f"{run['ranking_chance'] * 100:.1f}. Its other columns show what one more task did to the others."]
