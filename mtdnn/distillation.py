"""Knowledge distillation for multi-task learning (MT-DNN-KD, Liu et al. 2019b): soft targets from teachers.

`mtdnn distill CONFIG --teachers A,B` runs every teacher checkpoint (any mtdnn checkpoints with a head for the
task) over each task's training split, stores their logits per task in `<output_dir>/soft_targets/<task>.safetensors`
(`idx`: the examples' ids; `logits`: (teachers, examples, outputs)), then trains the student of CONFIG with
`train.distillation.soft_targets` pointing there. The soft-target loss itself is `losses.distillation_loss`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from mtdnn.checkpoint import load_checkpoint
from mtdnn.config import Config
from mtdnn.data import load_task_data
from mtdnn.errors import MTDNNError
from mtdnn.processes import process_state
from mtdnn.run_dir import RunDirectory
from mtdnn.run_state import step_checkpoints
from mtdnn.soft_targets import SOFT_TARGETS, soft_target_file, up_to_date, write_soft_targets
from mtdnn.tasks import TaskSpec, resolve_tasks
from mtdnn.training import train

logger = logging.getLogger(__name__)

def _aligned(idx: list, logits: np.ndarray, order: list, teacher: str) -> np.ndarray:
    """`logits` rows (in `idx` order) in the order of `order` (another teacher's `idx`)."""
    row_of = {value: row for row, value in enumerate(idx)}
    missing = [value for value in order if value not in row_of]
    if missing or len(row_of) != len(idx):
        raise MTDNNError(f"teacher {teacher} sees other training examples (ids) than the first teacher "
                         f"(e.g. idx {missing[:1] or 'duplicated'}); give all teachers the same data.")
    return logits[[row_of[value] for value in order]]


@torch.inference_mode()
def teacher_logits(teachers: list[Path], tasks: dict[str, TaskSpec],
                   config: Config) -> dict[str, tuple[list, np.ndarray]]:
    """For each task some teacher has a head for: the training examples' ids and the logits of every teacher
    with that head, (teachers, examples, outputs); padded ranking candidates are -inf. Under `accelerate launch`
    the processes share each pass (each on its own device) and every process gets the whole result."""
    from mtdnn.evaluation import task_logits

    state = process_state()
    device = state.device
    found: dict[str, list[tuple[list, np.ndarray, str]]] = {}
    for directory in teachers:
        model, tokenizer, teacher_config, _ = load_checkpoint(directory)
        model.to(device)
        data_settings = dataclasses.replace(config.data, max_seq_length=teacher_config.data.max_seq_length)
        for name, task in tasks.items():
            if task.head_name not in model.heads:
                continue
            head = model.head_task(task.head_name)
            if (head.type, head.num_labels) != (task.type, task.num_labels):
                raise MTDNNError(f"teacher {directory}: its head `{head.name}` is {head.type} with {head.num_labels} "
                                 f"output(s), but task `{name}` is {task.type} with {task.num_labels}.")
            data = load_task_data(task, "train", tokenizer, data_settings, config.data.train_cap(name))
            logits = task_logits(model, data, config.train.eval_batch_size, device, state.process_index,
                                 state.num_processes)
            found.setdefault(name, []).append((data.idx, logits, str(directory)))
        del model
    result = {}
    for name, runs in found.items():
        order = runs[0][0]
        width = max(logits.shape[1] for _, logits, _ in runs)
        stacked = np.full((len(runs), len(order), width), -np.inf, dtype=np.float32)
        for k, (idx, logits, teacher) in enumerate(runs):
            stacked[k, :, : logits.shape[1]] = _aligned(idx, logits, order, teacher)
        result[name] = (order, stacked)
    return result


def distill(config: Config, teachers: list[str | Path], overwrite: bool = False, resume: bool = False) -> Path:
    """Build (or reuse) the soft targets of the teachers' ensemble, then train the student of `config` on them."""
    teachers = [Path(t).expanduser().resolve() for t in teachers]
    if not teachers:
        raise MTDNNError("mtdnn distill needs at least one teacher checkpoint (--teachers A,B,...).")
    directory = Path(config.output_dir) / SOFT_TARGETS
    resolved = resolve_tasks(config.tasks)
    config.data.check_train_caps(resolved)  # a misspelt cap: before the teachers' passes over the data, not after
    config.train.distillation.soft_targets = str(directory)
    run = RunDirectory(config.output_dir)  # claimed (cleared on --overwrite) before the soft targets are written
    state = process_state()
    if state.is_main_process:
        run.claim(config.to_dict(), overwrite, resume, bool(step_checkpoints(Path(config.output_dir))))
    state.wait_for_everyone()  # every process judges the soft targets after the claim has cleared or kept them
    tasks = {name: task for name, task in resolved.items() if "train" in (task.data_files or task.splits)}
    stale = {name: task for name, task in tasks.items()
             if overwrite or not up_to_date(soft_target_file(directory, name), teachers)}
    if stale:
        for name, (idx, logits) in teacher_logits(teachers, stale, config).items():
            if state.is_main_process:
                logger.info("soft targets for %s: %d examples from %d teacher(s)", name, len(idx), logits.shape[0])
                write_soft_targets(directory, stale[name], idx, logits, teachers)
    state.wait_for_everyone()  # written before any process reads them
    if not any(soft_target_file(directory, name).is_file() for name in tasks):
        raise MTDNNError(f"none of the teachers has a head for any of the tasks {', '.join(tasks)}.")
    return train(config, overwrite=overwrite, resume=resume, run=run)
