"""The one training loop of every stage (pretrain, train, finetune, distill) and what it needs to be resumed
exactly: the run's position, its log, signals, the gradient step and step checkpoints.

A stage says what its batches are, how one becomes a loss and what it does after an update; the loop does the
rest, the same way for all: accumulation windows, non-finite losses, logging, signals and resume.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from mtdnn.errors import MTDNNError, StoppedBySignal
from mtdnn.manifest import REFUSAL_HINT
from mtdnn.run_dir import RunDirectory
from mtdnn.run_state import (CHECKPOINTS, STATE_FILE, load_training_state, publish, restore_rng, step_checkpoints,
                             write_checkpoint)
from mtdnn.tracking import PROJECT, check_installed, hyperparameters, logging_dir, tracker_values

logger = logging.getLogger(__name__)


@dataclass
class Position:
    """Where a run is: what a checkpoint must record to continue exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    step: int = 0  # optimizer updates so far
    best_score: float = -math.inf  # the best dev score so far (stages that evaluate tasks)
    evaluations_since_best: int = 0  # dev evaluations since the best one (early stopping)


class RunLog:
    """One JSON object per line in `metrics.jsonl`, and its scalars to the run's trackers (main process only)."""

    def __init__(self, path: Path, accelerator: Accelerator):
        self.path, self.enabled, self.accelerator = path, accelerator.is_main_process, accelerator

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            if self.accelerator.trackers:
                self.accelerator.log(tracker_values(row), step=row["step"])

    def close(self) -> None:
        """The trackers' end of the run (their files flushed and closed)."""
        if self.accelerator.trackers:
            self.accelerator.end_training()

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

    def step_flags(self, accelerator, loss: torch.Tensor) -> tuple[bool, bool]:
        """(every process's loss is finite, some process has received a signal), in one collective per batch:
        the loop needs both answers agreed across processes, and asking them together saves a round trip."""
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


class Run(NamedTuple):
    """A started run: its accelerator, the checkpoint it resumes from (None: from the start), and the claim on
    its directory, held until the run object is dropped."""

    accelerator: Accelerator
    resume_from: Path | None
    directory: RunDirectory | None


def start_run(settings, output_dir: Path, config: dict, config_name: str, overwrite: bool, resume: bool,
              claimed: RunDirectory | None = None, find_unused_parameters: bool = False) -> Run:
    """The accelerator, the run directory claimed (unless the caller has), the trackers of `settings.report_to`
    started in it, and the checkpoint to resume from.

    `find_unused_parameters`: DDP must not wait for gradients a step leaves out (one head per step in stage 2)."""
    check_installed(settings.report_to)
    accelerator = Accelerator(
        mixed_precision=settings.mixed_precision, gradient_accumulation_steps=settings.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        log_with=settings.report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(logging_dir(output_dir))))
    check_distribution(accelerator.distributed_type)
    checkpoints = step_checkpoints(output_dir)
    resume_from = checkpoints[-1] if resume and checkpoints else None  # --resume without a checkpoint starts again
    if claimed is None and accelerator.is_main_process:
        claimed = RunDirectory(output_dir, config_name)
        claimed.claim(config, overwrite, resume, resume_from is not None)
    accelerator.wait_for_everyone()
    if settings.report_to:
        accelerator.init_trackers(PROJECT, config=hyperparameters(config),
                                  init_kwargs={"wandb": {"name": Path(output_dir).name}})
    set_seed(settings.seed)
    return Run(accelerator, resume_from, claimed)


def restore(checkpoint: Path, optimizer, scheduler, log: RunLog) -> tuple[Position, dict]:
    """Load a checkpoint's optimizer, scheduler and RNG state; drop the log rows after it; its position and the
    rest of its trainer state."""
    state, saved = load_training_state(checkpoint)
    unknown = sorted(set(state["position"]) - {field.name for field in fields(Position)})
    if unknown:
        raise MTDNNError(f"{checkpoint / STATE_FILE}: `position` holds `{unknown[0]}`, which no mtdnn position has; it "
                         f"cannot be resumed from. {REFUSAL_HINT}")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    restore_rng(saved["rng"])
    at = Position(**state["position"])
    log.truncate_after(at.step)
    logger.info("resuming from %s (step %d, epoch %d, batch %d)", checkpoint, at.step, at.epoch, at.batch_in_epoch)
    return at, state


def save_step(accelerator, output_dir: Path, at: Position, write_model: Callable[[Path], None], state: dict,
              optimizer, scheduler, keep: int, is_best: bool = False) -> Path:
    """Write `checkpoints/step-N` (main process), point `last` at it, and let every process go on once it is."""
    checkpoint = Path(output_dir) / CHECKPOINTS / f"step-{at.step}"
    if accelerator.is_main_process:
        write_checkpoint(checkpoint, write_model, {**state, "position": asdict(at)}, optimizer, scheduler)
        publish(output_dir, checkpoint, keep, is_best)
    accelerator.wait_for_everyone()
    return checkpoint


class StepLoss(NamedTuple):
    loss: torch.Tensor  # this process's mean loss over its share of the batch
    weight: float  # its weight in the batch mean (`process_share`)
    examples: int  # examples in the whole (global) batch
    fields: dict  # what the log row says about the batch besides its loss (its task)


class Stage(Protocol):
    """What the loop drives; each method is called on every process."""

    def epoch_batches(self, epoch: int) -> list:
        """The global batches of an epoch, in order: a pure function of the seed and `epoch`."""

    def loss(self, batch, epoch: int, index: int) -> StepLoss:
        """The loss of this process's share of batch `index` of `epoch`."""

    def after_update(self, at: Position, total_updates: int) -> bool:
        """Evaluate or save as configured after an update but the last; whether the run ends here (early
        stopping, at a checkpoint of its own)."""

    def after_epoch(self, at: Position, total_updates: int) -> bool:
        """What an epoch's end (or the run's) calls for; whether the run ends here."""

    def save(self, at: Position) -> Path:
        """A resumable checkpoint, now (a signal has arrived)."""


def run_loop(accelerator, model, optimizer, scheduler, stage: Stage, at: Position, settings, log: RunLog,
             updates: tuple[int, int], desc: str, skip_nonfinite: bool = False) -> None:
    """Train from `at` until `updates` = (total updates, epochs) are done, or a signal stops the run at a
    checkpoint (StoppedBySignal). `at` is advanced in place."""
    total_updates, epochs = updates
    progress = tqdm(total=total_updates, initial=at.step, desc=desc, disable=not accelerator.is_local_main_process)
    signals, examples, started = SignalCatcher(), 0, time.perf_counter()
    stop_requested = False  # a signal seen by any process, agreed at a batch and acted on at the next update
    model.train()
    try:
        while at.step < total_updates and at.epoch < epochs:
            batches = stage.epoch_batches(at.epoch)
            usable = whole_windows(len(batches), settings.gradient_accumulation_steps)
            while at.batch_in_epoch < usable and at.step < total_updates:
                index = at.batch_in_epoch
                at.batch_in_epoch += 1
                with accelerator.accumulate(model):
                    step = stage.loss(batches[index], at.epoch, index)
                    finite, signalled = signals.step_flags(accelerator, step.loss)
                    stop_requested = stop_requested or signalled
                    if not finite:
                        skip_or_stop(step, at, log.path.parent, skip_nonfinite)
                        optimizer.zero_grad()
                        continue
                    apply_gradients(accelerator, model, optimizer, step.loss * step.weight, settings.max_grad_norm)
                examples += step.examples
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                at.step += 1
                speed = examples / (time.perf_counter() - started)
                progress.update(1)
                progress.set_postfix(loss=f"{step.loss.item():.4f}", ex_per_s=f"{speed:.0f}", **step.fields)
                if at.step % settings.log_every_steps == 0:
                    log.write({"type": "train", "epoch": at.epoch, "step": at.step, **step.fields,
                               "loss": step.loss.item(), "learning_rate": scheduler.get_last_lr()[0],
                               "examples_per_second": speed})
                if at.step < total_updates and stage.after_update(at, total_updates):
                    return
                # One process acts on its own signal at once; several agree on it at their next batch's flags.
                if at.step < total_updates and (stop_requested or (
                        accelerator.num_processes == 1 and signals.received is not None)):
                    raise StoppedBySignal(signals.received or signal.SIGTERM, stage.save(at))
            if at.batch_in_epoch == usable:
                at.epoch, at.batch_in_epoch = at.epoch + 1, 0
            if stage.after_epoch(at, total_updates):
                return
    finally:
        signals.restore()
        progress.close()


def skip_or_stop(step: StepLoss, at: Position, output_dir: Path, skip_nonfinite: bool) -> None:
    """A batch whose loss is NaN or infinite on some process: skipped if the settings allow, else the run stops."""
    where = f" of task `{step.fields['task']}`" if "task" in step.fields else ""
    if not skip_nonfinite:
        raise MTDNNError(
            f"the loss{where} is {step.loss.item()} at step {at.step + 1} (epoch {at.epoch + 1}); the run stopped "
            f"and the last checkpoint in {output_dir} is intact. Lower train.learning_rate"
            + (", check that task's labels, or set train.skip_nonfinite_batches=true." if where else "."))
    logger.warning("skipping a batch%s: non-finite loss %s", where, step.loss.item())
