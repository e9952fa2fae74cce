"""Tokenising a split once: `datasets.map(batched=True)` with the fast tokenizer, stored as flat NumPy arrays.

A cache entry is a directory of `.npy` files (token ids and segment ids as one flat array each with row offsets,
example ids, labels; ranking also the offsets of each query's candidates). Its name is a hash of everything the
arrays depend on: the task's definition, the source file (path, size, modification time), the tokenizer, the
sequence length and the sample cap, so that a change to any of them tokenises again. Processes that ask for the
same cold entry at once (the jobs of an experiment side by side) tokenise it once: one builds it under an advisory
lock beside it, the others wait for it and map what it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtdnn.config import DataSettings
from mtdnn.sources import glue_dir_from, glue_file, load_split
from mtdnn.tasks import TaskSpec, path_for

logger = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Bump when the cached arrays change, so that old caches are not read."""
ARRAYS = ("idx", "input_ids", "token_type_ids", "offsets", "labels", "groups")
"""The arrays of a cache entry (`token_type_ids`, `labels`, `groups` only where the split has them)."""
DONE = "done.json"
"""Written last: an entry without it is incomplete and is never read."""


def cache_root(settings: DataSettings) -> Path:
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    if os.environ.get("MTDNN_CACHE"):
        return Path(os.environ["MTDNN_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or Path("~/.cache/huggingface").expanduser()
    return Path(hf_home) / "mtdnn"


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # truncation/padding state changes with each call; it is not part of the vocabulary
        described = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        text = json.dumps(described, sort_keys=True)
    else:
        text = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(f"{type(tokenizer).__name__}{tokenizer.model_input_names}{text}".encode()).hexdigest()


def _source_fingerprint(task: TaskSpec, split: str, glue_dir: Path | None) -> str:
    paths = []
    if task.data_files and split in task.data_files:
        paths.append(Path(task.data_files[split]).expanduser())
    elif (path := glue_file(task, split, glue_dir)) is not None:
        paths.append(path)
    described = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths if p.is_file()]
    return json.dumps(described or [task.hub_dataset, task.hub_config, task.splits.get(split)])


def cache_key(task: TaskSpec, split: str, tokenizer, settings: DataSettings, max_samples: int | None) -> str:
    glue_dir = glue_dir_from(settings.glue_dir)
    return hashlib.sha256(json.dumps([
        CACHE_VERSION, task.to_dict(), split, _source_fingerprint(task, split, glue_dir),
        _tokenizer_fingerprint(tokenizer), settings.max_seq_length, max_samples,
    ], sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_split(task: TaskSpec, split: str, tokenizer, settings: DataSettings, max_samples: int | None) -> Path:
    """The cache entry of one split, tokenised now if it is not there yet."""
    path = path_for(cache_root(settings), f"{task.name}-{split}-{cache_key(task, split, tokenizer, settings, max_samples)}")
    if (path / DONE).is_file():
        return path
    with _building(path):
        if not (path / DONE).is_file():  # not written by another process while this one waited for the lock
            columns = load_split(task, split, glue_dir_from(settings.glue_dir))
            if not isinstance(columns, datasets.Dataset):
                columns = datasets.Dataset.from_dict(columns)
            if max_samples is not None and max_samples < len(columns):
                columns = columns.select(range(max_samples))
            _build(columns, task, split, tokenizer, settings.max_seq_length, path)
    return path


@contextlib.contextmanager
def _building(path: Path):
    """Held while `path` is built: an exclusive `flock` on a hidden file beside it (kept there), released when the
    process ends, however it ends. A complete entry is never replaced, so its readers need no lock. The file is
    opened for writing (NFS emulates `flock` with POSIX locks, which need it), else read-only (a lock file another
    user of a shared cache made). Where no lock can be had, the entry is built without one: processes then may
    tokenise it twice, each into its own staging directory (`_build` keeps the first entry published)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.parent / f".{path.name}.lock"
    try:
        try:
            handle = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            handle = os.open(lock_file, os.O_RDONLY)
    except OSError as error:
        logger.warning("building %s without a lock (%s)", path.name, error)
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:  # ENOLCK, EOPNOTSUPP, EBADF: a file system (or mount) without such locks
            logger.warning("building %s without a lock (%s)", path.name, error)
        yield
    finally:
        os.close(handle)  # releases the lock


def _tokenize(batch: dict[str, list], task: TaskSpec, tokenizer, max_seq_length: int) -> dict[str, list]:
    if task.type == "ranking":  # every (query, candidate) pair of a batch of queries in one tokenizer call
        queries = [q for q, group in zip(batch["text_a"], batch["candidates"]) for _ in group]
        candidates = [c for group in batch["candidates"] for c in group]
        encoded = tokenizer(queries, candidates, truncation=True, max_length=max_seq_length)
        bounds = np.cumsum([0] + [len(group) for group in batch["candidates"]])
        return {key: [encoded[key][start:end] for start, end in zip(bounds[:-1], bounds[1:])]
                for key in ("input_ids", "token_type_ids") if key in encoded}
    encoded = tokenizer(batch["text_a"], batch.get("text_b"), truncation=True, max_length=max_seq_length)
    return {key: encoded[key] for key in ("input_ids", "token_type_ids") if key in encoded}


def _build(columns: datasets.Dataset, task: TaskSpec, split: str, tokenizer, max_seq_length: int,
           path: Path) -> None:
    """Tokenise into a staging directory beside `path` and rename it in: a crash never leaves half an entry. The
    caller holds `_building(path)`."""
    logger.info("tokenising %s %s: %d examples into %s", task.name, split, len(columns), path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        text = [name for name in ("text_a", "text_b", "candidates") if name in columns.column_names]
        tokens = columns.map(_tokenize, batched=True, batch_size=2000, remove_columns=text,
                             fn_kwargs={"task": task, "tokenizer": tokenizer, "max_seq_length": max_seq_length},
                             cache_file_name=str(staging / "tokens.arrow"), desc=f"tokenising {task.name} {split}")
        _write_arrays(tokens.data.table, staging, task)
        del tokens
        (staging / "tokens.arrow").unlink()
        (staging / DONE).write_text(json.dumps({"task": task.name, "split": split, "examples": len(columns)}))
        _publish(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, path: Path) -> None:
    """Rename the complete `staging` to `path`, unless an entry is there complete already (published meanwhile by
    a process that held no lock either: it is kept, under its readers). An incomplete one (no DONE, e.g. left by
    an older mtdnn) is moved aside first and removed."""
    try:
        os.replace(staging, path)  # fails where `path` is a directory that is not empty
        return
    except OSError:
        if (path / DONE).is_file():
            return
    aside = path.with_name(f".{path.name}-incomplete-{os.getpid()}")
    os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(staging, path)


def _flat(column: pa.ChunkedArray, path: Path, dtype) -> np.ndarray:
    """A list<int> column as row offsets, its values written chunk by chunk to `path` (never all in memory)."""
    lengths = np.concatenate([pc.list_value_length(chunk).to_numpy(zero_copy_only=False) for chunk in column.chunks]
                             or [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(int(offsets[-1]),))
    position = 0
    for chunk in column.chunks:
        flat = pc.list_flatten(chunk).to_numpy(zero_copy_only=False)
        values[position : position + len(flat)] = flat
        position += len(flat)
    values.flush()
    return offsets


def _write_arrays(table: pa.Table, directory: Path, task: TaskSpec) -> None:
    np.save(directory / "idx.npy", table.column("idx").to_numpy().astype(np.int64))
    sequences = {name: table.column(name) for name in ("input_ids", "token_type_ids") if name in table.column_names}
    if task.type == "ranking":  # list<list<int>>: the groups' offsets, then one row per candidate
        sizes = np.concatenate([pc.list_value_length(c).to_numpy(zero_copy_only=False)
                                for c in sequences["input_ids"].chunks]).astype(np.int64)
        np.save(directory / "groups.npy", np.concatenate([[0], np.cumsum(sizes)]))
        sequences = {name: pa.chunked_array([pc.list_flatten(chunk) for chunk in column.chunks])
                     for name, column in sequences.items()}
    offsets = _flat(sequences["input_ids"], directory / "input_ids.npy", np.int32)
    if "token_type_ids" in sequences:
        _flat(sequences["token_type_ids"], directory / "token_type_ids.npy", np.int8)
    np.save(directory / "offsets.npy", offsets)
    if "label" in table.column_names:
        labels = table.column("label")
        if task.type == "multi_label_classification":  # multi-hot rows: (examples, num_labels)
            values = np.concatenate([pc.list_flatten(c).to_numpy(zero_copy_only=False) for c in labels.chunks])
            np.save(directory / "labels.npy", values.astype(np.int8).reshape(len(table), -1))
        else:
            dtype = np.float32 if task.type == "regression" else np.int64
            np.save(directory / "labels.npy", labels.to_numpy().astype(dtype))
