"""Raw examples of one task split, from a classic GLUE directory, the Hugging Face hub, or local files.

Every source yields the same columns: `idx`, `text_a`, `text_b` (pairs), `label` (labelled splits);
ranking tasks are grouped into `text_a` (query), `candidates` and `label` (the positive's position).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from pathlib import Path

import datasets

from mtdnn.errors import MTDNNError
from mtdnn.tasks import MULTI_LABEL, GlueFiles, TaskSpec

logger = logging.getLogger(__name__)

csv.field_size_limit(sys.maxsize)

LINE = "__line__"
"""Key under which file readers keep each record's line number, for error messages."""


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


def read_glue_tsv(path: Path, glue: GlueFiles) -> list[dict]:
    """Rows of a GLUE TSV exactly as distributed: no quote processing, BOM stripped, optional header."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    if not rows:
        raise MTDNNError(f"{path} is empty.")
    has_header = not (glue.headerless_columns and len(rows[0]) == len(glue.headerless_columns)
                      and rows[0][0] != "index")
    header = rows[0] if has_header else list(glue.headerless_columns)
    body = rows[1:] if has_header else rows
    first_line = 2 if has_header else 1
    records = []
    for offset, row in enumerate(body):
        if len(row) != len(header):
            raise MTDNNError(
                f"{path}, line {first_line + offset}: {len(row)} tab-separated fields where the header has "
                f"{len(header)}; a GLUE file must be read without quote processing and keep every row whole."
            )
        records.append({**dict(zip(header, row)), LINE: first_line + offset})
    return records


def _records_to_columns(records: list[dict], task: TaskSpec, text_columns, label_column, index_column,
                        source: str) -> dict[str, list]:
    if not records:
        raise MTDNNError(f"{source}: the split is empty; task `{task.name}` needs at least one example.")
    missing = [c for c in text_columns if c not in records[0]]
    if missing:
        raise MTDNNError(f"{source}: no column {missing[0]!r} (task `{task.name}`); columns are {list(records[0])}.")
    columns: dict[str, list] = {"idx": [], "text_a": []}
    if len(text_columns) == 2:
        columns["text_b"] = []
    labelled = label_column is not None and label_column in records[0]
    labels = []
    for row_number, record in enumerate(records):
        where = f"{source}, line {record[LINE]}" if LINE in record else f"{source}, row {row_number + 1}"
        index = record.get(index_column) if index_column else None
        columns["idx"].append(int(index) if index not in (None, "") else row_number)
        columns["text_a"].append(str(record[text_columns[0]]))
        if len(text_columns) == 2:
            columns["text_b"].append(str(record[text_columns[1]]))
        if labelled:
            labels.append(encode_label(record[label_column], task, where))
    if labelled and any(label is not None for label in labels):
        if any(label is None for label in labels):
            record = records[labels.index(None)]
            raise MTDNNError(f"{source}, line {record.get(LINE, '?')}: missing label for task `{task.name}`.")
        columns["label"] = labels
    return columns


def _read_local_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise MTDNNError(f"data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return read_glue_tsv(path, GlueFiles(files={}, text_columns=(), label_column=None))
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return [{**record, LINE: number + 2} for number, record in enumerate(csv.DictReader(handle))]
    if suffix in (".json", ".jsonl"):
        records = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        records.append({**json.loads(line), LINE: line_number})
                    except json.JSONDecodeError as error:
                        raise MTDNNError(f"{path}, line {line_number}: not valid JSON ({error.msg}).") from None
        return records
    raise MTDNNError(f"data file {path}: unsupported extension {suffix!r}; use .tsv, .csv, .json or .jsonl.")


def _load_hub(task: TaskSpec, split: str) -> list[dict]:
    hub_split = task.splits[split]
    try:
        dataset = datasets.load_dataset(task.hub_dataset, task.hub_config, split=hub_split)
    except Exception as error:  # noqa: BLE001 - any hub/network failure becomes one clear message below
        raise ConnectionError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error
    return dataset.to_list()


def load_split(task: TaskSpec, split: str, glue_dir: Path | None) -> dict[str, list]:
    """Columns (`idx`, `text_a`, [`text_b`], [`label`]) of one split of one task."""
    if split not in task.splits and not (task.data_files and split in task.data_files):
        raise MTDNNError(f"task `{task.name}` has no `{split}` split; it has {', '.join(task.splits)}.")
    glue_path = glue_file(task, split, glue_dir)
    if task.data_files:
        if split not in task.data_files:
            raise MTDNNError(f"task `{task.name}`: no file for split `{split}` in `data_files`.")
        path = Path(task.data_files[split]).expanduser()
        records = _read_local_file(path)
        if task.type == "ranking":
            records = expand_candidate_lists(records, task, str(path))
        columns = _records_to_columns(records, task, task.text_columns, task.label_column, task.index_column,
                                      str(path))
    elif glue_path is not None:
        records = read_glue_tsv(glue_path, task.glue)
        columns = _records_to_columns(records, task, task.glue.text_columns, task.glue.label_column,
                                      task.glue.index_column, str(glue_path))
    elif task.hub_dataset:
        try:
            records = _load_hub(task, split)
        except ConnectionError as error:
            raise MTDNNError(
                f"cannot load the `{split}` split of task `{task.name}`: tried {_glue_places(task, split, glue_dir)}, "
                f"then the Hugging Face hub dataset {task.hub_dataset}/{task.hub_config}, which failed ({error}). "
                "Point `data.glue_dir` at a `download_glue_data.py` directory or connect to the hub."
            ) from None
        columns = _records_to_columns(records, task, task.text_columns, task.label_column, task.index_column,
                                      f"{task.hub_dataset}/{task.hub_config}[{task.splits[split]}]")
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
