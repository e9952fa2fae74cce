"""Text for masked-LM pre-training: plain-text files and GLUE sentences through `datasets`, tokenised, masked.

Masking is transformers' `DataCollatorForLanguageModeling` (with `whole_word_mask` for whole words); it
draws from torch's global RNG, which the training loop seeds per batch so that masks are reproducible.
"""

from __future__ import annotations

import glob
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling

from mtdnn.data_files import check_utf8_file
from mtdnn.errors import MTDNNError
from mtdnn.pretrain_config import MaskingSettings, TextSettings
from mtdnn.sources import glue_dir_from, load_split
from mtdnn.tasks import GLUE_TASKS


def text_files(patterns: list[str]) -> list[str]:
    """The files named by `data.text_files`, glob patterns expanded, in the order given; each must be UTF-8 text
    (checked here, so that a binary file is named instead of failing deep inside `datasets`)."""
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not matches:
            raise MTDNNError(f"config key `data.text_files`: no file matches {pattern!r}.")
        for match in matches:
            if Path(match).is_dir():
                raise MTDNNError(f"config key `data.text_files`: {match} is a directory (matched by {pattern!r}); "
                                 f"name the text files in it (e.g. {str(Path(match) / '*.txt')!r}).")
            check_utf8_file(Path(match))
        found.extend(matches)
    return found


def glue_sentences(task_names: list[str], glue_dir: str | None) -> list[str]:
    """Every sentence of the named GLUE tasks' training splits, each once, in file order; labels unused."""
    sentences = []
    for name in task_names:
        task = GLUE_TASKS.get(name)
        if task is None or "train" not in task.splits:
            usable = [n for n, t in GLUE_TASKS.items() if "train" in t.splits]
            raise MTDNNError(f"config key `data.text_from_glue_tasks`: `{name}` is not a GLUE task with a training "
                             f"split; use some of {', '.join(usable)}.")
        columns = load_split(task, "train", glue_dir_from(glue_dir))
        sentences += [text for name in ("text_a", "text_b") if name in columns for text in columns[name]]
    return list(dict.fromkeys(sentences))  # pair tasks repeat sentences across rows


def read_text(settings: TextSettings, seed: int) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Non-blank lines as a `text` column, split into (training lines, held-out lines)."""
    parts = []
    if settings.text_files:
        files = text_files(settings.text_files)
        parts.append(datasets.load_dataset("text", data_files=files, split="train", encoding="utf-8-sig"))
    if settings.text_from_glue_tasks:
        parts.append(datasets.Dataset.from_dict({"text": glue_sentences(settings.text_from_glue_tasks,
                                                                         settings.glue_dir)}))
    text = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    text = text.filter(lambda row: bool(row["text"].strip()))
    if len(text) == 0:
        named = ", ".join(settings.text_files + settings.text_from_glue_tasks)
        raise MTDNNError(f"{named}: no text to pre-train on (no line holds anything but whitespace); give text "
                         "files with one sentence or paragraph per line.")
    if settings.eval_lines >= len(text):
        raise MTDNNError(f"config key `data.eval_lines` is {settings.eval_lines}, but the text has only {len(text)} "
                         "non-blank lines; hold out fewer lines or add text.")
    held_out = None
    if settings.eval_lines:
        split = text.train_test_split(test_size=settings.eval_lines, seed=seed)
        text, held_out = split["train"], split["test"]
    if settings.max_train_lines is not None:
        text = text.select(range(min(settings.max_train_lines, len(text))))
    return text, held_out


def tokenize_text(text: datasets.Dataset, tokenizer, settings: TextSettings, whole_word_mask: bool) -> dict[str, list]:
    """Token ids and special-token masks per line (or per packed block); offsets where whole words are masked."""
    if whole_word_mask and not getattr(tokenizer, "is_fast", False):
        raise MTDNNError("`mlm.whole_word_mask` needs a fast tokenizer (one with offset mappings); this model's "
                         f"tokenizer {type(tokenizer).__name__} is not one.")
    length = settings.max_seq_length

    def encode(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=not settings.pack_lines,
                         max_length=None if settings.pack_lines else length,
                         return_special_tokens_mask=True, return_offsets_mapping=whole_word_mask,
                         return_attention_mask=False, return_token_type_ids=False, verbose=False)

    def pack(batch: dict) -> dict:
        joined = {key: [item for row in rows for item in row] for key, rows in batch.items()}
        total = len(joined["input_ids"])
        return {key: [values[start : start + length] for start in range(0, total, length)]
                for key, values in joined.items()}

    encoded = text.map(encode, batched=True, remove_columns=text.column_names)
    if settings.pack_lines:
        encoded = encoded.map(pack, batched=True)
    return encoded.to_dict()


class MaskedText:
    """Tokenised examples, padded and masked a batch at a time."""

    def __init__(self, columns: dict[str, list], tokenizer, masking: MaskingSettings):
        self.columns = columns
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        whole = masking.whole_word_mask
        # Whole-word masking in transformers replaces every chosen token by [MASK]; say so rather than be warned.
        self.collator = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=masking.probability, whole_word_mask=whole,
            mask_replace_prob=1.0 if whole else 0.8, random_replace_prob=0.0 if whole else 0.1)

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.columns["input_ids"]), dtype=np.int64, count=len(self))

    def collate(self, indices) -> dict[str, torch.Tensor]:
        """Pad the examples at `indices` and mask them: `input_ids`, `attention_mask`, `labels` (-100: unmasked)."""
        rows = [self.columns["input_ids"][i] for i in indices]
        longest = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)  # (batch, seq)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        special = torch.ones((len(rows), longest), dtype=torch.long)  # padding is never masked
        offsets = torch.zeros((len(rows), longest, 2), dtype=torch.long) if "offset_mapping" in self.columns else None
        for row, i in enumerate(indices):
            size = len(rows[row])
            input_ids[row, :size] = torch.tensor(rows[row])
            attention_mask[row, :size] = 1
            special[row, :size] = torch.tensor(self.columns["special_tokens_mask"][i])
            if offsets is not None:
                offsets[row, :size] = torch.tensor(self.columns["offset_mapping"][i]).view(-1, 2)
        input_ids, labels = self.collator.torch_mask_tokens(input_ids, special_tokens_mask=special,
                                                            offset_mapping=offsets)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def fixed_batches(self, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
        """The whole set, longest first, masked once with `seed`: the same masks before and after training."""
        order = np.argsort(-self.lengths(), kind="stable")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [self.collate(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]
