"""Ablation of the multi-task toolbox (issue 7): each mechanism on vs off, MiniLM on small GLUE subsets here.

Every arm is MT-DNN's multi-task run (stage 2) on mrpc, rte, stsb, cola and sst2 with one mechanism switched on,
trained from its own config file (written under the output directory) as `mtdnn train` trains it (`mtdnn distill`
for the distillation arm), on the same random training subsets (unequal sizes, so that the sampling strategies
differ), seeds and budget. After each run, `mtdnn evaluate` reloads its final checkpoint and must reproduce the
logged metrics of the first task. The `ranking` arm adds QNLI as a listwise ranking task, trained on 700 of QNLI's
dev questions and scored on the others (QNLI has no training set here). One JSON file per finished (arm, seed)
under the output directory: a re-run skips finished arms and resumes an interrupted one; independent arms run
side by side (`--workers`), the distillation arm once its teachers have finished. Writes its own section of
docs/results.md (between `<!-- ablation:begin -->` and `<!-- ablation:end -->`).

    python -m scripts.ablation                   # the reproduction's seeds 1, 2, 3 (`make ablation`)
    python -m scripts.ablation --seeds 1         # one seed: a third of the jobs
    python -m scripts.ablation --arms baseline,smart
    python -m scripts.ablation --quick           # a smoke run: 64 examples per task
    python -m scripts.ablation --report-only
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
from pathlib import Path

import yaml

from mtdnn.config import load_config
from mtdnn.distillation import distill
from mtdnn.training import train
from scripts import jobs
from scripts.ablation_plan import (ARMS, FULL, QUICK, RANKING_TASK, SEEDS, TEACHERS, AblationPlan, continual_stages,
                                   pair_tasks)
from scripts.ablation_report import majority_scores, report
from scripts.plan import claim_output_dir, task_name
from scripts.report import driver_command, write_section
from scripts.results import ResultStore, run_or_load
from scripts.subsets import write_subset

logger = logging.getLogger("ablation")


def arm_patch(arm: str, plan: AblationPlan) -> dict:
    """The config keys that switch the arm's mechanism on (the `san` and `ranking` arms change the task list)."""
    sampling = {"uniform": {"strategy": "uniform"},
                "temperature": {"strategy": "temperature", "temperature": 2.0},
                "annealed": {"strategy": "annealed_temperature", "temperature": 5.0},
                "main_task": {"strategy": "main_task_ratio", "main_task": plan.task_names()[0], "ratio": 2.0},
                "continual": {"strategy": "continual", "stages": continual_stages(plan)}}
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


def task_entries(plan: AblationPlan, arms: list[str], directory: Path) -> dict[str, str | dict]:
    """Each task's config entry, pointing at its random training subset (and the ranking arm's own task)."""
    entries = {}
    for entry in plan.tasks:
        cap = plan.train_caps.get(task_name(entry))
        entries[task_name(entry)] = write_subset(entry, cap, plan.subset_seed, directory) if cap else entry
    if "ranking" in arms:
        entries[RANKING_TASK] = ranking_entry(directory, plan.ranking_train_questions)
    return entries


def arm_config(arm: str, seed: int, plan: AblationPlan, entries: dict, run_dir: Path) -> dict:
    san = pair_tasks(plan) if arm == "san" else []
    tasks = [{**entries[name], "answer_module": "san"} if name in san else entries[name]
             for name in plan.task_names()]
    if arm == "ranking":
        tasks.append(entries[RANKING_TASK])
    shared = plan.settings()
    shared["train"].update(save_best=False, keep_checkpoints=1, seed=seed)
    return merge({"model": {"name_or_path": plan.model}, "tasks": tasks, **shared, "output_dir": str(run_dir)},
                 arm_patch(arm, plan))


def evaluate_command(checkpoint: Path, task: str) -> dict[str, float]:
    """`mtdnn evaluate CHECKPOINT --tasks TASK`, as a user reloads a run, in this process: the task's metrics."""
    from mtdnn.cli import main as command_line

    args = ["evaluate", str(checkpoint), "--tasks", task]
    logger.info("$ mtdnn %s", shlex.join(args))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = command_line(args)
    if status != 0:
        raise RuntimeError(f"`mtdnn {shlex.join(args)}` failed with status {status} (its message is above)")
    return json.loads(output.getvalue())[task]


def run_dir(output_dir: Path, arm: str, seed: int) -> Path:
    return output_dir / "runs" / f"{arm}-seed{seed}"


def train_arm(arm: str, seed: int, plan: AblationPlan, entries: dict, output_dir: Path) -> dict:
    """Train the arm from its config file, reload its final checkpoint with `mtdnn evaluate`; its result row."""
    directory = run_dir(output_dir, arm, seed)
    config_path = output_dir / "configs" / f"{arm}-seed{seed}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(arm_config(arm, seed, plan, entries, directory), sort_keys=False))
    if arm == "distillation":
        teachers = [run_dir(output_dir, name, seed) / "last" for name in TEACHERS]
        missing = [str(t) for t in teachers if not t.exists()]
        if missing:
            raise RuntimeError(f"the distillation arm's teacher checkpoints are gone ({missing[0]}); delete the "
                               f"teachers' result files under {output_dir / 'results'} to train them again.")
        jobs.run_stage(distill, load_config(config_path), [str(t.resolve()) for t in teachers])
    else:
        jobs.run_stage(train, load_config(config_path))
    metrics = jobs.final_metrics(directory)
    first = plan.task_names()[0]
    reloaded = evaluate_command(directory / "last", first)
    reload_ok = all(abs(reloaded[name] - metrics[first][name]) < 1e-6 for name in reloaded)
    steps = max(row["step"] for row in jobs.eval_rows(directory))
    result = {"metrics": metrics, "reload_reproduces_metrics": reload_ok, "updates": steps}
    if RANKING_TASK in metrics:  # what ranking the candidates at random scores: the mean of 1 / candidates
        dev = [json.loads(line) for line in Path(entries[RANKING_TASK]["data_files"]["dev"]).read_text().splitlines()]
        if plan.max_eval_samples:
            dev = dev[:plan.max_eval_samples]
        result["ranking_chance"] = sum(1 / len(row["sentence"]) for row in dev) / len(dev)
        result["ranking_questions"] = len(dev)
        result["ranking_train_questions"] = plan.ranking_train_questions
    return result


def run_job(arm: str, seed: int, plan: AblationPlan, entries: dict, output_dir: Path, keep: bool) -> None:
    """One (arm, seed), unless finished; its checkpoints go afterwards unless `keep` (a teacher still needed).
    Distillation removes its teachers' checkpoints once it has finished."""
    store = ResultStore(output_dir / "results")
    store.run_once((arm, f"seed-{seed}"), lambda: train_arm(arm, seed, plan, entries, output_dir), arm=arm,
                   seed=seed)
    if not keep:
        jobs.remove_checkpoints(run_dir(output_dir, arm, seed))
    if arm == "distillation":
        for name in TEACHERS:
            jobs.remove_checkpoints(run_dir(output_dir, name, seed))


def run_all(plan: AblationPlan, seeds: list[int], arms: list[str], output_dir: Path, workers: int = 1) -> ResultStore:
    """Every (arm, seed) not finished yet, `workers` at a time, seed by seed: the teachers first, the distillation
    arm once they are done. A job that fails stops the run; every finished job's result stays stored."""
    store = ResultStore(output_dir / "results")
    entries = task_entries(plan, arms, output_dir / "data")  # written once here, before any worker reads them
    order = [arm for arm in TEACHERS if arm in arms] + [arm for arm in arms if arm not in TEACHERS]
    with jobs.job_pool(workers) as pool:
        for seed in seeds:
            # a teacher keeps its checkpoints while a distillation of its seed may still need them, in this
            # invocation or in an interrupted earlier one
            distilling = store.load("distillation", f"seed-{seed}") is None and (
                "distillation" in arms or run_dir(output_dir, "distillation", seed).exists())
            teachers = []
            for arm in order:
                if arm == "distillation":
                    for future in teachers:
                        pool.result(future)
                keep = arm in TEACHERS and distilling
                future = pool.submit(run_job, arm, seed, plan, entries, output_dir, keep)
                if keep:
                    teachers.append(future)
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs.add_run_arguments(parser, "ablation", quick="64 training examples per task, one seed")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds (default: 1,2,3; quick: 1)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plan = QUICK if args.quick else FULL
    try:
        seeds = (list(dict.fromkeys(int(seed) for seed in args.seeds.split(","))) if args.seeds
                 else [1] if args.quick else list(SEEDS))
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    arms = list(dict.fromkeys(arm for arm in args.arms.split(",") if arm))  # a repeated arm would train twice at once
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        parser.error(f"unknown arm {unknown[0]!r}; arms: {', '.join(ARMS)}")
    if "distillation" in arms and not set(TEACHERS) <= set(arms):
        parser.error(f"the distillation arm needs its teachers' arms too: {', '.join(TEACHERS)}")
    output_dir = args.output_dir or Path("runs/ablation" + ("-quick" if args.quick else ""))
    claim_output_dir(output_dir, plan)
    started = time.perf_counter()
    workers = args.workers or jobs.default_workers()
    store = run_or_load(output_dir, "ablation", None if args.report_only
                        else lambda: run_all(plan, seeds, arms, output_dir, workers))
    command = driver_command("ablation", sys.argv[1:])
    write_section(args.report, "ablation", report(plan, store, seeds, command, majority_scores(plan)))
    logger.info("wrote %s (%.1f min)", args.report, (time.perf_counter() - started) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
