"""Running a model over a task split: logits, predictions and GLUE metrics, across processes if any."""

from __future__ import annotations

import numpy as np
import torch
from accelerate.utils import gather_object
from scipy.special import expit
from tqdm.auto import tqdm

from mtdnn.data import TaskData
from mtdnn.errors import MTDNNError
from mtdnn.metrics import compute_metrics
from mtdnn.processes import process_state
from mtdnn.tasks import TaskSpec


def inference_device(requested: str | None = None) -> torch.device:
    """Where to evaluate and predict: `requested` (`--device`: cpu, cuda, cuda:1, mps, ...), else the device
    accelerate picks for this process (its GPU under `accelerate launch`, the GPU/MPS/... if any, else the CPU)."""
    if requested is None:
        return process_state().device
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise MTDNNError(f"--device {requested!r} is not a device; use cpu, cuda, cuda:N or mps.") from None
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    if device.type != "cpu" and not (hasattr(backend, "is_available") and backend.is_available()):
        name = "CUDA GPU" if device.type == "cuda" else f"{device.type} device"
        raise MTDNNError(f"--device {requested}: no {name} is available here; use --device cpu or leave it out.")
    return device


@torch.inference_mode()
def task_logits(model, data: TaskData, batch_size: int, device: torch.device | str = "cpu",
                process_index: int = 0, num_processes: int = 1, progress: bool = False) -> np.ndarray:
    """Logits for every example of `data`, in file order. (examples, num_outputs or group_size)

    Examples are batched longest first so that each batch pads little; with several processes each
    evaluates every `num_processes`-th batch and the results are gathered without duplicates. `progress`: a
    progress bar, where stderr is a terminal.
    """
    order = np.argsort(-data.lengths(), kind="stable")
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    rows: list[tuple[int, np.ndarray]] = []
    was_training = model.training
    model.eval()
    mine = batches[process_index::num_processes]  # whole batches per process: same padding as one
    for positions in tqdm(mine, desc=f"{data.task.name} {data.split}", unit="batch", leave=False,
                          disable=None if progress else True):  # None: shown on a terminal, not in a log file
        batch = {k: v.to(device) for k, v in data.collate(positions).items() if k != "labels"}
        logits = model(data.task.head_name, **batch).logits.float().cpu().numpy()
        rows.extend(zip(positions.tolist(), logits))
    model.train(was_training)
    if num_processes > 1:
        rows = gather_object(rows)
    width = max(len(logit) for _, logit in rows)
    out = np.full((len(data), width), -np.inf, dtype=np.float32)
    for position, logit in rows:
        out[position, : len(logit)] = logit
    return out


def predictions_from_logits(task_type: str, logits: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class ids (classification), values (regression), the chosen candidate's position (ranking), or a
    multi-hot row per example (multi-label: the labels whose probability is at least `threshold`)."""
    if task_type == "regression":
        return logits[:, 0]
    if task_type == "multi_label_classification":
        return (expit(logits) >= threshold).astype(np.int64)  # (examples, num_labels)
    return logits.argmax(axis=-1)


def prediction_texts(task: TaskSpec, predictions: np.ndarray) -> list[str]:
    """Predictions as `mtdnn predict` writes them: label names (multi-label: joined by the task's delimiter,
    empty for none), values with 6 decimals (regression), candidate positions (ranking)."""
    if task.type == "multi_label_classification":
        return [task.label_delimiter.join(name for name, on in zip(task.label_names, row) if on)
                for row in predictions]
    if task.type.endswith("classification"):
        return [task.label_names[int(prediction)] for prediction in predictions]
    if task.type == "regression":
        return [f"{float(prediction):.6f}" for prediction in predictions]
    return [str(prediction) for prediction in predictions]


def evaluate_task(model, data: TaskData, batch_size: int, device="cpu", process_index: int = 0,
                  num_processes: int = 1, progress: bool = False) -> dict[str, float]:
    """The task's GLUE metrics on a labelled split."""
    logits = task_logits(model, data, batch_size, device, process_index, num_processes, progress)
    predictions = predictions_from_logits(data.task.type, logits, data.task.threshold)
    return compute_metrics(data.task.metrics, data.task.type, predictions, np.asarray(data.labels))
