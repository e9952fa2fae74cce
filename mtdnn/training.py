"""Multi-task fine-tuning (paper Algorithm 1) as one explicit accelerate loop, resumable.

Per-task fine-tuning is the same loop with a one-task list.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mtdnn.checkpoint import (load_training_state, publish, restore_rng, save_checkpoint, step_checkpoints)
from mtdnn.config import Config
from mtdnn.data import load_task_data
from mtdnn.errors import MTDNNError, StoppedBySignal
from mtdnn.evaluation import evaluate_task
from mtdnn.metrics import run_score
from mtdnn.model import MTDNNModel
from mtdnn.objective import Objective
from mtdnn.optimization import build_optimizer
from mtdnn.pretrained import check_sequence_length, load_tokenizer
from mtdnn.run_dir import RunDirectory
from mtdnn.sampling import build_schedule
from mtdnn.sharing import resolve_groups
from mtdnn.task_embeddings import attach
from mtdnn.tasks import resolve_tasks

logger = logging.getLogger(__name__)


@dataclass
class Position:
    """Where training is: what a checkpoint must record to continue exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    step: int = 0  # optimizer updates so far
    best_score: float = -math.inf


class RunLog:
    """One JSON object per line in `metrics.jsonl` (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint, which the resumed run writes again."""
        if self.enabled and self.path.exists():
            rows = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.path.write_text("".join(row + "\n" for row in rows))


class SignalCatcher:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a step is never cut in half."""

    def __init__(self):
        self.received: int | None = None
        self.previous = {s: signal.signal(s, self._catch) for s in (signal.SIGINT, signal.SIGTERM)}

    def _catch(self, number, _frame) -> None:
        self.received = number

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def stop_now(self, accelerator) -> bool:
        """Whether any process has received a signal: every process gets the same answer at the same step."""
        if self.received is not None:
            accelerator.set_trigger()
        return accelerator.check_trigger()

    def step_flags(self, accelerator, loss: torch.Tensor) -> tuple[bool, bool]:
        """(every process's loss is finite, some process has received a signal), in one collective per batch.

        The training loop needs both answers agreed across processes; asking them together saves the second
        round trip that a separate `stop_now` would cost at every step."""
        flags = torch.stack([torch.isfinite(loss.detach()).all().float(),
                             torch.tensor(float(self.received is not None), device=loss.device)])
        flags = accelerator.gather(flags).reshape(-1, 2)
        return bool(flags[:, 0].all()), bool(flags[:, 1].any())


SHARDED = frozenset({DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM})
"""accelerate's sharded set-ups: each process holds a part of the weights or optimizer state."""


def check_distribution(distributed_type: DistributedType) -> None:
    """Refuse a sharded set-up: checkpoints are the main process's whole model and optimizer state, which is
    only complete when every process holds all of it (one process, or DDP)."""
    if distributed_type in SHARDED:
        name = str(distributed_type).rsplit(".", 1)[-1]
        raise MTDNNError(
            f"accelerate is configured for {name}, which mtdnn does not support: its checkpoints and resume need "
            "every process to hold the whole model and optimizer state. Train with DDP instead: `accelerate "
            "launch --multi_gpu --num_processes N -m mtdnn train CONFIG` (or choose multi-GPU without "
            "DeepSpeed/FSDP in `accelerate config`).")


def whole_windows(batches: int, accumulation: int) -> int:
    """The batches of an epoch that fill whole gradient-accumulation windows: a window never spans two epochs, so
    an epoch-end checkpoint holds no pending gradients (the last `batches % N`, reshuffled each epoch, sit out)."""
    return batches - batches % accumulation or batches


def process_share(indices: np.ndarray, process_index: int, num_processes: int) -> tuple[np.ndarray, float]:
    """This process's examples of a global batch, and the weight of their mean loss that makes the processes'
    average gradient (DDP's) the whole batch's mean: examples here x processes / examples in the batch.

    A process left without an example (a task's last batch smaller than the number of processes) still runs the
    step's forward, backward and collectives, on the batch's first example at weight 0, or the others would wait
    for it forever."""
    share = indices[process_index::num_processes]
    if len(share) == 0:
        return indices[:1], 0.0
    return share, len(share) * num_processes / len(indices)


def apply_gradients(accelerator, model, optimizer, loss, max_grad_norm: float) -> None:
    """Backward, then clip and step (inside an accumulation window accelerate makes the step a no-op)."""
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()


def train(config: Config, overwrite: bool = False, model: MTDNNModel | None = None, resume: bool = False,
          run: RunDirectory | None = None) -> Path:
    """Train on every task in `config.tasks`; returns the run directory (`last`, `best/`, metrics.jsonl).

    `run` is the output directory when the caller has claimed it already (`mtdnn distill`, which writes its soft
    targets there first)."""
    settings = config.train
    accelerator = Accelerator(
        mixed_precision=settings.mixed_precision, gradient_accumulation_steps=settings.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],  # one head per step
    )
    check_distribution(accelerator.distributed_type)
    output_dir = Path(config.output_dir)
    tasks = resolve_tasks(config.tasks)  # a bad task definition is refused before the run directory is touched
    resume_from = step_checkpoints(output_dir)[-1] if resume and step_checkpoints(output_dir) else None
    if run is None and accelerator.is_main_process:  # --resume without a checkpoint yet starts the run again
        run = RunDirectory(output_dir)
        run.claim(config.to_dict(), overwrite, resume, resume_from is not None)
    accelerator.wait_for_everyone()
    set_seed(settings.seed)
    tokenizer = load_tokenizer(config.model.tokenizer or config.model.name_or_path)
    if resume_from is not None:
        model = MTDNNModel.from_pretrained(resume_from)
    elif model is None:
        groups = resolve_groups(tasks, config.model.encoder_groups) if config.model.sharing == "soft" else None
        model = MTDNNModel.from_encoder(config.model.name_or_path, tasks, config.model.from_scratch,
                                        config.model.attn_implementation, groups, config.model.task_embeddings)
    elif config.model.task_embeddings:  # a given model (fine-tuning) gets vectors for its tasks where it lacks them
        for encoder in model.encoders():
            attach(encoder, model.heads)
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
    objective = Objective.build(config, train_data)

    optimizer = build_optimizer(model, settings)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_updates), total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)
    log = RunLog(output_dir / "metrics.jsonl", accelerator.is_main_process)
    at = Position()
    if resume_from is not None:
        saved = load_training_state(resume_from)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng(saved["rng"])
        at = Position(**json.loads((resume_from / "trainer_state.json").read_text())["position"])
        log.truncate_after(at.step)
        logger.info("resuming from %s (step %d, epoch %d, batch %d)", resume_from, at.step, at.epoch,
                    at.batch_in_epoch)

    def save(evaluate: bool) -> Path:
        state = {"epoch": at.epoch, "step": at.step}
        score = None
        if evaluate:
            # DDP broadcasts buffers in every forward call, and the processes evaluate different numbers of
            # batches: evaluate with the module inside (no collective but the final gather).
            evaluated = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
            results = {name: evaluate_task(evaluated, data, settings.eval_batch_size, accelerator.device,
                                           accelerator.process_index, accelerator.num_processes,
                                           progress=accelerator.is_local_main_process)
                       for name, data in dev_data.items()}
            score = run_score(results, {name: task.head_name for name, task in tasks.items()})
            log.write({"type": "eval", "split": "dev", "epoch": at.epoch, "step": at.step, "metrics": results,
                       "score": score})
            logger.info("step %d dev: %s", at.step, json.dumps(results))
            state.update(dev_metrics=results, dev_score=score)
        is_best = score is not None and settings.save_best and score > at.best_score
        at.best_score = max(at.best_score, score if score is not None else -math.inf)
        checkpoint = output_dir / "checkpoints" / f"step-{at.step}"
        if accelerator.is_main_process:
            save_checkpoint(checkpoint, accelerator.unwrap_model(model), tokenizer, config,
                            {**state, "position": asdict(at)}, optimizer, scheduler)
            publish(output_dir, checkpoint, settings.keep_checkpoints, is_best)
        accelerator.wait_for_everyone()
        return checkpoint

    progress = tqdm(total=total_updates, initial=at.step, desc="train", disable=not accelerator.is_local_main_process)
    signals, examples, started = SignalCatcher(), 0, time.perf_counter()
    stop_requested = False  # a signal seen by any process, agreed at a batch and acted on at the next update
    model.train()
    try:
        while at.step < total_updates and at.epoch < epochs:
            steps = schedule.epoch(at.epoch)
            usable = whole_windows(len(steps), settings.gradient_accumulation_steps)
            while at.batch_in_epoch < usable and at.step < total_updates:
                task_name, indices = steps[at.batch_in_epoch]
                at.batch_in_epoch += 1
                positions, weight = process_share(indices, accelerator.process_index, accelerator.num_processes)
                batch = {key: value.to(accelerator.device)
                         for key, value in train_data[task_name].collate(positions).items()}
                with accelerator.accumulate(model):
                    loss = objective(model, accelerator.unwrap_model(model), task_name, batch, positions)
                    finite, signalled = signals.step_flags(accelerator, loss)
                    stop_requested = stop_requested or signalled
                    if not finite:
                        if not settings.skip_nonfinite_batches:
                            raise MTDNNError(
                                f"the loss of task `{task_name}` is {loss.item()} at step {at.step + 1} (epoch "
                                f"{at.epoch + 1}); the run stopped and the last checkpoint in {output_dir} is intact. "
                                "Lower train.learning_rate, check that task's labels, or set "
                                "train.skip_nonfinite_batches=true.")
                        logger.warning("skipping a batch of task %s: non-finite loss %s", task_name, loss.item())
                        optimizer.zero_grad()
                        continue
                    apply_gradients(accelerator, model, optimizer, loss * weight, settings.max_grad_norm)
                examples += len(indices)
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                at.step += 1
                speed = examples / (time.perf_counter() - started)
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}", task=task_name, ex_per_s=f"{speed:.0f}")
                if at.step % settings.log_every_steps == 0:
                    log.write({"type": "train", "epoch": at.epoch, "step": at.step, "task": task_name,
                               "loss": loss.item(), "learning_rate": scheduler.get_last_lr()[0],
                               "examples_per_second": speed})
                if at.step == total_updates:
                    pass  # the final evaluation and checkpoint follow below
                elif settings.eval_every_steps and at.step % settings.eval_every_steps == 0:
                    save(evaluate=True)
                elif settings.save_every_steps and at.step % settings.save_every_steps == 0:
                    save(evaluate=False)
                # One process acts on its own signal at once; several agree on it at their next batch's flags.
                if at.step < total_updates and (stop_requested or (
                        accelerator.num_processes == 1 and signals.received is not None)):
                    raise StoppedBySignal(signals.received or signal.SIGTERM, save(evaluate=False))
            if at.batch_in_epoch == usable:
                at.epoch, at.batch_in_epoch = at.epoch + 1, 0
            save(evaluate=True)
    finally:
        signals.restore()
        progress.close()
    return output_dir
