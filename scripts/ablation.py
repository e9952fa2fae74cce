"""Ablation of the multi-task toolbox (issue 7): each mechanism on vs off, MiniLM on small subsets of the GLUE tasks here.

Every arm is MT-DNN's multi-task run (stage 2) on mrpc, rte, stsb, cola and sst2 with one mechanism switched on,
run through the command line (`mtdnn train`, `mtdnn distill`) on the same random training subsets (unequal
sizes, so that the sampling strategies differ), seeds and budget. After each run, `mtdnn evaluate` reloads its
final checkpoint and must reproduce the logged metrics of the first task. The `ranking` arm adds QNLI as a
listwise ranking task, trained on 700 of QNLI's dev questions and scored on the others (QNLI has no training set
here). One JSON file per finished (arm, seed) under the output directory: a re-run skips finished arms and
resumes an interrupted one; independent arms run side by side (`--workers`), the distillation arm once its
teachers have finished. Writes its own section of docs/results.md (between `<!-- ablation:begin -->` and
`<!-- ablation:end -->`).

    python scripts/ablation.py                   # the reproduction's seeds 1, 2, 3 (~2.3 hours on 2 idle CPU cores)
    python scripts/ablation.py --seeds 1         # one seed, a third of the time
    python scripts/ablation.py --arms baseline,smart
    python scripts/ablation.py --quick           # a smoke run (a few minutes): 64 examples per task
    python scripts/ablation.py --report-only
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import experiment
from experiment import ResultStore, format_mean_std, mean_std, task_name

logger = logging.getLogger("ablation")

TASKS = ("mrpc", "rte", "stsb", "cola", "sst2")
SEEDS = (1, 2, 3)
"""The reproduction's seeds."""


@dataclass(frozen=True, kw_only=True)
class Budget(experiment.Recipe):
    """The settings every arm and seed shares, recorded as the output directory's plan.json (seeds and arms are a
    selection within it: results of other seeds and arms stay valid)."""

    name: str
    tasks: tuple = TASKS
    """Config entries (GLUE names or own task mappings); the first is the main task of `main_task`, the reloaded
    task, and the last stage of `continual` (whose stages add the tasks from last to first)."""
    train_caps: dict[str, int] = field(default_factory=dict)
    """Task -> training examples kept (a random subset by `subset_seed`); absent: all."""
    subset_seed: int = 0
    ranking_train_questions: int = 700
    """QNLI has no training set here: the ranking arm trains on this many of its dev questions (seed 0)."""

    def task_names(self) -> list[str]:
        return [task_name(entry) for entry in self.tasks]


# Budget, measured here (2-core EPYC): the five capped tasks are 6,200 examples, 389 updates of 16 at lr 1e-4; with
# a second job beside it (3 processes on 2 cores) the baseline trained in ~7 minutes and reached mrpc 72.1/82.8,
# stsb 74.1/74.9, sst2 77.8, while cola stayed at MCC 0 and rte at 47.3. Twelve arms x 3 seeds (SMART ~2.5x the
# baseline's time, soft sharing and distillation ~2x, ranking +~10 min for QNLI) are ~2.3 hours as two
# single-threaded jobs side by side. Budgets tried first, on rte 600, mrpc 900, stsb 1200, cola 1600 for 270 updates
# of 16 (lr 1e-4: stsb 0.43, the rest at the majority class; lr 2e-4: stsb 0.23), and the first table's 95 updates of
# 32, left the baseline at the majority class on three of four tasks: no column could show a mechanism's effect.
# SST-2, capped, is in the mix because it learns within the budget; RTE, with few examples, is kept because the
# paper's gains were largest there.
FULL = Budget(name="full", epochs=1, batch_size=16, learning_rate=1e-4,
              train_caps={"mrpc": 900, "rte": 300, "stsb": 1500, "cola": 2000, "sst2": 1500})
QUICK = Budget(name="quick", epochs=1, batch_size=16, learning_rate=1e-4, train_caps={task: 64 for task in TASKS},
               max_eval_samples=128, ranking_train_questions=64)

TEACHERS = ("baseline", "san", "temperature")
"""The arms whose final checkpoints (same seed) are the distillation arm's teacher ensemble."""

ARMS: dict[str, str] = {
    "baseline": "MT-DNN: one shared encoder, linear heads, proportional schedule",
    "san": "SAN answer module (K=5) on the pair classification tasks ({pairs})",
    "uniform": "sampling: uniform over tasks",
    "temperature": "sampling: temperature T=2",
    "annealed": "sampling: annealed from T=1 to T=5",
    "main_task": "sampling: main task {main}, others capped at 2x its batches",
    "continual": "ERNIE 2.0 continual stages: {stages}",
    "smart": "SMART adversarial regularisation, alpha=1, 1 ascent step",
    "task_embeddings": "ERNIE 2.0 task embeddings",
    "soft_sharing": "soft sharing: one encoder per task, lambda=1e-3",
    "distillation": "MT-DNN-KD: soft targets of " + "+".join(TEACHERS) + ", weight 0.5, T=1",
    "ranking": "+ QNLI as listwise ranking, a 5th task (trained on {questions} QNLI dev questions, scored on the rest)",
}
"""Arm -> what is on (the placeholders name the budget's tasks)."""
RANKING_TASK = "qnli_rank"


def pair_tasks(budget: Budget) -> list[str]:
    """The budget's pair classification tasks: where the `san` arm puts its answer module."""
    from mtdnn.tasks import resolve_tasks

    return [name for name, task in resolve_tasks(list(budget.tasks)).items() if task.type == "pair_classification"]


def continual_stages(budget: Budget) -> list[list[str]]:
    """ERNIE 2.0's schedule over the budget's tasks: one task added per stage, from the last to the first."""
    return [[name] for name in reversed(budget.task_names())]


def describe(arm: str, budget: Budget) -> str:
    return ARMS[arm].format(pairs=", ".join(pair_tasks(budget)) or "none", main=budget.task_names()[0],
                            stages=" → ".join(("+" if i else "") + stage[0]
                                              for i, stage in enumerate(continual_stages(budget))),
                            questions=budget.ranking_train_questions)


def arm_patch(arm: str, budget: Budget) -> dict:
    """The config keys that switch the arm's mechanism on (the `san` and `ranking` arms change the task list)."""
    sampling = {"uniform": {"strategy": "uniform"},
                "temperature": {"strategy": "temperature", "temperature": 2.0},
                "annealed": {"strategy": "annealed_temperature", "temperature": 5.0},
                "main_task": {"strategy": "main_task_ratio", "main_task": budget.task_names()[0], "ratio": 2.0},
                "continual": {"strategy": "continual", "stages": continual_stages(budget)}}
    if arm in sampling:
        return {"train": {"sampling": sampling[arm]}}
    return {"smart": {"train": {"adversarial": {"weight": 1.0}}},
            "task_embeddings": {"model": {"task_embeddings": True}},
            "soft_sharing": {"model": {"sharing": "soft"}},
            "distillation": {"train": {"distillation": {"weight": 0.5, "temperature": 1.0}}}}.get(arm, {})


def merge(base: dict, patch: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        merged[key] = merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def ranking_entry(directory: Path, train_questions: int) -> dict:
    """An own ranking task in the generic jsonl format (a question, its candidate sentences, the positive's
    position), made of QNLI's dev questions grouped as `qnli_ranking` groups them, split at random by question."""
    import numpy as np

    from mtdnn.sources import glue_dir_from, load_split
    from mtdnn.tasks import GLUE_TASKS

    files = {split: Path(directory) / f"{RANKING_TASK}-{split}-q{train_questions}.jsonl" for split in ("train", "dev")}
    if not all(path.is_file() for path in files.values()):
        groups = load_split(GLUE_TASKS["qnli_ranking"], "dev", glue_dir_from(None))
        order = np.random.default_rng(0).permutation(len(groups["idx"]))
        for split, rows in (("train", order[:train_questions]), ("dev", order[train_questions:])):
            files[split].parent.mkdir(parents=True, exist_ok=True)
            staging = files[split].with_name(f".{files[split].name}.tmp")
            staging.write_text("".join(json.dumps({"idx": int(groups["idx"][row]), "question": groups["text_a"][row],
                                                   "sentence": groups["candidates"][row],
                                                   "label": groups["label"][row]}) + "\n" for row in sorted(rows)))
            staging.replace(files[split])
    return {"name": RANKING_TASK, "type": "ranking", "text_columns": ["question", "sentence"],
            "data_files": {split: str(path.resolve()) for split, path in files.items()}}


def task_entries(budget: Budget, arms: list[str], directory: Path) -> dict[str, str | dict]:
    """Each task's config entry, pointing at its random training subset (and the ranking arm's own task)."""
    entries = {}
    for entry in budget.tasks:
        cap = budget.train_caps.get(task_name(entry))
        entries[task_name(entry)] = experiment.write_subset(entry, cap, budget.subset_seed, directory) if cap else entry
    if "ranking" in arms:
        entries[RANKING_TASK] = ranking_entry(directory, budget.ranking_train_questions)
    return entries


def arm_config(arm: str, seed: int, budget: Budget, entries: dict, run_dir: Path) -> dict:
    san = pair_tasks(budget) if arm == "san" else []
    tasks = [{**entries[name], "answer_module": "san"} if name in san else entries[name]
             for name in budget.task_names()]
    if arm == "ranking":
        tasks.append(entries[RANKING_TASK])
    shared = budget.settings()
    shared["train"].update(save_best=False, keep_checkpoints=1, seed=seed)
    return merge({"model": {"name_or_path": budget.model}, "tasks": tasks, **shared, "output_dir": str(run_dir)},
                 arm_patch(arm, budget))


def mtdnn(*args: str) -> str:
    """Run the `mtdnn` command line in this process (no interpreter and library start-up per call); its stdout."""
    from mtdnn.cli import main as command_line

    logger.info("$ mtdnn %s", shlex.join(args))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = command_line(list(args))
    if status != 0:
        raise RuntimeError(f"`mtdnn {shlex.join(args)}` failed with status {status} (its message is above)")
    return output.getvalue()


def run_dir(output_dir: Path, arm: str, seed: int) -> Path:
    return output_dir / "runs" / f"{arm}-seed{seed}"


def train_arm(arm: str, seed: int, budget: Budget, entries: dict, output_dir: Path) -> dict:
    """Train the arm through the command line, reload its final checkpoint with `mtdnn evaluate`; its result row."""
    directory = run_dir(output_dir, arm, seed)
    config_path = output_dir / "configs" / f"{arm}-seed{seed}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(arm_config(arm, seed, budget, entries, directory), sort_keys=False))
    if arm == "distillation":
        teachers = [run_dir(output_dir, name, seed) / "last" for name in TEACHERS]
        missing = [str(t) for t in teachers if not t.exists()]
        if missing:
            raise RuntimeError(f"the distillation arm's teacher checkpoints are gone ({missing[0]}); delete the "
                               f"teachers' result files under {output_dir / 'results'} to train them again.")
        mtdnn("distill", str(config_path), "--teachers", ",".join(str(t.resolve()) for t in teachers), "--resume")
    else:
        mtdnn("train", str(config_path), "--resume")
    metrics = experiment.final_metrics(directory)
    first = budget.task_names()[0]
    reloaded = json.loads(mtdnn("evaluate", str(directory / "last"), "--tasks", first))[first]
    reload_ok = all(abs(reloaded[name] - metrics[first][name]) < 1e-6 for name in reloaded)
    steps = max(row["step"] for row in experiment.eval_rows(directory))
    result = {"metrics": metrics, "reload_reproduces_metrics": reload_ok, "updates": steps}
    if RANKING_TASK in metrics:  # what ranking the candidates at random scores: the mean of 1 / candidates
        dev = [json.loads(line) for line in Path(entries[RANKING_TASK]["data_files"]["dev"]).read_text().splitlines()]
        if budget.max_eval_samples:
            dev = dev[:budget.max_eval_samples]
        result["ranking_chance"] = sum(1 / len(row["sentence"]) for row in dev) / len(dev)
        result["ranking_questions"] = len(dev)
        result["ranking_train_questions"] = budget.ranking_train_questions
    return result


def run_job(arm: str, seed: int, budget: Budget, entries: dict, output_dir: Path, keep: bool) -> tuple:
    """One (arm, seed), unless finished; its checkpoints go afterwards unless `keep` (a teacher still needed).
    Distillation removes its teachers' checkpoints once it has finished."""
    store = ResultStore(output_dir / "results")
    store.run_once((arm, f"seed-{seed}"), lambda: train_arm(arm, seed, budget, entries, output_dir), arm=arm,
                   seed=seed)
    if not keep:
        experiment.remove_checkpoints(run_dir(output_dir, arm, seed))
    if arm == "distillation":
        for name in TEACHERS:
            experiment.remove_checkpoints(run_dir(output_dir, name, seed))
    return arm, seed


def run_all(budget: Budget, seeds: list[int], arms: list[str], output_dir: Path, workers: int = 1) -> ResultStore:
    """Every (arm, seed) not finished yet, `workers` at a time: the teachers first, the distillation arm of a seed
    once its teachers are done. A job that fails stops the run; every finished job's result stays stored."""
    store = ResultStore(output_dir / "results")
    entries = task_entries(budget, arms, output_dir / "data")  # written once here, before any worker reads them
    order = [arm for arm in TEACHERS if arm in arms] + [arm for arm in arms if arm not in TEACHERS]
    later = [arm for arm in order if arm == "distillation"]
    teachers: dict[int, list] = {}
    with experiment.job_pool(workers) as pool:
        for arm in [arm for arm in order if arm not in later]:
            for seed in seeds:
                keep = arm in TEACHERS and "distillation" in arms and store.load("distillation", f"seed-{seed}") is None
                future = pool.submit(run_job, arm, seed, budget, entries, output_dir, keep)
                if keep:
                    teachers.setdefault(seed, []).append(future)
        for arm in later:
            for seed in seeds:
                for future in teachers.get(seed, []):
                    pool.result(future)
                pool.submit(run_job, arm, seed, budget, entries, output_dir, False)
    return store


def task_score(run: dict, task: str | list[str]) -> float:
    """A task's score (mean of its metrics), or for a list of tasks their average."""
    if isinstance(task, list):
        return sum(task_score(run, name) for name in task) / len(task)
    metrics = run["metrics"][task]
    return sum(metrics.values()) / len(metrics)


def majority_scores(budget: Budget) -> dict[str, float | None]:
    """Each GLUE task's dev score when always predicting its most frequent dev label (None: regression)."""
    from collections import Counter

    import numpy as np

    from mtdnn.metrics import compute_metrics
    from mtdnn.sources import glue_dir_from, load_split
    from mtdnn.tasks import GLUE_TASKS

    scores = {}
    for name in budget.task_names():
        task = GLUE_TASKS.get(name)
        if task is None or task.type == "regression":  # an own task; a constant has no correlation
            continue
        labels = np.asarray(load_split(task, "dev", glue_dir_from(None))["label"])[:budget.max_eval_samples]
        majority = np.full_like(labels, Counter(labels.tolist()).most_common(1)[0][0])
        metrics = compute_metrics(task.metrics, task.type, majority, labels)
        scores[name] = sum(metrics.values()) / len(metrics)
    return scores


def report(budget: Budget, store: ResultStore, seeds: list[int], command: str,
           majority: dict[str, float | None] | None = None) -> str:
    tasks = budget.task_names()
    runs: dict[str, dict[int, dict]] = {}  # arm -> seed -> result
    for row in store.rows():
        if row["seed"] in seeds:
            runs.setdefault(row["arm"], {})[row["seed"]] = row

    def scores(arm: str, task: str | list[str]) -> str:
        return format_mean_std([task_score(run, task) for run in runs[arm].values()])

    def delta(arm: str, task: str | list[str]) -> str:
        paired = [task_score(run, task) - task_score(runs["baseline"][seed], task)
                  for seed, run in runs[arm].items() if seed in runs.get("baseline", {})]
        mean, std = mean_std(paired)
        return "–" if mean is None else f"{mean * 100:+.1f}" + (f" ± {std * 100:.1f}" if std is not None else "")

    hours = sum(run.get("seconds", 0.0) for arm in runs.values() for run in arm.values()) / 3600
    rows = [run for arm in runs.values() for run in arm.values()]
    smoke = (f"{budget.train_caps.get(tasks[0])} training examples per task" if budget.name == "quick" else None)
    lines = experiment.report_header("## Ablation: the multi-task toolbox (issue 7)", command=command,
                                     target="ablation", output_dir=store.root.parent, smoke=smoke,
                                     job_time=f"{hours:.2f} h of job time, {experiment.how_jobs_ran(rows)}")
    caps = ", ".join(f"{task} {budget.train_caps[task]}" for task in tasks if task in budget.train_caps)
    lines += [
        f"Every arm is the multi-task run (stage 2, no per-task fine-tuning) of `{budget.model}` on "
        f"{', '.join(tasks)}, trained through `mtdnn train` (`mtdnn distill` for the distillation arm)"
        + (f" on random training subsets (seed {budget.subset_seed}) of {caps} examples" if caps else "") +
        f", with: max length {budget.max_seq_length}, batch {budget.batch_size}, AdamW lr {budget.learning_rate:g}, "
        f"warm-up {budget.warmup_ratio:.0%} then linear decay, {budget.epochs} epoch(s) of MT-DNN's schedule (the "
        f"sampling arms draw as many steps per epoch), seed(s) {', '.join(map(str, seeds))}. Dev metrics after the "
        "last update on "
        + (f"the first {budget.max_eval_samples} examples of each dev set" if budget.max_eval_samples
           else "the complete dev sets") + " (no checkpoint selection). Score = mean of the task's GLUE metrics "
        f"x100; the average is over the {len(tasks)} tasks. Δ is arm − baseline with the same seed (mean ± std "
        "over seeds where there are several).",
        "",
        "| arm | what is on | " + " | ".join(tasks) + " | average | Δ average | updates | reload | minutes |",
        "|---|---|" + "---|" * (len(tasks) + 5),
    ]
    for arm in ARMS:
        if arm not in runs:
            continue
        done = list(runs[arm].values())
        reload = "ok" if all(run["reload_reproduces_metrics"] for run in done) else "MISMATCH"
        minutes = sum(run["seconds"] for run in done) / len(done) / 60
        updates = "/".join(sorted({str(run["updates"]) for run in done}))
        lines.append(f"| {arm} | {describe(arm, budget)} | {' | '.join(scores(arm, task) for task in tasks)} | "
                     f"{scores(arm, tasks)} | {'' if arm == 'baseline' else delta(arm, tasks)} | {updates} | "
                     f"{reload} | {minutes:.1f} |")
    if majority:
        cells = [f"{majority[task] * 100:.1f}" if task in majority else "–" for task in tasks]
        lines.append(f"| *majority class* | always the most frequent dev label (reference) | {' | '.join(cells)} "
                     "| | | | | |")
    lines += ["", "Per-task Δ (arm − baseline, points):", "",
              "| arm | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines += [f"| {arm} | " + " | ".join(delta(arm, task) for task in tasks) + " |"
              for arm in ARMS if arm != "baseline" and arm in runs]
    return "\n".join([*lines, "", *reading(budget, seeds, runs, majority or {})])


def reading(budget: Budget, seeds: list[int], runs: dict[str, dict[int, dict]],
            majority: dict[str, float | None]) -> list[str]:
    tasks, baseline = budget.task_names(), runs.get("baseline", {})
    at_floor = [task for task in tasks if task in majority and baseline
                and max(task_score(run, task) for run in baseline.values()) <= majority[task] + 0.02]
    floor = ([f"- At this budget the baseline has not left the majority-class level on {', '.join(at_floor)} "
              "(compare the *majority class* row): those columns cannot show a gain or a loss, and an arm that moves "
              "them has mostly moved its random draws."] if at_floor else [])
    spread = [f"{task} {format_mean_std([task_score(run, task) for run in baseline.values()])}" for task in tasks]
    seeds_line = ("one seed: no spread is measured, and a Δ of a few points is not evidence for or against a "
                  "mechanism; run `--seeds 1,2,3`" if len(seeds) == 1 else
                  f"{len(seeds)} seeds: the baseline's own spread (mean ± std over seeds) is {', '.join(spread)}; a "
                  "mean Δ smaller than its ± is within seed noise, and is not evidence for or against a mechanism")
    caps = [budget.train_caps[task] for task in tasks if task in budget.train_caps]
    size = f"{min(caps)} to {max(caps)} training examples per task, " if caps else ""
    return [
        "How to read this table honestly:",
        "",
        *floor,
        f"- This is a quick budget ({size}{budget.epochs} epoch(s)) with {seeds_line}.",
        "- The papers' gains (SAN, SMART, MT-DNN-KD, ERNIE 2.0) were measured with BERT-base/large, full "
        "training sets and tuned hyper-parameters; this table checks that each mechanism runs end to end on "
        "real data, saves, reloads and evaluates (the `reload` column: `mtdnn evaluate` on the saved checkpoint "
        f"reproduces the logged {tasks[0]} metrics), and shows its cost (`minutes`, `updates`).",
        "- `main_task` trains fewer updates (the other tasks' batches are capped; see `updates`); `continual` "
        "spreads each task's batches over its stages; the other sampling arms change the task mix, not the number "
        "of steps.",
        *ranking_lines(runs.get("ranking", {})),
    ]


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
            f"{run['ranking_chance'] * 100:.1f}. Its other columns show what a fifth task did to the others."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_run_arguments(parser, "ablation", quick="64 training examples per task, one seed")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds (default: 1,2,3; quick: 1)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    budget = QUICK if args.quick else FULL
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else ([1] if args.quick else list(SEEDS))
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    arms = [arm for arm in args.arms.split(",") if arm]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}; arms: {', '.join(ARMS)}")
    if "distillation" in arms and not set(TEACHERS) <= set(arms):
        parser.error(f"the distillation arm needs its teachers' arms too: {', '.join(TEACHERS)}")
    output_dir = args.output_dir or Path("runs/ablation" + ("-quick" if args.quick else ""))
    experiment.claim_output_dir(output_dir, budget)
    started = time.perf_counter()
    workers = args.workers or experiment.default_workers()
    store = experiment.run_or_load(output_dir, "ablation", None if args.report_only
                                   else lambda: run_all(budget, seeds, arms, output_dir, workers))
    command = " ".join(["python scripts/ablation.py", *map(shlex.quote, sys.argv[1:])])
    majority = majority_scores(budget)
    experiment.write_section(args.report, "ablation", report(budget, store, seeds, command, majority))
    logger.info("wrote %s (%.1f min)", args.report, (time.perf_counter() - started) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
