"""Soft targets of distillation: the teachers' logits for a task's training examples, one safetensors file per task
(`idx`: the examples' ids; `logits`: (teachers, examples, outputs); metadata: the teachers), read by the objective."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mtdnn.data import TaskData
from mtdnn.errors import MTDNNError
from mtdnn.tasks import TaskSpec, path_for

SOFT_TARGETS = "soft_targets"
"""Directory of the soft-target files inside a distillation run."""


def soft_target_file(directory: str | Path, task_name: str) -> Path:
    return path_for(directory, task_name, ".safetensors")


def write_soft_targets(directory: Path, task: TaskSpec, idx: list, logits: np.ndarray, teachers: list[Path]) -> Path:
    path = soft_target_file(directory, task.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"task": task.name, "type": task.type, "teachers": json.dumps([str(t) for t in teachers])}
    tensors = {"idx": torch.tensor(idx, dtype=torch.int64), "logits": torch.from_numpy(np.ascontiguousarray(logits))}
    save_file(tensors, path, metadata=metadata)
    return path


def read_soft_targets(directory: str | Path, data: TaskData) -> torch.Tensor | None:
    """The teachers' logits for the examples of `data`, in its order, (teachers, examples, outputs); None when
    `directory` has no file for the task."""
    path = soft_target_file(directory, data.task.name)
    if not path.is_file():
        return None
    with safe_open(path, framework="pt") as handle:
        idx, logits = handle.get_tensor("idx").tolist(), handle.get_tensor("logits")
    row_of = {value: row for row, value in enumerate(idx)}
    missing = [value for value in data.idx if value not in row_of]
    if missing:
        raise MTDNNError(f"{path} has no soft targets for example idx {missing[0]} of task `{data.task.name}` "
                         f"({len(missing)} missing); rebuild them with `mtdnn distill` for this data.")
    return logits[:, [row_of[value] for value in data.idx]]


def up_to_date(path: Path, teachers: list[Path]) -> bool:
    if not path.is_file():
        return False
    with safe_open(path, framework="pt") as handle:
        return json.loads(handle.metadata().get("teachers", "[]")) == [str(t) for t in teachers]
