"""Reproduction of MT-DNN's central claim (issue 6) on the GLUE data here, with the MiniLM encoder.

Arms, each with the same hyper-parameters: (1) single-task fine-tuning with mtdnn, (1') the same through
`transformers.Trainer`, (2) MT-DNN stage 2 (multi-task) alone, (3) stage 2 then stage 3 (per-task fine-tuning).
Every (arm, task, seed) result is one JSON file under the output directory: a re-run skips finished jobs and
resumes interrupted training from its last checkpoint. Writes its section of docs/results.md and two plots.

    python -m scripts.reproduce            # the full run (`make reproduce`)
    python -m scripts.reproduce --quick    # a smoke run: 64 examples per task, one seed
    python -m scripts.reproduce --report-only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from mtdnn.finetuning import finetune
from mtdnn.training import train
from scripts import jobs
from scripts.plan import claim_output_dir, described, task_name
from scripts.report import driver_command
from scripts.reproduce_plan import FULL, QUICK, ReproducePlan
from scripts.reproduce_report import write_report
from scripts.results import ResultStore, run_or_load
from scripts.subsets import write_subset

logger = logging.getLogger("reproduce")


def task_entries(plan: ReproducePlan, directory: Path) -> dict[str, str | dict]:
    """Each task's config entry: as in the plan, or a mapping pointing at a random training subset."""
    entries = {}
    for entry in plan.tasks:
        name = task_name(entry)
        cap = plan.train_caps.get(name)
        entries[name] = write_subset(entry, cap, plan.subset_seed, directory) if cap else entry
    return entries


def run_single(plan: ReproducePlan, entry, seed: int, run_dir: Path) -> dict:
    jobs.run_stage(train, jobs.mtdnn_config([entry], run_dir, seed, plan.settings(), plan.model))
    metrics = jobs.final_metrics(run_dir)
    jobs.remove_checkpoints(run_dir)
    return {"metrics": next(iter(metrics.values()))}


def stage2(plan: ReproducePlan, entries: dict, seed: int, run_dir: Path) -> Path:
    """The multi-task run of `seed`: trained, resumed, or (finished already) only loaded; its final checkpoint."""
    from mtdnn.data import load_task_data  # batches per epoch, to place the mid-epoch evaluations
    from mtdnn.pretrained import load_tokenizer
    from mtdnn.tasks import resolve_tasks

    config = jobs.mtdnn_config(list(entries.values()), run_dir, seed, plan.settings(), plan.model)
    tokenizer = load_tokenizer(plan.model)
    batches = sum(-(-len(load_task_data(task, "train", tokenizer, config.data)) // plan.batch_size)
                  for task in resolve_tasks(config.tasks).values())
    config.train.eval_every_steps = max(1, batches // plan.stage2_evals_per_epoch)
    config.train.log_every_steps = 1  # every batch's loss, for the learning curves
    jobs.run_stage(train, config)
    return (run_dir / "last").resolve()


def run_finetune(plan: ReproducePlan, checkpoint: Path, name: str, seed: int, run_dir: Path) -> dict:
    jobs.run_stage(finetune, checkpoint, name, overrides=[f"output_dir={run_dir}", f"train.seed={seed}",
                                                          "train.eval_every_steps=null"])
    metrics = jobs.final_metrics(run_dir)
    jobs.remove_checkpoints(run_dir)
    return {"metrics": metrics[name]}


def run_trainer(plan: ReproducePlan, entry, seed: int, run_dir: Path) -> dict:
    """Arm 1': `transformers.Trainer` on the same tokenised examples, settings and metric code."""
    import math
    import shutil

    import datasets
    import transformers
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from transformers.trainer_utils import get_last_checkpoint

    from mtdnn.config import DataSettings
    from mtdnn.data import load_task_data
    from mtdnn.evaluation import predictions_from_logits
    from mtdnn.metrics import compute_metrics
    from mtdnn.pretrained import load_tokenizer, resolve
    from mtdnn.tasks import resolve_tasks

    task = next(iter(resolve_tasks([entry]).values()))
    tokenizer = load_tokenizer(plan.model)
    data_settings = DataSettings(max_seq_length=plan.max_seq_length, max_eval_samples=plan.max_eval_samples)
    splits = {}
    for split in ("train", "dev"):
        data = load_task_data(task, split, tokenizer, data_settings,
                              data_settings.max_eval_samples if split == "dev" else None)
        columns = {"input_ids": data.input_ids.tolist(), "labels": data.labels.tolist()}
        if data.token_type_ids is not None:
            columns["token_type_ids"] = data.token_type_ids.tolist()
        splits[split] = datasets.Dataset.from_dict(columns)
    regression = task.type == "regression"
    transformers.set_seed(seed)  # the classifier's initialisation, as mtdnn seeds its heads
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve(plan.model), num_labels=task.num_labels,
        problem_type="regression" if regression else "single_label_classification")
    total_steps = math.ceil(len(splits["train"]) / plan.batch_size) * plan.epochs
    args = TrainingArguments(
        output_dir=str(run_dir), per_device_train_batch_size=plan.batch_size, per_device_eval_batch_size=128,
        learning_rate=plan.learning_rate, weight_decay=plan.weight_decay, num_train_epochs=plan.epochs,
        warmup_steps=int(plan.warmup_ratio * total_steps), lr_scheduler_type="linear", max_grad_norm=1.0,
        optim="adamw_torch_fused", seed=seed, train_sampling_strategy="group_by_length", eval_strategy="no",
        save_strategy="epoch", save_total_limit=1, logging_steps=10, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=splits["train"],
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train(resume_from_checkpoint=get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None)
    output = trainer.predict(splits["dev"])
    predictions = predictions_from_logits(task.type, output.predictions)  # (examples, num_labels) -> (examples,)
    # output.label_ids, not the dataset's column: with group_by_length, transformers 5 also orders evaluation
    # batches by length, so predictions come in the sampler's order
    metrics = compute_metrics(task.metrics, task.type, predictions, output.label_ids)
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    return {"metrics": metrics}


def run_chain(plan: ReproducePlan, entries: dict, seed: int, output_dir: Path) -> None:
    """Arms 2 and 3 of `seed`: stage 2 once, its per-task dev results, then stage 3 for every task."""
    store, runs = ResultStore(output_dir / "results"), output_dir / "runs"
    stage2_dir = runs / "mtdnn" / f"seed-{seed}"
    pending = [name for name in entries
               if store.load("mtdnn", name, f"seed-{seed}") is None
               or store.load("finetuned", name, f"seed-{seed}") is None]
    if not pending:
        return
    started = time.perf_counter()
    checkpoint = stage2(plan, entries, seed, stage2_dir)
    seconds = time.perf_counter() - started
    for name, metrics in jobs.final_metrics(stage2_dir).items():
        store.run_once(("mtdnn", name, f"seed-{seed}"), lambda: {"metrics": metrics, "seconds": seconds,
                                                                 "shared_run": str(stage2_dir)},
                       arm="mtdnn", task=name, seed=seed)
    for name in entries:
        store.run_once(("finetuned", name, f"seed-{seed}"),
                       lambda: run_finetune(plan, checkpoint, name, seed, stage2_dir / "finetune" / name),
                       arm="finetuned", task=name, seed=seed)
    jobs.remove_checkpoints(stage2_dir)


def run_job(plan: ReproducePlan, entries: dict, output_dir: Path, job: tuple) -> tuple:
    """One unit of work: ("chain", seed) for arms 2 and 3, or (arm, task, seed) for arm 1 or 1'."""
    if job[0] == "chain":
        run_chain(plan, entries, job[1], output_dir)
        return job
    arm, name, seed = job
    run_dir = output_dir / "runs" / arm / name / f"seed-{seed}"
    work = run_single if arm == "single" else run_trainer
    ResultStore(output_dir / "results").run_once((arm, name, f"seed-{seed}"),
                                                 lambda: work(plan, entries[name], seed, run_dir),
                                                 arm=arm, task=name, seed=seed)
    return job


def run_all(plan: ReproducePlan, output_dir: Path, workers: int = 1) -> ResultStore:
    """Every job not finished yet, `workers` at a time; a job that fails stops the run once the jobs in flight
    end, and every finished job's result stays stored."""
    store = ResultStore(output_dir / "results")
    entries = task_entries(plan, output_dir / "data")  # written once here, before any worker reads them
    pending = [("chain", seed) for seed in plan.seeds]  # the longest first: stage 2 and its fine-tuning
    pending += [(arm, name, seed) for seed in plan.seeds for name in entries for arm in ("single", "trainer")
                if store.load(arm, name, f"seed-{seed}") is None]
    with jobs.job_pool(workers) as pool:
        for job in pending:
            pool.submit(run_job, plan, entries, output_dir, job)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs.add_run_arguments(parser, "reproduce", quick="64 training examples per task, one seed")
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR",
                        help="the output directory of a re-run of the same plan: the report compares the two")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plan = QUICK if args.quick else FULL
    output_dir = args.output_dir or Path("runs/reproduce" + ("-quick" if args.quick else ""))
    if args.compare:  # checked before any training: a mistake here should not cost the whole run
        if args.compare.resolve() == output_dir.resolve():
            parser.error(f"--compare {args.compare}: that is this run's own output directory; give the re-run's")
        if not (args.compare / "plan.json").is_file():
            parser.error(f"--compare {args.compare}: no plan.json there (not an output directory of this script)")
        if json.loads((args.compare / "plan.json").read_text()) != described(plan):
            parser.error(f"--compare {args.compare}: its results are of a different plan than this one")
    claim_output_dir(output_dir, plan)
    workers = args.workers or jobs.default_workers()
    store = run_or_load(output_dir, "reproduce",
                        None if args.report_only else lambda: run_all(plan, output_dir, workers))
    command = driver_command("reproduce", sys.argv[1:])
    print(write_report(plan, store, output_dir, args.report, command, rerun=args.compare))
    print(f"\nwrote {args.report}")


if __name__ == "__main__":
    main()
