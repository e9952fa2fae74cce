"""Per-example dev predictions of a finished run, what the bootstrap intervals resample: recomputed from the run's
final checkpoint and checked against the metrics its training logged, and the dev labels they are scored against
(stored once per task)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mtdnn.checkpoint import load_checkpoint
from mtdnn.data import load_task_data
from mtdnn.evaluation import predictions_from_logits, task_logits
from mtdnn.metrics import compute_metrics
from mtdnn.tasks import resolve_tasks


def dev_predictions(checkpoint: Path, task_name: str, metrics: dict[str, float], labels_dir: Path) -> list:
    """The predictions of `checkpoint` on `task_name`'s dev set (as its run evaluated it), in file order."""
    model, tokenizer, config, _ = load_checkpoint(checkpoint)
    task = resolve_tasks(config.tasks)[task_name]
    data = load_task_data(task, "dev", tokenizer, config.data, config.data.max_eval_samples)
    # the batch size of the run's own evaluation: the same batches, so the same logits to the last bit
    logits = task_logits(model, data, config.train.eval_batch_size)  # (examples, outputs)
    predictions = predictions_from_logits(task.type, logits, task.threshold)  # (examples,)
    labels = np.asarray(data.labels)
    again = compute_metrics(task.metrics, task.type, predictions, labels)
    if again != metrics:
        raise RuntimeError(f"{checkpoint}: its dev predictions score {again} on {task_name}, but its run logged "
                           f"{metrics}; the intervals would not be of the reported numbers")
    save_labels(labels_dir, task_name, labels.tolist())
    return predictions.tolist()


def save_labels(labels_dir: Path, task_name: str, labels: list) -> None:
    """`labels_dir/<task>.json`, written once; every later run must have scored the same labels."""
    path = Path(labels_dir) / f"{task_name}.json"
    if path.is_file():
        if json.loads(path.read_text()) != labels:
            raise RuntimeError(f"{path}: this run's {task_name} dev labels differ from those stored; its dev set "
                               "changed between runs of the same plan")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two workers may write the same file at once
    staging.write_text(json.dumps(labels))
    os.replace(staging, path)


def load_labels(labels_dir: Path) -> dict[str, np.ndarray]:
    """Task -> its dev labels, as stored by the runs."""
    return {path.stem: np.asarray(json.loads(path.read_text())) for path in sorted(Path(labels_dir).glob("*.json"))}
