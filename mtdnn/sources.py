"""Raw examples of one task split, from a classic GLUE directory, the Hugging Face hub, or local files.

Every source yields the same columns: `idx`, `text_a`, `text_b` (pairs), `label` (labelled splits);
ranking tasks are grouped into `text_a` (query), `candidates` and `label` (the positive's position).
Local files are read by mtdnn/data_files.py and their cells checked by mtdnn/source_columns.py (a train or dev
split needs a label on every row); ranking groups are formed by mtdnn/ranking_groups.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from mtdnn.data_files import read_glue_tsv, read_local_file
from mtdnn.errors import MTDNNError
from mtdnn.ranking_groups import expand_candidate_lists, group_candidates
from mtdnn.source_columns import hub_columns, records_to_columns
from mtdnn.tasks import TaskSpec


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


def _load_hub(task: TaskSpec, split: str) -> datasets.Dataset:
    hub_split = task.splits[split]
    try:
        return datasets.load_dataset(task.hub_dataset, task.hub_config, split=hub_split)
    except Exception as error:  # noqa: BLE001 - any hub/network failure becomes one clear message below
        raise ConnectionError(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error


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
        columns = records_to_columns(records, task, task.text_columns, task.label_column, task.index_column,
                                     str(path), split)
    elif glue_path is not None:
        records = read_glue_tsv(glue_path, task.glue)
        columns = records_to_columns(records, task, task.glue.text_columns, task.glue.label_column,
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
