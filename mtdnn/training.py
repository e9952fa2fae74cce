"""Multi-task fine-tuning (paper Algorithm 1) as one explicit accelerate loop.

Per-task fine-tuning is the same loop with a one-task list.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtdnn.checkpoint import save_checkpoint
from mtdnn.config import Config, TrainSettings, save_config
from mtdnn.data import TaskData, load_task_data
from mtdnn.errors import MTDNNError
from mtdnn.evaluation import evaluate_task
from mtdnn.metrics import task_score
from mtdnn.model import MTDNNModel
from mtdnn.pretrained import load_tokenizer
from mtdnn.sampling import MultiTaskSchedule
from mtdnn.tasks import resolve_tasks

logger = logging.getLogger(__name__)


def build_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW (fused where the device allows) or Adamax; no weight decay on biases and LayerNorm."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "adamax":
        return torch.optim.Adamax(groups, lr=settings.learning_rate)
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)


class RunLog:
    """Appends one JSON object per line to `metrics.jsonl` (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")


def prepare_run_dir(config: Config, overwrite: bool) -> Path:
    output_dir = Path(config.output_dir)
    if (output_dir / "metrics.jsonl").exists() and not overwrite:
        raise MTDNNError(
            f"output directory {output_dir} already holds a run (metrics.jsonl); choose another `output_dir` "
            "or pass --overwrite to replace it."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.jsonl").unlink(missing_ok=True)
    return output_dir


def evaluate_all(model, dev_data: dict[str, TaskData], config: Config, accelerator: Accelerator) -> dict:
    return {name: evaluate_task(model, data, config.train.eval_batch_size, accelerator.device,
                                accelerator.process_index, accelerator.num_processes)
            for name, data in dev_data.items()}


def train(config: Config, overwrite: bool = False, model: MTDNNModel | None = None) -> Path:
    """Train on every task in `config.tasks`; returns the run directory (with `last/` and `best/`)."""
    settings = config.train
    accelerator = Accelerator(
        mixed_precision=settings.mixed_precision, gradient_accumulation_steps=settings.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],  # one head per step
    )
    output_dir = prepare_run_dir(config, overwrite) if accelerator.is_main_process else Path(config.output_dir)
    save_config(config, output_dir / "config.yaml") if accelerator.is_main_process else None
    set_seed(settings.seed)
    tasks = resolve_tasks(config.tasks)
    tokenizer = load_tokenizer(config.model.tokenizer or config.model.name_or_path)
    if model is None:
        model = MTDNNModel.from_encoder(config.model.name_or_path, tasks, config.model.from_scratch,
                                        config.model.attn_implementation)
    train_data = {name: load_task_data(task, "train", tokenizer, config.data, config.data.max_train_samples)
                  for name, task in tasks.items() if "train" in (task.data_files or task.splits)}
    dev_data = {name: load_task_data(task, "dev", tokenizer, config.data, config.data.max_eval_samples)
                for name, task in tasks.items() if "dev" in (task.data_files or task.splits)}
    if not train_data:
        raise MTDNNError("none of the tasks in `tasks` has a `train` split; nothing to train on.")
    schedule = MultiTaskSchedule({name: data.lengths() for name, data in train_data.items()},
                                 settings.batch_size * accelerator.num_processes, settings.seed)
    updates_per_epoch = max(1, schedule.batches_per_epoch() // settings.gradient_accumulation_steps)
    total_updates = settings.max_steps or updates_per_epoch * settings.epochs
    epochs = math.ceil(total_updates / updates_per_epoch)

    optimizer = build_optimizer(model, settings)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_updates), total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)
    log = RunLog(output_dir / "metrics.jsonl", accelerator.is_main_process)
    best_score, step, examples, started = -math.inf, 0, 0, time.perf_counter()
    progress = tqdm(total=total_updates, desc="train", disable=not accelerator.is_local_main_process)

    def checkpoint(epoch: int) -> None:
        nonlocal best_score
        results = evaluate_all(model, dev_data, config, accelerator)
        score = sum(task_score(m) for m in results.values()) / max(1, len(results))
        log.write({"type": "eval", "split": "dev", "epoch": epoch, "step": step, "metrics": results, "score": score})
        logger.info("step %d dev: %s", step, json.dumps(results))
        if accelerator.is_main_process:
            state = {"epoch": epoch, "step": step, "dev_metrics": results, "dev_score": score}
            unwrapped = accelerator.unwrap_model(model)
            save_checkpoint(output_dir / "last", unwrapped, tokenizer, config, state)
            if settings.save_best and score > best_score:
                save_checkpoint(output_dir / "best", unwrapped, tokenizer, config, state)
        best_score = max(best_score, score)
        accelerator.wait_for_everyone()

    model.train()
    for epoch in range(epochs):
        for task_name, indices in schedule.epoch(epoch):
            batch = train_data[task_name].collate(indices[accelerator.process_index :: accelerator.num_processes])
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            with accelerator.accumulate(model):
                loss = model(task_name, **batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            examples += len(indices)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            speed = examples / (time.perf_counter() - started)
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}", task=task_name, ex_per_s=f"{speed:.0f}")
            if step % settings.log_every_steps == 0:
                log.write({"type": "train", "epoch": epoch, "step": step, "task": task_name, "loss": loss.item(),
                           "learning_rate": scheduler.get_last_lr()[0], "examples_per_second": speed})
            if settings.eval_every_steps and step % settings.eval_every_steps == 0 and step < total_updates:
                checkpoint(epoch)
            if step >= total_updates:
                break
        checkpoint(epoch + 1)
        if step >= total_updates:
            break
    progress.close()
    return output_dir
