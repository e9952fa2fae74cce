"""Random training subsets written as task files, so that every arm of an experiment reads the same rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mtdnn.sources import glue_dir_from, load_split
from mtdnn.tasks import resolve_tasks


def subset_size(fraction: float, total: int) -> int:
    """Examples in a `fraction` of `total` (at least one)."""
    return max(1, min(total, round(fraction * total)))


def write_subset(entry: str | dict, size: int | None, seed: int, directory: Path) -> dict:
    """A task entry whose training set is `size` examples drawn at random (by `seed`) from the task's own.

    The train subset and the complete dev set are written as JSON-lines files with the task's own column
    names and the entry points `data_files` at them, so mtdnn and the Trainer reference read the same rows.
    Works for any task with train and dev splits (GLUE name or own task); `size=None` keeps all rows.
    """
    task = next(iter(resolve_tasks([entry]).values()))
    if task.type == "ranking":
        raise ValueError(f"task {task.name}: subsets of ranking tasks (grouped rows) are not supported")
    glue_dir = glue_dir_from(None)
    files = {}
    for split in ("train", "dev"):
        label = f"n{size}-s{seed}" if split == "train" and size is not None else "all"
        path = Path(directory) / f"{task.name}-{split}-{label}.jsonl"
        files[split] = str(path.resolve())
        if path.is_file():  # deterministic content; rewriting would only change its mtime (and the data cache key)
            continue
        columns = load_split(task, split, glue_dir)
        rows = range(len(columns["idx"]))
        if split == "train" and size is not None:
            if size > len(rows):
                raise ValueError(f"task {task.name}: asked for {size} training examples, it has {len(rows)}")
            rows = sorted(np.random.default_rng(seed).choice(len(rows), size=size, replace=False).tolist())
        names = [task.index_column or "idx", *task.text_columns]
        sources = ["idx", "text_a", "text_b"][: len(names)]
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        with open(staging, "w") as handle:
            for row in rows:
                record = {name: columns[source][row] for name, source in zip(names, sources)}
                if "label" in columns:
                    record[task.label_column] = columns["label"][row]
                handle.write(json.dumps(record) + "\n")
        os.replace(staging, path)
    base = entry if isinstance(entry, dict) else {"name": entry}
    return {**base, "data_files": files}
