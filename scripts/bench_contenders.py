"""One benchmark contender per process (run by scripts.benchmark): train, evaluate, report JSON.

`mtdnn` runs `mtdnn.training.train` itself on the task mix and reports how many steps each task got;
`trainer_best` and `trainer_run_glue` run `transformers.Trainer` once per task for that many steps.
Every contender is timed by the same hooks: each optimizer step's end time (a global optimizer hook)
and each training forward's batch size and real tokens (a forward pre-hook).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from mtdnn.config import DEFAULT_MODEL
BATCH_SIZE = 32
MAX_LENGTH = 128
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.1


class StepClock:
    """End time of every optimizer step, and the task, examples, real and padded tokens of every training forward."""

    def __init__(self, model: torch.nn.Module, task_name: str | None = None):
        self.task_name = task_name  # mtdnn passes the task as the forward's first argument
        self.ends: list[float] = []
        self.batches: list[tuple[str, int, int, int]] = []  # (task, examples, real tokens, padded tokens)
        self.eval_padded_tokens = 0  # tokens of evaluation forwards, padding included
        self.handles = [register_optimizer_step_post_hook(self._step_end),
                        model.register_forward_pre_hook(self._forward, with_kwargs=True)]

    def _step_end(self, optimizer, args, kwargs) -> None:
        self.ends.append(time.perf_counter())

    def _forward(self, module, args, kwargs) -> None:
        mask = kwargs["attention_mask"]  # (batch, seq)
        if module.training:
            task = args[0] if args and isinstance(args[0], str) else self.task_name
            self.batches.append((task, mask.shape[0], int(mask.sum()), mask.numel()))
        else:
            self.eval_padded_tokens += mask.numel()

    def window(self, first: int, last: int) -> dict[str, dict]:
        """Per task, totals over steps first..last-1; a step lasts from the previous step's end to its own."""
        if len(self.ends) != len(self.batches):
            raise RuntimeError(f"{len(self.ends)} optimizer steps but {len(self.batches)} training forwards")
        per_task: dict[str, dict] = {}
        for step in range(max(first, 1), min(last, len(self.ends))):
            task, examples, real, padded = self.batches[step]
            seconds = self.ends[step] - self.ends[step - 1]
            per_task[task] = add(per_task.get(task, {}), {
                "steps": 1, "seconds": seconds, "examples": examples, "real_tokens": real, "padded_tokens": padded,
                "step_seconds": [seconds]})
        return per_task

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def total(per_task: dict[str, dict]) -> dict:
    out: dict = {}
    for part in per_task.values():
        out = add(out, part)
    return out


def add(totals: dict, part: dict) -> dict:
    """Sum two records key by key (numbers add, lists concatenate)."""
    return {key: totals.get(key, type(value)()) + value for key, value in part.items()}


def timed_eval(run, clock: StepClock, repeats: int):
    """Best time of `repeats` runs of `run()` (its result from the last run), and its padded tokens per run."""
    best, clock.eval_padded_tokens = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return result, best, clock.eval_padded_tokens // repeats


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_mtdnn(args) -> dict:
    from mtdnn.config import Config, DataSettings, ModelSettings, TrainSettings
    from mtdnn.data import load_task_data
    from mtdnn.evaluation import predictions_from_logits, task_logits
    from mtdnn.metrics import compute_metrics
    from mtdnn.model import MTDNNModel
    from mtdnn.pretrained import load_tokenizer
    from mtdnn.tasks import resolve_tasks
    from mtdnn.training import train

    config = Config(
        model=ModelSettings(name_or_path=DEFAULT_MODEL), tasks=list(args.task_steps),
        # train() ends with a dev evaluation; it is kept tiny there because evaluation is timed on its own below
        data=DataSettings(max_seq_length=MAX_LENGTH, max_train_samples=args.max_train_samples, max_eval_samples=8),
        train=TrainSettings(max_steps=args.steps, batch_size=BATCH_SIZE, eval_batch_size=args.eval_batch_size,
                            learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO,
                            save_best=False),
        output_dir=str(Path(args.workdir) / "mtdnn"),
    )
    started = time.perf_counter()
    torch.manual_seed(config.train.seed)
    model = MTDNNModel.from_encoder(DEFAULT_MODEL, resolve_tasks(config.tasks))
    if args.compile:  # what a `train.compile` setting would do; compiling takes minutes on 2 cores
        model.encoder.compile(dynamic=True)
    clock = StepClock(model)
    train(config, overwrite=True, model=model)
    per_task = clock.window(args.skip, args.steps)
    result = {"train": total(per_task), "train_per_task": per_task, "train_all_seconds": time.perf_counter() - started,
              "task_steps": {name: [task for task, *_ in clock.batches].count(name) for name in config.tasks},
              "peak_rss_mb_train": peak_rss_mb()}

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    dev_settings = DataSettings(max_seq_length=MAX_LENGTH, max_eval_samples=args.eval_samples)
    evaluation, metrics = {}, {}
    for name, task in resolve_tasks(config.tasks).items():
        data = load_task_data(task, "dev", tokenizer, dev_settings, args.eval_samples)
        logits, seconds, padded = timed_eval(lambda: task_logits(model, data, args.eval_batch_size), clock,
                                             args.eval_repeats)
        predictions = predictions_from_logits(task.type, logits)
        metrics[name] = compute_metrics(task.metrics, task.type, predictions, np.asarray(data.labels))
        evaluation[name] = {"seconds": seconds, "examples": len(data), "real_tokens": int(data.lengths().sum()),
                            "padded_tokens": padded}
    clock.close()
    result.update(eval_per_task=evaluation, dev_metrics=metrics, peak_rss_mb=peak_rss_mb())
    return result


def tokenized_split(task, split: str, tokenizer, pad_to_max_length: bool, max_samples: int | None):
    """The split as a run_glue.py user builds it: a `datasets.Dataset` mapped through the tokenizer."""
    import datasets

    from mtdnn.sources import glue_dir_from, load_split

    columns = load_split(task, split, glue_dir_from(None))
    if max_samples is not None:
        columns = {key: values[:max_samples] for key, values in columns.items()}
    dataset = datasets.Dataset.from_dict({key: columns[key] for key in ("text_a", "text_b", "label") if key in columns})

    def tokenize(rows):
        texts = (rows["text_a"], rows["text_b"]) if "text_b" in rows else (rows["text_a"],)
        return tokenizer(*texts, padding="max_length" if pad_to_max_length else False,
                         max_length=MAX_LENGTH, truncation=True)

    return dataset.map(tokenize, batched=True, remove_columns=[c for c in ("text_a", "text_b") if c in columns])


def run_trainer(args, style: str) -> dict:
    """`transformers.Trainer` per task: `run_glue` (padding to 128, random order) or `best` (dynamic
    padding + group_by_length), each task for the steps mtdnn's schedule gave it."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, default_data_collator)
    from transformers.utils import logging as hf_logging

    from mtdnn.evaluation import predictions_from_logits
    from mtdnn.metrics import compute_metrics
    from mtdnn.pretrained import resolve
    from mtdnn.tasks import GLUE_TASKS

    hf_logging.set_verbosity_error()
    best = style == "best"
    path = resolve(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    collator = DataCollatorWithPadding(tokenizer) if best else default_data_collator
    per_task, evaluation, metrics, wall = {}, {}, {}, 0.0
    for name, steps in args.task_steps.items():
        if steps == 0:
            continue
        started = time.perf_counter()
        task = GLUE_TASKS[name]
        train_set = tokenized_split(task, "train", tokenizer, not best, args.max_train_samples)
        torch.manual_seed(42)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels)
        arguments = TrainingArguments(
            output_dir=str(Path(args.workdir) / f"{style}-{name}"), per_device_train_batch_size=BATCH_SIZE,
            per_device_eval_batch_size=args.eval_batch_size if best else 8, max_steps=steps,
            learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, warmup_steps=WARMUP_RATIO, seed=42,
            train_sampling_strategy="group_by_length" if best else "random",
            save_strategy="no", report_to="none", use_cpu=True,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=train_set, data_collator=collator,
                          processing_class=tokenizer)
        clock = StepClock(model, name)
        trainer.train()
        per_task.update(clock.window(1, steps))  # each run's first step (optimizer state, first batch) is skipped
        wall += time.perf_counter() - started
        if best and args.eval_samples != 0:
            dev_set = tokenized_split(task, "dev", tokenizer, False, args.eval_samples)
            output, seconds, padded = timed_eval(lambda: trainer.predict(dev_set), clock, args.eval_repeats)
            logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
            predictions = predictions_from_logits(task.type, np.asarray(logits).reshape(len(dev_set), -1))
            # label_ids, not dev_set["label"]: with group_by_length the predictions come in the sampler's order
            metrics[name] = compute_metrics(task.metrics, task.type, predictions, output.label_ids)
            evaluation[name] = {"seconds": seconds, "examples": len(dev_set), "padded_tokens": padded,
                                "real_tokens": int(sum(len(ids) for ids in dev_set["input_ids"]))}
        clock.close()
        trainer = model = train_set = None  # freed before the next task (a `del` here reads as undefined to linters)
        gc.collect()
    result = {"train": total(per_task), "train_per_task": per_task, "train_all_seconds": wall,
              "peak_rss_mb_train": peak_rss_mb()}
    if evaluation:
        result.update(eval_per_task=evaluation, dev_metrics=metrics)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("contender", choices=["mtdnn", "mtdnn_compile", "trainer_best", "trainer_run_glue"])
    parser.add_argument("--task-steps", type=json.loads, required=True,
                        help='JSON {"sst2": 40, ...}: the tasks, and for a Trainer the steps of each')
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--skip", type=int, required=True)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=None)
    parser.add_argument("--eval-repeats", type=int, default=2, help="evaluation is timed as the best of this many")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mtdnn-bench-") as workdir:
        args.workdir = workdir
        args.compile = args.contender == "mtdnn_compile"
        if args.contender.startswith("mtdnn"):
            result = run_mtdnn(args)
        else:
            result = run_trainer(args, args.contender.split("_", 1)[1])
    result["contender"] = args.contender
    Path(args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
