"""Predictions on a user's own texts: the Python API (`Predictor`) and `mtdnn predict --input`.

    from mtdnn.inference import Predictor
    predictor = Predictor.from_pretrained("runs/quickstart/best")
    predictor.predict("sst2", ["a gripping, funny film", "dull and overlong"])
    predictor.predict("mrpc", [("He said hi.", "He greeted us.")])
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Sequence

import numpy as np
import torch

from mtdnn.data import TaskData
from mtdnn.data_files import decode_utf8, read_utf8
from mtdnn.errors import MTDNNError
from mtdnn.evaluation import inference_device, task_logits
from mtdnn.model import MTDNNModel
from mtdnn.tasks import GLUE_TASKS, TaskSpec

Text = str | tuple[str, str] | list[str]


@dataclass
class Prediction:
    label: str | None
    """Class name (classification; multi-label: the predicted names joined by the task's delimiter); None for
    regression and ranking."""
    score: float
    """Probability of `label` (classification; multi-label: of exactly that label set, the labels being
    independent), the predicted value (regression) or relevance (ranking)."""
    probabilities: dict[str, float] | None = None
    """Probability of every class (classification; multi-label: each label's own sigmoid)."""
    labels: list[str] | None = None
    """Multi-label only: the predicted label names (probability at least the task's threshold), maybe none."""

    def to_dict(self) -> dict:
        extra = {"labels": self.labels} if self.labels is not None else {}
        return {"label": self.label, "score": self.score, "probabilities": self.probabilities, **extra}


def prediction_objects(task: TaskSpec, logits: np.ndarray) -> list[Prediction]:
    """A `Prediction` (label, score, probabilities) per row of logits, (examples, num_outputs), of one task's head;
    `evaluation.predictions_from_logits` gives the bare class ids or values."""
    if task.type in ("regression", "ranking"):
        return [Prediction(label=None, score=float(row[0])) for row in logits]
    if task.type == "multi_label_classification":
        return [_multi_label_prediction(task, row) for row in torch.sigmoid(torch.from_numpy(logits).float()).numpy()]
    probabilities = torch.softmax(torch.from_numpy(logits).float(), dim=-1).numpy()  # (examples, num_labels)
    return [Prediction(label=task.label_names[int(row.argmax())], score=float(row.max()),
                       probabilities={name: float(p) for name, p in zip(task.label_names, row)})
            for row in probabilities]


def _multi_label_prediction(task: TaskSpec, probabilities: np.ndarray) -> Prediction:
    """probabilities: (num_labels,) sigmoids of one example."""
    chosen = probabilities >= task.threshold
    names = [name for name, on in zip(task.label_names, chosen) if on]
    score = float(np.where(chosen, probabilities, 1 - probabilities).prod())
    return Prediction(label=task.label_delimiter.join(names), score=score, labels=names,
                      probabilities={name: float(p) for name, p in zip(task.label_names, probabilities)})


class Predictor:
    """A trained multi-task model with its tokenizer, predicting any task it has a head for."""

    def __init__(self, model: MTDNNModel, tokenizer, max_seq_length: int = 128, batch_size: int = 64,
                 device: str | torch.device | None = None):
        self.device = inference_device(None if device is None else str(device))
        self.model = model.to(self.device).eval()
        self.tokenizer, self.max_seq_length, self.batch_size = tokenizer, max_seq_length, batch_size

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None) -> "Predictor":
        """Load an mtdnn checkpoint directory (a run's `best/` or `last`); its config gives the sequence length."""
        from mtdnn.checkpoint import load_checkpoint

        model, tokenizer, config, _ = load_checkpoint(directory)
        return cls(model, tokenizer, config.data.max_seq_length, config.train.eval_batch_size, device)

    def task(self, name: str) -> TaskSpec:
        """A task this model can predict: one it was trained on, or a GLUE task sharing a head (e.g. `ax`)."""
        task = self.model.tasks.get(name) or GLUE_TASKS.get(name)
        if task is None:
            raise MTDNNError(f"unknown task `{name}`; this model predicts {', '.join(self.model.heads)}.")
        self.model.head_task(task.head_name)
        return task

    def logits(self, task_name: str, texts: Sequence[Text]) -> np.ndarray:
        """Raw head outputs, one row per text. (examples, num_labels) or (examples, 1)"""
        task = self.task(task_name)
        first, second = split_texts(task, texts)
        encoded = self.tokenizer(first, second, truncation=True, max_length=self.max_seq_length)
        input_ids, types = encoded["input_ids"], encoded.get("token_type_ids")
        if task.type == "ranking":  # each (query, candidate) pair is scored on its own: a group of one
            input_ids, types = [[ids] for ids in input_ids], [[t] for t in types] if types is not None else None
        data = TaskData.from_lists(task, "input", list(range(len(first))), input_ids, types, None,
                                   self.tokenizer.pad_token_id or 0)
        return task_logits(self.model, data, self.batch_size, self.device)

    def predict(self, task_name: str, texts: Sequence[Text]) -> list[Prediction]:
        """One Prediction per text: a string for single-sentence tasks, an (a, b) pair for pair tasks."""
        return prediction_objects(self.task(task_name), self.logits(task_name, texts))


def split_texts(task: TaskSpec, texts: Sequence[Text]) -> tuple[list[str], list[str] | None]:
    """First and second sentences of `texts`, checked against the task's number of inputs."""
    if isinstance(texts, str):
        raise MTDNNError("`texts` must be a list of texts (or of (a, b) pairs), not a single string.")
    if not texts:
        raise MTDNNError("`texts` is empty: give at least one text.")
    pairs = len(task.text_columns) == 2
    for position, text in enumerate(texts):
        if pairs != (isinstance(text, (tuple, list)) and len(text) == 2):
            expected = "an (a, b) pair of strings" if pairs else "a string"
            raise MTDNNError(f"texts[{position}] is {text!r}; task `{task.name}` ({task.type}) takes {expected}.")
    if pairs:
        return [str(a) for a, _ in texts], [str(b) for _, b in texts]
    return [str(text) for text in texts], None


def read_inputs(path: str, task: TaskSpec, input_format: str | None = None) -> tuple[list, list[Text], str]:
    """Row ids, texts and the format (`tsv`/`jsonl`) of a .tsv (header, no quoting) or .jsonl file, or `-` (stdin).

    The text columns are the task's `text_columns` (for GLUE tasks also the GLUE TSV names, so a GLUE
    test file can be given as it is); the id is the `index`/`idx` column where present, else the row number.
    """
    lines = (_read_stdin() if path == "-" else _read(path)).splitlines()
    source = "stdin" if path == "-" else path
    kind = input_format or (Path(path).suffix.lstrip(".").lower() if path != "-" else None)
    if kind is None:
        first = next((line for line in lines if line.strip()), "")
        kind = "jsonl" if first.lstrip().startswith("{") else "tsv"
    kind = "jsonl" if kind == "json" else kind
    if kind not in ("tsv", "jsonl"):
        raise MTDNNError(f"{source}: unsupported input format {kind!r}; give a .tsv or .jsonl file.")
    records = _jsonl_records(lines, source) if kind == "jsonl" else _tsv_records(lines, source)
    if not records:
        raise MTDNNError(f"{source}: no rows to predict.")
    columns = _text_columns(task, records[0][1], source)
    ids, texts = [], []
    for row_number, (line, record) in enumerate(records):
        missing = [c for c in columns if c not in record]
        if missing:
            raise MTDNNError(f"{source}, line {line}: no value for column {missing[0]!r} (task `{task.name}`).")
        ids.append(next((record[k] for k in ("index", "idx", task.index_column) if k and k in record), row_number))
        values = [str(record[c]) for c in columns]
        texts.append(values[0] if len(values) == 1 else tuple(values))
    return ids, texts, kind


def _read_stdin() -> str:
    stream = getattr(sys.stdin, "buffer", None)  # bytes, so that a non-UTF-8 byte is one clear error
    return decode_utf8(stream.read(), "stdin").removeprefix("\ufeff") if stream else sys.stdin.read()


def _read(path: str) -> str:
    """The input file's text: UTF-8 only, anything else refused naming the line and byte (`read_utf8`)."""
    if not Path(path).is_file():
        raise MTDNNError(f"input file {path} does not exist.")
    return read_utf8(Path(path))


def _tsv_records(lines: list[str], source: str) -> list[tuple[int, dict]]:
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        return []
    header, records = rows[0], []
    for offset, row in enumerate(rows[1:]):
        if not row:
            continue
        if len(row) != len(header):
            raise MTDNNError(f"{source}, line {offset + 2}: {len(row)} tab-separated fields where the header has "
                             f"{len(header)} ({', '.join(header)}).")
        records.append((offset + 2, dict(zip(header, row))))
    return records


def _jsonl_records(lines: list[str], source: str) -> list[tuple[int, dict]]:
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise MTDNNError(f"{source}, line {number}: not valid JSON ({error.msg}).") from None
        if not isinstance(record, dict):
            raise MTDNNError(f"{source}, line {number}: expected a JSON object with the text fields, "
                             f"got {line[:60]!r}.")
        records.append((number, record))
    return records


def _text_columns(task: TaskSpec, record: dict, source: str) -> tuple[str, ...]:
    candidates = [task.text_columns] + ([task.glue.text_columns] if task.glue else [])
    for columns in candidates:
        if all(column in record for column in columns):
            return columns
    names = " or ".join("/".join(columns) for columns in candidates)
    raise MTDNNError(f"{source}: task `{task.name}` reads the column(s) {names}; the input has {', '.join(record)}.")


def write_predictions(handle: IO[str], task: TaskSpec, ids: Iterable, predictions: list[Prediction],
                      output_format: str) -> None:
    """TSV (`index`, `label`, `score`, one probability column per class) or JSON lines."""
    if output_format == "jsonl":
        for index, prediction in zip(ids, predictions):
            handle.write(json.dumps({"index": index, **prediction.to_dict()}) + "\n")
        return
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    labels = list(task.label_names) if task.type.endswith("classification") else []
    writer.writerow(["index", "label", "score", *labels])
    for index, prediction in zip(ids, predictions):
        probabilities = [f"{prediction.probabilities[name]:.6f}" for name in labels]
        writer.writerow([index, prediction.label or "", f"{prediction.score:.6f}", *probabilities])
