"""The training runs of scripts.reproduce, one function per kind: each trains (or resumes) through mtdnn's own
stage functions and returns its result row: dev metrics after the last update, and per-example dev predictions
for the bootstrap intervals."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from mtdnn.checkpoint import CONFIG_FILE
from mtdnn.data import load_task_data
from mtdnn.finetuning import finetune
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import resolve_tasks
from mtdnn.training import train
from mtdnn.yaml_settings import read_yaml
from scripts import jobs
from scripts.plan import task_name
from scripts.predictions import dev_predictions
from scripts.reproduce_plan import ReproducePlan
from scripts.results import ResultStore


def finished(run_dir: Path, name: str, labels_dir: Path, metrics: dict | None = None) -> dict:
    """A finished run's row for task `name`: its final dev metrics and the predictions behind them."""
    metrics = metrics or jobs.final_metrics(run_dir)[name]
    return {"metrics": metrics, "predictions": dev_predictions(run_dir / "last", name, metrics, labels_dir)}


def run_single(plan: ReproducePlan, entry, seed: int, run_dir: Path, labels_dir: Path) -> dict:
    """Arm 1. Its final checkpoint stays: the control arm continues from it (and then removes it)."""
    jobs.run_stage(train, jobs.mtdnn_config([entry], run_dir, seed, plan.settings(), plan.model))
    return finished(run_dir, task_name(entry), labels_dir)


def run_finetune(checkpoint: Path, entry, seed: int, run_dir: Path, labels_dir: Path, new_head: bool = False) -> dict:
    """Stage 3 of a task from `checkpoint` (stage 2's for arm 3, arm 1's for the control), its head kept; with
    `new_head`, a task the checkpoint was not trained on (WNLI, out of stage 2 as in the paper), to which mtdnn's
    `finetune` gives a new head, named by a config file: the checkpoint's own config with that task."""
    name, config_path = task_name(entry), None
    if new_head:
        config_path = run_dir.parent / f"{name}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump({**read_yaml(checkpoint / CONFIG_FILE), "tasks": [entry]}))
    jobs.run_stage(finetune, checkpoint, name, config_path,
                   overrides=[f"output_dir={run_dir}", f"train.seed={seed}", "train.eval_every_steps=null"])
    row = finished(run_dir, name, labels_dir)
    jobs.remove_checkpoints(run_dir)
    return row


def stage2(plan: ReproducePlan, entries: list, seed: int, run_dir: Path) -> Path:
    """The multi-task run of `seed`: trained, resumed, or (finished already) only loaded; its final checkpoint."""
    config = jobs.mtdnn_config(entries, run_dir, seed, plan.settings(), plan.model)
    tokenizer = load_tokenizer(plan.model)
    batches = sum(-(-len(load_task_data(task, "train", tokenizer, config.data)) // plan.batch_size)
                  for task in resolve_tasks(config.tasks).values())  # per epoch, to place the mid-epoch evaluations
    config.train.eval_every_steps = max(1, batches // plan.stage2_evals_per_epoch)
    config.train.log_every_steps = 1  # every batch's loss, for the learning curves
    jobs.run_stage(train, config)
    return (run_dir / "last").resolve()


def run_chain(plan: ReproducePlan, entries: dict, seed: int, output_dir: Path) -> None:
    """Arms 2 and 3 of `seed`: stage 2 once on all but the separate tasks, its per-task dev results, then stage 3
    for every task."""
    store, label, labels_dir = ResultStore(output_dir / "results"), plan.budget_label, output_dir / "dev_labels"
    stage2_dir = output_dir / "runs" / label / "mtdnn" / f"seed-{seed}"
    shared = [name for name in entries if name not in plan.separate]
    keys = [("mtdnn", name) for name in shared] + [("finetuned", name) for name in entries]
    if all(store.load(label, arm, name, f"seed-{seed}") is not None for arm, name in keys):
        return
    started = time.perf_counter()
    checkpoint = stage2(plan, [entries[name] for name in shared], seed, stage2_dir)
    seconds = time.perf_counter() - started
    final = jobs.final_metrics(stage2_dir)
    for name in shared:
        store.run_once((label, "mtdnn", name, f"seed-{seed}"),
                       lambda: {**finished(stage2_dir, name, labels_dir, final[name]), "seconds": seconds,
                                "shared_run": str(stage2_dir)},
                       arm="mtdnn", task=name, seed=seed, budget=label)
    for name in entries:
        store.run_once((label, "finetuned", name, f"seed-{seed}"),
                       lambda: run_finetune(checkpoint, entries[name], seed, stage2_dir / "finetune" / name,
                                            labels_dir, new_head=name in plan.separate),
                       arm="finetuned", task=name, seed=seed, budget=label)
    jobs.remove_checkpoints(stage2_dir)


def run_control(plan: ReproducePlan, name: str, seed: int, output_dir: Path) -> dict:
    """The equal-passes control: arm 1's final model fine-tuned again on its task exactly as arm 3's stage 3 is
    run, so it has arm 3's passes over the task and its two learning-rate schedules; then arm 1's checkpoint goes."""
    store, runs = ResultStore(output_dir / "results"), output_dir / "runs" / plan.budget_label
    key, single_dir = (plan.budget_label, "control", name, f"seed-{seed}"), runs / "single" / name / f"seed-{seed}"
    if store.load(*key) is None and not (single_dir / "last").exists():
        raise RuntimeError(f"{single_dir}/last is gone, and the control of {name} seed {seed} continues from it: "
                           f"remove {output_dir}/results/{plan.budget_label}/single/{name}/seed-{seed}.json so that "
                           "arm 1 is trained again, then re-run")
    row = store.run_once(key, lambda: run_finetune((single_dir / "last").resolve(), name, seed,
                                                   runs / "control" / name / f"seed-{seed}", output_dir / "dev_labels"),
                         arm="control", task=name, seed=seed, budget=plan.budget_label)
    jobs.remove_checkpoints(single_dir)
    return row


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
