"""Multi-task fine-tuning (paper Algorithm 1): stage 2 on the shared run loop, resumable.

Per-task fine-tuning is the same loop with a one-task list.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from mtdnn.adapters import prepare_encoders
from mtdnn.checkpoint import write_model_files
from mtdnn.config import Config
from mtdnn.data import TaskData, load_task_data
from mtdnn.errors import MTDNNError
from mtdnn.evaluation import evaluate_task
from mtdnn.metrics import run_score
from mtdnn.model import MTDNNModel
from mtdnn.objective import Objective
from mtdnn.optimization import build_optimizer
from mtdnn.pretrained import check_sequence_length, load_tokenizer
from mtdnn.run_dir import RunDirectory
from mtdnn.run_loop import Position, RunLog, StepLoss, process_share, restore, run_loop, save_step, start_run
from mtdnn.sampling import build_schedule
from mtdnn.sharing import resolve_groups
from mtdnn.task_embeddings import attach
from mtdnn.tasks import TaskSpec, resolve_tasks

logger = logging.getLogger(__name__)


def train(config: Config, overwrite: bool = False, model: MTDNNModel | None = None, resume: bool = False,
          run: RunDirectory | None = None) -> Path:
    """Train on every task in `config.tasks`; returns the run directory (`last`, `best/`, metrics.jsonl).

    `run` is the output directory when the caller has claimed it already (`mtdnn distill`, which writes its soft
    targets there first)."""
    settings, output_dir = config.train, Path(config.output_dir)
    tasks = resolve_tasks(config.tasks)  # a bad task definition is refused before the run directory is touched
    started = start_run(settings, output_dir, config.to_dict(), "config.yaml", overwrite, resume, run,
                        find_unused_parameters=True)  # one head per step
    accelerator, resume_from = started.accelerator, started.resume_from
    tokenizer = load_tokenizer(config.model.tokenizer or config.model.name_or_path)
    model = prepare_encoders(build_model(config, tasks, model, resume_from), config.model)
    config.data.check_train_caps(tasks)
    for encoder in model.encoders():
        check_sequence_length(config.data.max_seq_length, encoder.config)
    with accelerator.main_process_first():  # the main process tokenises; the others then map its cache
        train_data = {name: load_task_data(task, "train", tokenizer, config.data, config.data.train_cap(name))
                      for name, task in tasks.items() if "train" in (task.data_files or task.splits)}
        dev_data = {name: load_task_data(task, "dev", tokenizer, config.data, config.data.max_eval_samples)
                    for name, task in tasks.items() if "dev" in (task.data_files or task.splits)}
    if not train_data:
        raise MTDNNError("none of the tasks in `tasks` has a `train` split; nothing to train on.")
    schedule, epochs, total_updates = build_schedule(
        settings.sampling, {name: data.lengths() for name, data in train_data.items()},
        settings.batch_size * accelerator.num_processes, settings.seed, settings.epochs, settings.max_steps,
        settings.gradient_accumulation_steps)
    objective = Objective.build(settings.distillation, settings.adversarial, config.model.sharing_weight, train_data)

    optimizer = build_optimizer(model, settings)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_updates), total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)
    log = RunLog(output_dir / "metrics.jsonl", accelerator)
    at = restore(resume_from, optimizer, scheduler, log)[0] if resume_from is not None else Position()
    stage = MultiTaskStage(accelerator, model, optimizer, scheduler, config, tokenizer, tasks, train_data, dev_data,
                           schedule, objective, log)
    if stage.patience_spent(at):
        logger.info("the run in %s stopped early at step %d; nothing to resume", output_dir, at.step)
    else:
        run_loop(accelerator, model, optimizer, scheduler, stage, at, settings, log, (total_updates, epochs),
                 "train", settings.skip_nonfinite_batches)
    log.close()
    return output_dir


def build_model(config: Config, tasks: dict[str, TaskSpec], model: MTDNNModel | None,
                resume_from: Path | None) -> MTDNNModel:
    """The checkpoint's model on resume, else the given one (fine-tuning) or a new one from the encoder."""
    if resume_from is not None:
        return MTDNNModel.from_pretrained(resume_from)
    if model is None:
        groups = resolve_groups(tasks, config.model.encoder_groups) if config.model.sharing == "soft" else None
        return MTDNNModel.from_encoder(config.model.name_or_path, tasks, config.model.from_scratch,
                                       config.model.attn_implementation, groups, config.model.task_embeddings)
    if config.model.task_embeddings:  # a given model (fine-tuning) gets vectors for its tasks where it lacks them
        for encoder in model.encoders():
            attach(encoder, model.heads)
    return model


class MultiTaskStage:
    """Stage 2 (and 3) for the run loop: the task-batch schedule, the objective, dev evaluation and `best/`."""

    def __init__(self, accelerator, model, optimizer, scheduler, config: Config, tokenizer, tasks: dict[str, TaskSpec],
                 train_data: dict[str, TaskData], dev_data: dict[str, TaskData], schedule, objective: Objective,
                 log: RunLog):
        self.accelerator, self.model, self.optimizer, self.scheduler = accelerator, model, optimizer, scheduler
        self.config, self.settings, self.tokenizer, self.tasks = config, config.train, tokenizer, tasks
        self.train_data, self.dev_data, self.schedule, self.objective, self.log = (
            train_data, dev_data, schedule, objective, log)

    def epoch_batches(self, epoch: int) -> list:
        return self.schedule.epoch(epoch)

    def loss(self, batch, epoch: int, index: int) -> StepLoss:
        task_name, indices = batch
        accelerator = self.accelerator
        positions, weight = process_share(indices, accelerator.process_index, accelerator.num_processes)
        inputs = {key: value.to(accelerator.device)
                  for key, value in self.train_data[task_name].collate(positions).items()}
        loss = self.objective(self.model, accelerator.unwrap_model(self.model), task_name, inputs, positions)
        return StepLoss(loss, weight, len(indices), {"task": task_name})

    def after_update(self, at: Position, total_updates: int) -> bool:
        if self.settings.eval_every_steps and at.step % self.settings.eval_every_steps == 0:
            self.checkpoint(at, evaluate=True)
            return self.stop_early(at)
        if self.settings.save_every_steps and at.step % self.settings.save_every_steps == 0:
            self.checkpoint(at, evaluate=False)
        return False

    def after_epoch(self, at: Position, total_updates: int) -> bool:
        self.checkpoint(at, evaluate=True)
        return self.stop_early(at)

    def patience_spent(self, at: Position) -> bool:
        """Early stopping: `early_stopping_patience` dev evaluations in a row without a better dev score."""
        patience = self.settings.early_stopping_patience
        return bool(patience) and at.evaluations_since_best >= patience

    def stop_early(self, at: Position) -> bool:
        """Whether the run ends at this evaluation's checkpoint (logged where it does)."""
        if not self.patience_spent(at):
            return False
        self.log.write({"type": "early_stop", "epoch": at.epoch, "step": at.step, "best_score": at.best_score,
                        "patience": self.settings.early_stopping_patience})
        logger.info("early stopping at step %d: %d evaluations without a better dev score than %.4f", at.step,
                    at.evaluations_since_best, at.best_score)
        return True

    def save(self, at: Position) -> Path:
        return self.checkpoint(at, evaluate=False)

    def evaluate(self, at: Position) -> tuple[dict, float]:
        """Every dev set's metrics and the run's dev score, logged."""
        # DDP broadcasts buffers in every forward call, and the processes evaluate different numbers of
        # batches: evaluate with the module inside (no collective but the final gather).
        model = self.model.module if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else self.model
        accelerator = self.accelerator
        results = {name: evaluate_task(model, data, self.settings.eval_batch_size, accelerator.device,
                                       accelerator.process_index, accelerator.num_processes,
                                       progress=accelerator.is_local_main_process)
                   for name, data in self.dev_data.items()}
        score = run_score(results, {name: task.head_name for name, task in self.tasks.items()})
        self.log.write({"type": "eval", "split": "dev", "epoch": at.epoch, "step": at.step, "metrics": results,
                        "score": score})
        logger.info("step %d dev: %s", at.step, json.dumps(results))
        return results, score

    def checkpoint(self, at: Position, evaluate: bool) -> Path:
        """A step checkpoint, after a dev evaluation if asked; `best/` too if its dev score is the best yet."""
        state, is_best = {"epoch": at.epoch, "step": at.step}, False
        if evaluate:
            results, score = self.evaluate(at)
            state.update(dev_metrics=results, dev_score=score)
            improved = score > at.best_score
            is_best = self.settings.save_best and improved
            at.best_score = max(at.best_score, score)
            at.evaluations_since_best = 0 if improved else at.evaluations_since_best + 1
        unwrapped = self.accelerator.unwrap_model(self.model)
        return save_step(self.accelerator, Path(self.config.output_dir), at,
                         lambda staging: write_model_files(staging, unwrapped, self.tokenizer, self.config, state),
                         state, self.optimizer, self.scheduler, self.settings.keep_checkpoints, is_best)
