"""GLUE leaderboard submission files: one `index<TAB>prediction` file per task and a `submission.zip`.

The leaderboard reads label ids (0/1) for some tasks and label names for others, and STS-B scores in [0, 5];
those facts of its format live here, next to their only use. Every GLUE task is accounted for: a task
without a trained head or without test data is listed with the reason, never silently left out.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtdnn.config import DataSettings
from mtdnn.data import load_task_data
from mtdnn.errors import MTDNNError
from mtdnn.evaluation import task_logits
from mtdnn.model import MTDNNModel
from mtdnn.sources import glue_dir_from, load_split
from mtdnn.tasks import GLUE_TASKS, TaskSpec

logger = logging.getLogger(__name__)

LABEL_IDS = frozenset({"cola", "sst2", "mrpc", "qqp", "wnli"})
"""Tasks the leaderboard reads as 0/1 label ids; the others (MNLI, AX, QNLI, RTE) as label names."""
SCORE_RANGE = (0.0, 5.0)
"""STS-B similarity range: regression predictions are clipped to it."""
ZIP_NAME = "submission.zip"


@dataclass
class SubmissionFile:
    task: str
    file: str
    rows: int | None
    """Rows written (header excluded); None when the file was not written."""
    status: str
    """`written`, `placeholder`, or why the file is missing."""


def format_predictions(task: TaskSpec, logits: np.ndarray) -> list[str]:
    """The leaderboard's strings for one task's logits: (examples, num_labels) or (examples, 1)."""
    if task.type == "regression":
        return [f"{value:.3f}" for value in np.clip(logits[:, 0], *SCORE_RANGE)]
    ids = logits.argmax(axis=-1)
    if task.name in LABEL_IDS:
        return [str(int(i)) for i in ids]
    return [task.label_names[int(i)] for i in ids]


def placeholder_predictions(task: TaskSpec, rows: int) -> list[str]:
    """A constant prediction (the first label, or the middle of the score range) for a task without a head."""
    if task.type == "regression":
        return [f"{sum(SCORE_RANGE) / 2:.3f}"] * rows
    return ["0" if task.name in LABEL_IDS else task.label_names[0]] * rows


def write_file(path: Path, indices: list, predictions: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "prediction"])
        writer.writerows(zip(indices, predictions))


def write_submission(model: MTDNNModel, tokenizer, data_settings: DataSettings, output_dir: str | Path,
                     batch_size: int, fill_missing: bool = False, device="cpu",
                     shares: dict[str, int | bool] | None = None) -> list[SubmissionFile]:
    """Predict every GLUE test set the model has a head for; write the files and `submission.zip`.

    With `fill_missing`, a task that has test data but no head gets a constant placeholder file (the
    leaderboard only accepts complete submissions); it is reported as `placeholder`. `shares`: this process's
    part of each pass under `accelerate launch` (`task_logits`' process_index, num_processes, progress); the main
    process alone writes.
    """
    shares = shares or {"progress": True}
    writes = shares.get("process_index", 0) == 0
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for task in (task for task in GLUE_TASKS.values() if task.submission_file):
        has_head = task.head_name in model.heads
        if not has_head and not fill_missing:
            report.append(SubmissionFile(task.name, task.submission_file, None,
                                         f"no head `{task.head_name}` in the checkpoint"))
            continue
        try:  # the full test split: max_eval_samples would cut a submission short
            if has_head:
                data = load_task_data(task, "test", tokenizer, data_settings, max_samples=None)
                logits = task_logits(model, data, batch_size, device, **shares)
                indices, predictions = data.idx, format_predictions(task, logits)
            else:  # a constant needs the row ids only, not the tokens
                indices = list(load_split(task, "test", glue_dir_from(data_settings.glue_dir))["idx"])
                predictions = placeholder_predictions(task, len(indices))
        except MTDNNError as error:
            report.append(SubmissionFile(task.name, task.submission_file, None, f"no test data: {error}"))
            continue
        if writes:
            write_file(output_dir / task.submission_file, indices, predictions)
        status = "written" if has_head else f"placeholder (no head `{task.head_name}`)"
        report.append(SubmissionFile(task.name, task.submission_file, len(indices), status))
    written = [entry for entry in report if entry.rows is not None]
    if not writes:
        return report
    with zipfile.ZipFile(output_dir / ZIP_NAME, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in written:
            archive.write(output_dir / entry.file, arcname=entry.file)
    for entry in report:
        if entry.rows is None or entry.status != "written":
            logger.warning("%s: %s", entry.file, entry.status)
    return report
