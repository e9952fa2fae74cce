"""The standard columns of a split (`idx`, `text_a`, [`text_b`], [`label`]) from the records of a file or from a
hub dataset: every cell checked, every label encoded as the id (or multi-hot list) the model trains on."""

from __future__ import annotations

import contextlib
import json
import math

import datasets

from mtdnn.data_files import LINE
from mtdnn.errors import MTDNNError
from mtdnn.tasks import MULTI_LABEL, TaskSpec

LABELLED_SPLITS = ("train", "dev")
"""Splits used for training and evaluation: every row needs a label. Test splits may be unlabeled."""


def encode_label(raw, task: TaskSpec, where: str):
    """Map a raw label (name, id, or number) to the id the hub version uses; None for unlabeled.
    Multi-label: a list of names (or ids), or names joined by the task's delimiter, to a multi-hot list."""
    if task.type == MULTI_LABEL and raw is not None:
        return encode_multi_label(raw, task, where)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if task.type == "regression":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise MTDNNError(f"{where}: regression target {raw!r} of task `{task.name}` is not a finite number.")
        return value
    if task.type == "ranking":
        text = str(raw).strip().lower()
        names = [n.lower() for n in task.label_names or ()]
        if text in ("1", "true") or (len(names) == 2 and text == names[1]):
            return 1
        if text in ("0", "false") or (len(names) == 2 and text == names[0]):
            return 0
        raise MTDNNError(f"{where}: ranking label {raw!r} of task `{task.name}` must be 1 (positive) or 0.")
    text = str(raw).strip()
    if text in task.label_names:
        return task.label_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(task.label_names):
        return int(text)
    if isinstance(raw, int) and raw == -1:  # the hub marks unlabeled test rows with -1
        return None
    raise MTDNNError(
        f"{where}: unknown label {raw!r} for task `{task.name}`; expected one of {list(task.label_names)} "
        f"or an id in 0..{len(task.label_names) - 1}."
    )


def encode_multi_label(raw, task: TaskSpec, where: str) -> list[int]:
    """A multi-hot list over `task.label_names`; an empty list or an empty cell means no label applies."""
    if isinstance(raw, str):
        names = [name.strip() for name in raw.split(task.label_delimiter) if name.strip()]
    elif isinstance(raw, (list, tuple)):
        names = raw
    else:
        raise MTDNNError(f"{where}: the label of multi-label task `{task.name}` must be a list of label names or "
                         f"names joined by {task.label_delimiter!r}, got {raw!r}.")
    if len(set(map(repr, names))) < len(names):
        raise MTDNNError(f"{where}: the label {raw!r} of multi-label task `{task.name}` repeats a label; give each "
                         f"label name (or id) once, not a 0/1 vector.")
    hot = [0] * len(task.label_names)
    for name in names:
        if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(hot):
            hot[name] = 1
        elif isinstance(name, str) and name.strip() in task.label_names:
            hot[task.label_names.index(name.strip())] = 1
        else:
            raise MTDNNError(f"{where}: unknown label {name!r} for task `{task.name}`; expected names from "
                             f"{list(task.label_names)} (separated by {task.label_delimiter!r} in a text column).")
    return hot


def _example_id(value, row_number: int, where: str, column: str | None) -> int:
    """The id in the row's index column; the row's number where there is none (or the cell is empty)."""
    if value is None or value == "":
        return row_number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    raise MTDNNError(f"{where}: the index column {column!r} holds {value!r}, not a whole number; the ids in it name "
                     "rows in prediction files. Give whole numbers, leave the cell empty to number the row, or set "
                     "the task's `index_column` to another column (null: number every row).")


def _text(value, where: str, column: str) -> str:
    """A text cell as a string: a number is written out; null, true/false, a list or an object are refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise MTDNNError(f"{where}: the text column {column!r} holds {json.dumps(value)}, not text; give a string.")


def records_to_columns(records: list[dict], task: TaskSpec, text_columns, label_column, index_column,
                       source: str, split: str) -> dict[str, list]:
    """The standard columns of records read from `source` (a local file, or a GLUE TSV with its own column
    names); `LINE` in a record, where the reader set it, names the line in error messages."""
    if not records:
        raise MTDNNError(f"{source}: the split is empty; task `{task.name}` needs at least one example.")
    present = [key for key in records[0] if key != LINE]
    missing = [c for c in text_columns if c not in records[0]]
    if missing:
        raise MTDNNError(f"{source}: no column {missing[0]!r} (task `{task.name}`); columns are {present}.")
    labelled = label_column is not None and any(label_column in record for record in records)
    if split in LABELLED_SPLITS and not labelled:
        raise MTDNNError(f"{source}: no label column {label_column!r}; the `{split}` split of task `{task.name}` is "
                         f"used for training or evaluation, so every row needs a label. The columns are {present}: "
                         "add the labels, or set the task's `label_column` to the column that holds them.")
    names = ("text_a", "text_b")[: len(text_columns)]
    columns: dict[str, list] = {"idx": [], **{name: [] for name in names}}
    wanted = [*text_columns, label_column] if labelled else list(text_columns)
    labels = []
    for row_number, record in enumerate(records):
        where = f"{source}, line {record[LINE]}" if LINE in record else f"{source}, row {row_number + 1}"
        absent = next((column for column in wanted if column not in record), None)
        if absent is not None:
            role = "the label" if absent == label_column else "a text column"
            raise MTDNNError(f"{where}: no key {absent!r} ({role} of task `{task.name}`); this row has the keys "
                             f"{[key for key in record if key != LINE]}. Give every row the same keys.")
        columns["idx"].append(_example_id(record.get(index_column) if index_column else None, row_number, where,
                                          index_column))
        for name, column in zip(names, text_columns):
            columns[name].append(_text(record[column], where, column))
        if labelled:
            labels.append(encode_label(record[label_column], task, where))
    if labelled and any(label is not None for label in labels):
        columns["label"] = _every_label(labels, records, task, label_column, source)
    elif split in LABELLED_SPLITS:
        raise MTDNNError(f"{source}: every {label_column!r} value is empty, so the `{split}` split of task "
                         f"`{task.name}` has no labels; a split used for training or evaluation needs a label on "
                         "every row (test splits may be unlabeled). Fill in the labels, or give the file as the "
                         "`test` split.")
    return columns


def _every_label(labels: list, records: list[dict], task: TaskSpec, label_column: str, source: str) -> list:
    """The labels of a labelled split, where no row may lack one."""
    if any(label is None for label in labels):
        row = labels.index(None)
        line = f"line {records[row][LINE]}" if LINE in records[row] else f"row {row + 1}"
        raise MTDNNError(f"{source}, {line}: missing label ({label_column!r} is empty) for task `{task.name}`; label "
                         "every row, or none (an unlabeled test split).")
    return labels


def hub_columns(dataset: datasets.Dataset, task: TaskSpec, split: str, source: str) -> datasets.Dataset:
    """A hub split's standard columns, computed batch by batch with `datasets.map`: the data stays in Arrow (a
    Python list per example would cost gigabytes for QQP or MNLI)."""
    if len(dataset) == 0:
        raise MTDNNError(f"{source}: the split is empty; task `{task.name}` needs at least one example.")
    missing = [column for column in task.text_columns if column not in dataset.column_names]
    if missing:
        raise MTDNNError(f"{source}: no column {missing[0]!r} (task `{task.name}`); columns are "
                         f"{dataset.column_names}.")
    labelled = task.label_column in dataset.column_names
    names = ("text_a", "text_b")[: len(task.text_columns)]

    def convert(batch: dict[str, list], rows: list[int]) -> dict[str, list]:
        index = batch.get(task.index_column) if task.index_column else None
        out = {"idx": [_example_id(index[i] if index else None, row, f"{source}, row {row + 1}", task.index_column)
                       for i, row in enumerate(rows)]}
        for name, column in zip(names, task.text_columns):
            out[name] = [_text(value, f"{source}, row {row + 1}", column) for value, row in zip(batch[column], rows)]
        if labelled:
            out["label"] = [encode_label(value, task, f"{source}, row {row + 1}")
                            for value, row in zip(batch[task.label_column], rows)]
        return out

    columns = dataset.map(convert, batched=True, with_indices=True, remove_columns=dataset.column_names,
                          desc=f"reading {task.name} {split}")
    unlabelled = columns.data.column("label").null_count if labelled else len(columns)
    if unlabelled == len(columns):  # a test split (the hub marks its rows -1)
        if split in LABELLED_SPLITS:
            raise MTDNNError(f"{source}: no labels; the `{split}` split of task `{task.name}` is used for training or "
                             "evaluation, so every row needs a label.")
        return columns.remove_columns("label") if labelled else columns
    if unlabelled:
        raise MTDNNError(f"{source}: {unlabelled} rows have no label for task `{task.name}`; label every row, or "
                         "none (an unlabeled test split).")
    return columns
