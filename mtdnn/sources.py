"""Raw examples of one task split, from a classic GLUE directory, the Hugging Face hub, or local files.

Every source yields the same columns: `idx`, `text_a`, `text_b` (pairs), `label` (labelled splits);
ranking tasks are grouped into `text_a` (query), `candidates` and `label` (the positive's position).
Local files are read by mtdnn/data_files.py; a train or dev split needs a label on every row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path

import datasets

from mtdnn.data_files import LINE, read_glue_tsv, read_local_file
from mtdnn.errors import MTDNNError
from mtdnn.tasks import MULTI_LABEL, TaskSpec

logger = logging.getLogger(__name__)


def glue_dir_from(configured: str | None) -> Path | None:
    """The GLUE directory to read: the config's `data.glue_dir`, else $GLUE_DIR, else None (hub)."""
    value = configured or os.environ.get("GLUE_DIR")
    return Path(value).expanduser() if value else None


def glue_file(task: TaskSpec, split: str, glue_dir: Path | None) -> Path | None:
    """The split's file in `glue_dir`: the first of the task's GLUE paths that exists (AX: `AX/test.tsv`, then the
    classic `diagnostic/diagnostic.tsv`); None where there is none."""
    if task.glue is None or glue_dir is None:
        return None
    return next((glue_dir / name for name in task.glue.candidates(split) if (glue_dir / name).is_file()), None)


def _glue_places(task: TaskSpec, split: str, glue_dir: Path | None) -> str:
    """Where the split's GLUE file was looked for, for error messages."""
    if glue_dir is None or task.glue is None:
        return "no GLUE directory (set `data.glue_dir` or $GLUE_DIR)"
    return " or ".join(str(glue_dir / name) for name in task.glue.candidates(split)) + " (not found)"


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


LABELLED_SPLITS = ("train", "dev")
"""Splits used for training and evaluation: every row needs a label. Test splits may be unlabeled."""


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


def _records_to_columns(records: list[dict], task: TaskSpec, text_columns, label_column, index_column,
                        source: str, split: str) -> dict[str, list]:
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


def _load_hub(task: TaskSpec, split: str) -> datasets.Dataset:
    hub_split = task.splits[split]
    try:
        return datasets.load_dataset(task.hub_dataset, task.hub_config, split=hub_split)
    except Exception as error:  # noqa: BLE001 - any hub/network failure becomes one clear message below
        raise ConnectionError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error


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


def load_split(task: TaskSpec, split: str, glue_dir: Path | None) -> dict[str, list] | datasets.Dataset:
    """Columns (`idx`, `text_a`, [`text_b`], [`label`]) of one split of one task: lists read from a file, or a
    `datasets.Dataset` from the hub."""
    if split not in task.splits and not (task.data_files and split in task.data_files):
        raise MTDNNError(f"task `{task.name}` has no `{split}` split; it has {', '.join(task.splits)}.")
    glue_path = glue_file(task, split, glue_dir)
    if task.data_files:
        if split not in task.data_files:
            raise MTDNNError(f"task `{task.name}`: no file for split `{split}` in `data_files`.")
        path = Path(task.data_files[split]).expanduser()
        records = read_local_file(path)
        if task.type == "ranking":
            records = expand_candidate_lists(records, task, str(path))
        columns = _records_to_columns(records, task, task.text_columns, task.label_column, task.index_column,
                                      str(path), split)
    elif glue_path is not None:
        records = read_glue_tsv(glue_path, task.glue)
        columns = _records_to_columns(records, task, task.glue.text_columns, task.glue.label_column,
                                      task.glue.index_column, str(glue_path), split)
    elif task.hub_dataset:
        try:
            dataset = _load_hub(task, split)
        except ConnectionError as error:
            raise MTDNNError(
                f"cannot load the `{split}` split of task `{task.name}`: tried {_glue_places(task, split, glue_dir)}, "
                f"then the Hugging Face hub dataset {task.hub_dataset}/{task.hub_config}, which failed ({error}). "
                "Point `data.glue_dir` at a `download_glue_data.py` directory or connect to the hub."
            ) from None
        columns = hub_columns(dataset, task, split, f"{task.hub_dataset}/{task.hub_config}[{task.splits[split]}]")
        if task.type == "ranking":  # grouping by query needs the whole split at once
            columns = columns.to_dict()
    elif task.glue is not None and split in task.glue.files:
        raise MTDNNError(f"cannot load the `{split}` split of task `{task.name}`: it is read from the GLUE files only: "
                         f"{_glue_places(task, split, glue_dir)}.")
    else:
        raise MTDNNError(f"task `{task.name}` has no data source: give `data_files` or `hub_dataset`.")
    if task.type == "ranking":
        columns = group_candidates(columns, task)
    return columns


def group_candidates(columns: dict[str, list], task: TaskSpec) -> dict[str, list]:
    """Ranking: one example per query, its candidates in file order, `label` = the positive's position."""
    groups: dict[str, dict] = {}
    for row, query in enumerate(columns["text_a"]):
        group = groups.setdefault(query, {"idx": columns["idx"][row], "candidates": [], "labels": []})
        group["candidates"].append(columns["text_b"][row])
        if "label" in columns:
            group["labels"].append(columns["label"][row])
    grouped: dict[str, list] = {"idx": [], "text_a": [], "candidates": []}
    if "label" in columns:
        grouped["label"] = []
    skipped = 0
    for query, group in groups.items():
        if "label" in columns and task.skip_invalid_groups and (sum(group["labels"]) != 1 or len(group["labels"]) < 2):
            skipped += 1
            continue
        grouped["idx"].append(group["idx"])
        grouped["text_a"].append(query)
        grouped["candidates"].append(group["candidates"])
        if "label" in columns:
            if sum(group["labels"]) != 1:
                raise MTDNNError(
                    f"task `{task.name}`: the query {query[:60]!r} has {sum(group['labels'])} positive candidates; "
                    "a ranking group needs exactly one."
                )
            grouped["label"].append(group["labels"].index(1))
    if skipped:
        logger.info("task %s: kept %d queries, skipped %d without exactly one positive among two or more candidates",
                    task.name, len(grouped["idx"]), skipped)
    return grouped


def expand_candidate_lists(records: list[dict], task: TaskSpec, source: str) -> list[dict]:
    """The grouped ranking format, one query per record: `{"question": q, "answer": [c0, c1, ...], "label": 2}`
    (the label is the positive's position), as one record per (query, candidate) with a 0/1 label.
    Records whose candidate column holds a single text pass through unchanged."""
    query_column, candidate_column = task.text_columns
    expanded = []
    for number, record in enumerate(records):
        candidates = record.get(candidate_column)
        if not isinstance(candidates, list):
            expanded.append(record)
            continue
        where = f"{source}, line {record.get(LINE, number + 1)}"
        positive = record.get(task.label_column)
        if not candidates:
            raise MTDNNError(f"{where}: `{candidate_column}` is an empty list; a query needs candidates.")
        if positive is not None and (isinstance(positive, bool) or not isinstance(positive, int)
                                     or not 0 <= positive < len(candidates)):
            raise MTDNNError(f"{where}: `{task.label_column}` must be the position of the positive candidate "
                             f"(0..{len(candidates) - 1}), got {positive!r}.")
        for position, candidate in enumerate(candidates):
            row = {**record, candidate_column: candidate}
            if positive is not None:
                row[task.label_column] = int(position == positive)
            if task.index_column and task.index_column not in record:
                row[task.index_column] = number
            expanded.append(row)
    return expanded
