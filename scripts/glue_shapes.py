"""Synthetic GLUE of the real shapes, for full-size rehearsals where MNLI, QQP and QNLI cannot be downloaded.

Every train/dev/test split has GLUE's row count and the classic `download_glue_data.py` layout and columns
(MNLI with matched and mismatched dev/test, AX). Sentences are words drawn from the GLUE text here, with word
counts drawn from a real sentence-length distribution: the task's own files where they are here (QNLI: its
dev and test, its training set being absent), else the closest task here (LENGTHS_FROM says which). Labels
are random values of the task's type: the data has GLUE's size and token lengths, not its meaning.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

ROWS = {  # (task, split) -> GLUE's row count
    ("cola", "train"): 8551, ("cola", "dev"): 1043, ("cola", "test"): 1063,
    ("sst2", "train"): 67349, ("sst2", "dev"): 872, ("sst2", "test"): 1821,
    ("mrpc", "train"): 3668, ("mrpc", "dev"): 408, ("mrpc", "test"): 1725,
    ("stsb", "train"): 5749, ("stsb", "dev"): 1500, ("stsb", "test"): 1379,
    ("qqp", "train"): 363846, ("qqp", "dev"): 40430, ("qqp", "test"): 390965,
    ("mnli", "train"): 392702, ("mnli", "dev_matched"): 9815, ("mnli", "dev_mismatched"): 9832,
    ("mnli", "test_matched"): 9796, ("mnli", "test_mismatched"): 9847,
    ("qnli", "train"): 104743, ("qnli", "dev"): 5463, ("qnli", "test"): 5463,
    ("rte", "train"): 2490, ("rte", "dev"): 277, ("rte", "test"): 3000,
    ("wnli", "train"): 635, ("wnli", "dev"): 71, ("wnli", "test"): 146,
    ("ax", "test"): 1104,
}

# task -> (directory, text columns, label column, index column of test files, labels or None for scores)
LAYOUT = {
    "cola": ("CoLA", ("sentence",), "label", "index", ("0", "1")),
    "sst2": ("SST-2", ("sentence",), "label", "index", ("0", "1")),
    "mrpc": ("MRPC", ("#1 String", "#2 String"), "Quality", "index", ("0", "1")),
    "stsb": ("STS-B", ("sentence1", "sentence2"), "score", "index", None),
    "qqp": ("QQP", ("question1", "question2"), "is_duplicate", "id", ("0", "1")),
    "mnli": ("MNLI", ("sentence1", "sentence2"), "gold_label", "index", ("entailment", "neutral", "contradiction")),
    "qnli": ("QNLI", ("question", "sentence"), "label", "index", ("entailment", "not_entailment")),
    "rte": ("RTE", ("sentence1", "sentence2"), "label", "index", ("entailment", "not_entailment")),
    "wnli": ("WNLI", ("sentence1", "sentence2"), "label", "index", ("0", "1")),
    "ax": ("AX", ("sentence1", "sentence2"), None, "index", None),
}

# task -> the real file and columns whose sentence lengths it copies, one per text column
LENGTHS_FROM = {
    "cola": [("CoLA/train.tsv", 3)], "sst2": [("SST-2/train.tsv", "sentence")],
    "mrpc": [("MRPC/train.tsv", "#1 String"), ("MRPC/train.tsv", "#2 String")],
    "stsb": [("STS-B/train.tsv", "sentence1"), ("STS-B/train.tsv", "sentence2")],
    "rte": [("RTE/train.tsv", "sentence1"), ("RTE/train.tsv", "sentence2")],
    "wnli": [("WNLI/train.tsv", "sentence1"), ("WNLI/train.tsv", "sentence2")],
    "qnli": [("QNLI/dev.tsv", "question"), ("QNLI/dev.tsv", "sentence")],
    "ax": [("AX/test.tsv", "sentence1"), ("AX/test.tsv", "sentence2")],
    # not here: MNLI premises as MRPC's news sentences, hypotheses as STS-B's short ones; QQP as QNLI's questions
    "mnli": [("MRPC/train.tsv", "#1 String"), ("STS-B/train.tsv", "sentence2")],
    "qqp": [("QNLI/dev.tsv", "question"), ("QNLI/dev.tsv", "question")],
}


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _column(path: Path, column) -> list[str]:
    rows = _rows(path)
    if isinstance(column, int):  # a headerless file (CoLA)
        return [row[column] for row in rows if len(row) > column]
    position = rows[0].index(column)
    return [row[position] for row in rows[1:] if len(row) > position]


def measure(glue_dir: Path) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray]]:
    """The word pool of the GLUE text here, and each (task, text column)'s real word counts."""
    words, lengths = [], {}
    for task, sources in LENGTHS_FROM.items():
        for position, (file, column) in enumerate(sources):
            sentences = _column(glue_dir / file, column)
            words.extend(word for sentence in sentences for word in sentence.split())
            lengths[task, position] = np.array([max(1, len(s.split())) for s in sentences])
    return np.array(sorted(set(words))), lengths


def _sentences(rng: np.random.Generator, pool: np.ndarray, lengths: np.ndarray, count: int) -> list[str]:
    chosen = rng.choice(lengths, size=count)
    flat = pool[rng.integers(len(pool), size=int(chosen.sum()))]
    bounds = np.concatenate([[0], np.cumsum(chosen)])
    return [" ".join(flat[bounds[i] : bounds[i + 1]]) for i in range(count)]


def write_split(directory: Path, task: str, split: str, pool, lengths, rng: np.random.Generator) -> int:
    folder, text_columns, label_column, index_column, labels = LAYOUT[task]
    count = ROWS[task, split]
    texts = [_sentences(rng, pool, lengths[task, i], count) for i in range(len(text_columns))]
    labelled = not split.startswith("test") and label_column is not None
    if labelled:
        values = (rng.choice(labels, size=count) if labels else np.round(rng.uniform(0, 5, size=count), 3)).tolist()
    path = directory / folder / f"{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        if task == "cola" and labelled:  # CoLA's train/dev have no header: source, label, original label, sentence
            writer.writerows(("synthetic", label, "", text) for label, text in zip(values, texts[0]))
            return count
        writer.writerow([index_column, *text_columns] + ([label_column] if labelled else []))
        for row in range(count):
            writer.writerow([row, *(column[row] for column in texts)] + ([values[row]] if labelled else []))
    return count


def write_glue(directory: Path, source_glue_dir: Path, seed: int = 0) -> dict:
    """Every split of synthetic GLUE into `directory` (once: a finished directory holds `shapes.json`)."""
    done = directory / "shapes.json"
    if done.is_file():
        return json.loads(done.read_text())
    pool, lengths = measure(source_glue_dir)
    rng = np.random.default_rng(seed)
    written = {f"{task}/{split}": write_split(directory, task, split, pool, lengths, rng) for task, split in ROWS}
    summary = {"rows": written, "words_in_pool": len(pool),
               "mean_words": {f"{task}/{position}": round(float(values.mean()), 1)
                              for (task, position), values in lengths.items()}}
    done.write_text(json.dumps(summary, indent=2))
    return summary
