"""Tokenised task data as flat arrays (memory-mapped from the cache), padded only when a batch is collated.

A split of all of MNLI is one array of token ids and one of offsets, not 400k Python lists: reading it costs
the pages a batch touches, and the processes of one machine share them through the page cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtdnn.config import DataSettings
from mtdnn.tasks import TaskSpec
from mtdnn.token_cache import ARRAYS, cached_split


@dataclass(frozen=True)
class Ragged:
    """Rows of different lengths in one flat array: row i is `values[offsets[i]:offsets[i + 1]]`."""

    values: np.ndarray
    offsets: np.ndarray  # (rows + 1,)

    @classmethod
    def from_lists(cls, rows: list, dtype=np.int32) -> "Ragged":
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter((value for row in rows for value in row), dtype=dtype, count=int(lengths.sum()))
        return cls(flat, np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row] : self.offsets[row + 1]]

    def __iter__(self):
        return (self[row] for row in range(len(self)))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def tolist(self) -> list[list[int]]:
        return [self[row].tolist() for row in range(len(self))]

    def padded(self, rows: np.ndarray, pad: int, ends: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, longest) values padded with `pad`, and the mask of real positions. `ends` cuts rows short."""
        starts = self.offsets[rows]
        ends = self.offsets[rows + 1] if ends is None else ends
        lengths = ends - starts
        mask = np.arange(lengths.max(initial=1)) < lengths[:, None]  # (rows, longest)
        positions = np.where(mask, starts[:, None] + np.arange(mask.shape[1]), 0)
        return np.where(mask, self.values[positions], pad), mask


@dataclass
class TaskData:
    """One split of one task, tokenised. Ranking: `groups[i]:groups[i + 1]` are query i's candidate rows."""

    task: TaskSpec
    split: str
    idx: np.ndarray  # (examples,)
    input_ids: Ragged  # one row per example (ranking: per candidate)
    token_type_ids: Ragged | None
    labels: np.ndarray | None  # class ids, values, the positive's position (ranking), multi-hot rows (multi-label)
    pad_token_id: int
    groups: np.ndarray | None = None  # ranking: (examples + 1,) offsets into the candidate rows

    @classmethod
    def from_lists(cls, task: TaskSpec, split: str, idx: list, input_ids: list, token_type_ids: list | None,
                   labels: list | None, pad_token_id: int) -> "TaskData":
        """From token lists in memory (a few texts to predict); ranking: a list of candidates per example."""
        groups = None
        if task.type == "ranking":
            groups = np.concatenate([[0], np.cumsum([len(group) for group in input_ids])])
            input_ids = [ids for group in input_ids for ids in group]
            token_type_ids = None if token_type_ids is None else [t for group in token_type_ids for t in group]
        types = None if token_type_ids is None else Ragged.from_lists(token_type_ids, np.int8)
        return cls(task, split, np.asarray(idx, dtype=np.int64), Ragged.from_lists(input_ids), types,
                   None if labels is None else np.asarray(labels), pad_token_id, groups)

    @classmethod
    def open(cls, directory: Path, task: TaskSpec, split: str, pad_token_id: int) -> "TaskData":
        """The arrays of a cache entry, memory-mapped (read-only)."""
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r")
                  for name in ARRAYS if (directory / f"{name}.npy").is_file()}
        offsets = arrays["offsets"]
        types = Ragged(arrays["token_type_ids"], offsets) if "token_type_ids" in arrays else None
        return cls(task, split, arrays["idx"], Ragged(arrays["input_ids"], offsets), types, arrays.get("labels"),
                   pad_token_id, arrays.get("groups"))

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def lengths(self) -> np.ndarray:
        """Tokens per example (ranking: candidates x longest candidate), to bucket batches by length."""
        lengths = self.input_ids.lengths()
        if self.groups is None:
            return lengths
        longest = np.maximum.reduceat(lengths, self.groups[:-1]) if len(lengths) else lengths
        return longest * np.diff(self.groups)

    def collate(self, indices) -> dict[str, torch.Tensor]:
        """Pad the examples at `indices` to the longest of them; ranking pads groups to the largest group."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.groups is not None:
            return self._collate_groups(indices)
        batch = self._pad(indices)
        if self.labels is not None:
            floats = self.task.type in ("regression", "multi_label_classification")  # multi-hot: (batch, num_labels)
            batch["labels"] = torch.as_tensor(np.asarray(self.labels[indices]),
                                              dtype=torch.float32 if floats else torch.long)
        return batch

    def _pad(self, rows: np.ndarray, ends: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        input_ids, mask = self.input_ids.padded(rows, self.pad_token_id, ends)  # (batch, seq)
        batch = {"input_ids": torch.as_tensor(input_ids, dtype=torch.long),
                 "attention_mask": torch.as_tensor(mask, dtype=torch.long)}
        if self.token_type_ids is not None:
            batch["token_type_ids"] = torch.as_tensor(self.token_type_ids.padded(rows, 0, ends)[0], dtype=torch.long)
        return batch

    def _collate_groups(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        starts, sizes = self.groups[indices], np.diff(self.groups)[indices]
        group_size = int(sizes.max())
        present = np.arange(group_size) < sizes[:, None]  # (batch, group_size)
        # A missing candidate is a stand-in: the first two tokens of its query's first candidate, masked out.
        rows = np.where(present, starts[:, None] + np.arange(group_size), starts[:, None]).reshape(-1)
        ends = np.where(present.reshape(-1), self.input_ids.offsets[rows + 1],
                        np.minimum(self.input_ids.offsets[rows] + 2, self.input_ids.offsets[rows + 1]))
        batch = {key: value.view(len(indices), group_size, -1) for key, value in self._pad(rows, ends).items()}
        batch["candidate_mask"] = torch.as_tensor(present)  # (batch, group_size)
        if self.labels is not None:
            batch["labels"] = torch.as_tensor(np.asarray(self.labels[indices]), dtype=torch.long)
        return batch


def load_task_data(task: TaskSpec, split: str, tokenizer, settings: DataSettings,
                   max_samples: int | None = None) -> TaskData:
    """Read and tokenise one split (once: later calls with the same inputs map the cached arrays)."""
    directory = cached_split(task, split, tokenizer, settings, max_samples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TaskData.open(directory, task, split, pad)
