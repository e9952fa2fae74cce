"""Tokenised task data: tokenise each split once (cached on disk with `datasets`), pad per batch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from mtdnn.config import DataSettings
from mtdnn.sources import glue_dir_from, glue_file, load_split
from mtdnn.tasks import TaskSpec

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bump when the cached columns change, so that old caches are not read."""


@dataclass
class TaskData:
    """One split of one task, tokenised: ragged token lists, padded only when a batch is collated."""

    task: TaskSpec
    split: str
    idx: list[int]
    input_ids: list  # per example: list[int]; ranking: list[list[int]] (one per candidate)
    token_type_ids: list | None
    labels: list | None
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def lengths(self) -> np.ndarray:
        """Tokens per example (ranking: candidates x longest candidate), to bucket batches by length."""
        if self.task.type == "ranking":
            return np.array([len(group) * max(len(ids) for ids in group) for group in self.input_ids])
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def collate(self, indices) -> dict[str, torch.Tensor]:
        """Pad the examples at `indices` to the longest of them; ranking pads groups to the largest group."""
        if self.task.type == "ranking":
            return self._collate_groups(indices)
        sequences = [self.input_ids[i] for i in indices]
        types = [self.token_type_ids[i] for i in indices] if self.token_type_ids is not None else None
        batch = _pad(sequences, types, self.pad_token_id)
        if self.labels is not None:
            floats = self.task.type in ("regression", "multi_label_classification")  # multi-hot: (batch, num_labels)
            batch["labels"] = torch.tensor([self.labels[i] for i in indices],
                                           dtype=torch.float32 if floats else torch.long)
        return batch

    def _collate_groups(self, indices) -> dict[str, torch.Tensor]:
        groups = [self.input_ids[i] for i in indices]
        group_size = max(len(group) for group in groups)
        sequences, types, present = [], [], []
        for i, group in zip(indices, groups):
            group_types = self.token_type_ids[i] if self.token_type_ids is not None else [None] * len(group)
            for slot in range(group_size):
                real = slot < len(group)
                sequences.append(group[slot] if real else group[0][:2])
                types.append((group_types[slot] if real else [0, 0]) if self.token_type_ids is not None else None)
                present.append(real)
        batch = _pad(sequences, types if self.token_type_ids is not None else None, self.pad_token_id)
        batch = {key: value.view(len(groups), group_size, -1) for key, value in batch.items()}
        batch["candidate_mask"] = torch.tensor(present).view(len(groups), group_size)  # (batch, group_size)
        if self.labels is not None:
            batch["labels"] = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)
        return batch


def _pad(sequences: list[list[int]], types: list[list[int]] | None, pad_token_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)  # (batch, seq)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    token_type_ids = torch.zeros((len(sequences), longest), dtype=torch.long) if types is not None else None
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        if token_type_ids is not None:
            token_type_ids[row, : len(ids)] = torch.tensor(types[row])
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return batch


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


def _tokenize(columns: dict[str, list], task: TaskSpec, tokenizer, max_seq_length: int) -> dict[str, list]:
    if task.type == "ranking":
        queries = [q for q, group in zip(columns["text_a"], columns["candidates"]) for _ in group]
        candidates = [c for group in columns["candidates"] for c in group]
        encoded = tokenizer(queries, candidates, truncation=True, max_length=max_seq_length)
        tokens = {"input_ids": [], "token_type_ids": []}
        start = 0
        for group in columns["candidates"]:
            for key in tokens:
                if key in encoded:
                    tokens[key].append(encoded[key][start : start + len(group)])
            start += len(group)
    else:
        encoded = tokenizer(columns["text_a"], columns.get("text_b"), truncation=True, max_length=max_seq_length)
        tokens = {key: encoded[key] for key in ("input_ids", "token_type_ids") if key in encoded}
    out = {"idx": columns["idx"], **{k: v for k, v in tokens.items() if v}}
    if "label" in columns:
        out["label"] = columns["label"]
    return out


def load_task_data(task: TaskSpec, split: str, tokenizer, settings: DataSettings,
                   max_samples: int | None = None) -> TaskData:
    """Read, tokenise and cache one split; later calls with the same inputs read the cache."""
    glue_dir = glue_dir_from(settings.glue_dir)
    key = hashlib.sha256(json.dumps([
        CACHE_VERSION, task.to_dict(), split, _source_fingerprint(task, split, glue_dir),
        _tokenizer_fingerprint(tokenizer), settings.max_seq_length, max_samples,
    ], sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_root(settings) / f"{task.name}-{split}-{key}"
    if path.is_dir():
        dataset = datasets.load_from_disk(str(path))
    else:
        columns = load_split(task, split, glue_dir)
        if max_samples is not None:
            columns = {name: values[:max_samples] for name, values in columns.items()}
        dataset = datasets.Dataset.from_dict(_tokenize(columns, task, tokenizer, settings.max_seq_length))
        _save_atomically(dataset, path)
    columns = dataset.to_dict()
    return TaskData(
        task=task, split=split, idx=columns["idx"], input_ids=columns["input_ids"],
        token_type_ids=columns.get("token_type_ids"), labels=columns.get("label"),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )


def _save_atomically(dataset: datasets.Dataset, path: Path) -> None:
    """Write the cache beside its final place and rename it in, so a crash never leaves half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        dataset.save_to_disk(str(staging / "data"))
        os.replace(staging / "data", path)
    except OSError as error:
        logger.warning("could not cache tokenised data at %s (%s); continuing without a cache", path, error)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
