"""Export one task of a multi-task checkpoint as a standard `AutoModelForSequenceClassification` directory.

The encoder's weights go under the classification model's base-model prefix and the task head's output
layer becomes its classifier. Two head layouts match mtdnn's (pooled [CLS], dropout, linear):
BERT's `classifier` on the pooler output, and RoBERTa's `classifier.dense` + `classifier.out_proj`, whose
dense+tanh is the encoder's pooler. A ranking head becomes one output: the relevance score of a (query, candidate)
pair. The exported model is checked to give mtdnn's logits before it is written.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from mtdnn import task_embeddings
from mtdnn.adapters import merged
from mtdnn.checkpoint import CHECKPOINTS, CONFIG_FILE, base_model_of, load_checkpoint
from mtdnn.errors import MTDNNError
from mtdnn.model import TASKS_FILE, MTDNNModel
from mtdnn.model_card import CARD_FILE, export_card
from mtdnn.run_dir import LOCK_FILE
from mtdnn.run_state import write_atomically
from mtdnn.tasks import GLUE_TASKS, TaskSpec

PROBE = ("The exported model must agree with mtdnn.", "It is checked on this pair of sentences.")
ATOL = 1e-4
"""The largest logit difference from mtdnn's that an export may show on the probe."""
INDEX_FILE = "index.json"
"""What an export of every task lists: each task's directory, type, labels and logit check."""


def classification_config(model: MTDNNModel, task: TaskSpec):
    """The encoder's config with the task's labels: id2label/label2id, or one output and problem type regression."""
    config = copy.deepcopy(model.encoder.config)
    if task.type.endswith("classification"):  # multi-label: one sigmoid output per label, BCE loss in transformers
        labels = list(task.label_names)
        multi = task.type == "multi_label_classification"
        config.problem_type = "multi_label_classification" if multi else "single_label_classification"
    else:  # regression, and ranking's relevance score: one unbounded output
        labels = [task.name]
        config.problem_type = "regression"
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    if hasattr(config, "classifier_dropout"):
        config.classifier_dropout = task.dropout
    return config


def encoder_state(model: MTDNNModel, head_name: str) -> dict[str, torch.Tensor]:
    """The weights of the encoder the task runs through, its ERNIE task vector (if any) folded into the word
    embeddings: E[ids] + v == (E + v)[ids], so a standard model computes the same."""
    encoder = model.encoder_for(head_name)
    state = {name: tensor for name, tensor in encoder.state_dict().items()
             if not name.startswith(f"{task_embeddings.ATTRIBUTE}.")}
    table = task_embeddings.table_of(encoder)
    if table is not None and head_name in table.vectors:
        words = encoder.get_input_embeddings().weight
        name = next(name for name, parameter in encoder.named_parameters() if parameter is words)
        state[name] = state[name] + table(head_name).detach()
    return state


def classifier_state(model: MTDNNModel, task: TaskSpec, target_keys: set[str], prefix: str) -> dict[str, torch.Tensor]:
    """mtdnn's encoder and head weights renamed to the target's layout; an MTDNNError where none matches."""
    head_module = model.heads[task.head_name]
    if not hasattr(head_module, "out_proj"):
        raise MTDNNError(f"cannot export task `{task.name}`: its head is a {type(head_module).__name__}, not the "
                         "linear head on the pooled [CLS] vector that a sequence-classification model has.")
    encoder = encoder_state(model, task.head_name)
    head = head_module.out_proj.state_dict()
    state = {f"{prefix}.{name}": tensor for name, tensor in encoder.items()}
    if {"classifier.weight", "classifier.bias"} <= target_keys:  # BERT: classifier(dropout(pooler_output))
        state.update({f"classifier.{name}": tensor for name, tensor in head.items()})
    elif {"classifier.dense.weight", "classifier.out_proj.weight"} <= target_keys and "pooler.dense.weight" in encoder:
        for name in ("weight", "bias"):  # RoBERTa: out_proj(tanh(dense(first token))) = out_proj(pooler_output)
            state[f"classifier.dense.{name}"] = state.pop(f"{prefix}.pooler.dense.{name}")
            state[f"classifier.out_proj.{name}"] = head[name]
    else:
        classifier = sorted(key for key in target_keys if not key.startswith(f"{prefix}."))
        raise MTDNNError(
            f"cannot export a `{model.encoder.config.model_type}` encoder: its sequence-classification head "
            f"({', '.join(classifier[:4])}) is not mtdnn's pooled-[CLS] + linear head. Export works for "
            "BERT-style (`classifier`) and RoBERTa-style (`classifier.dense` + `classifier.out_proj`) models."
        )
    return state


@torch.inference_mode()
def max_logit_difference(model: MTDNNModel, exported, tokenizer, task: TaskSpec) -> float:
    """Largest absolute difference of the two models' logits on a probe input (both in eval mode)."""
    pair = len(task.text_columns) == 2
    inputs = tokenizer(PROBE[0], PROBE[1] if pair else None, return_tensors="pt")  # (1, seq)
    model.eval()
    exported.eval()
    if task.type == "ranking":  # mtdnn scores groups of candidates: the probe pair is a group of one
        group = {name: tensor.unsqueeze(1) for name, tensor in inputs.items()}  # (1, 1, seq)
        ours = model(task.head_name, **group, candidate_mask=torch.ones(1, 1, dtype=torch.bool)).logits  # (1, 1)
    else:
        ours = model(task.head_name, **inputs).logits  # (1, num_labels)
    theirs = exported(**inputs).logits
    return float((ours - theirs).abs().max())


def export_task(model: MTDNNModel, tokenizer, task: TaskSpec, output_dir: str | Path, atol: float = ATOL,
                card=None) -> float:
    """Write `output_dir` (weights, config, tokenizer and `card`, a ModelCard, if given); returns the probe's largest
    logit difference."""
    model.head_task(task.head_name)
    model = merged(model)  # a LoRA adapter's update folded into the weights it adapts: a plain encoder
    config = classification_config(model, task)
    exported = AutoModelForSequenceClassification.from_config(config)
    target_keys = set(exported.state_dict())
    state = classifier_state(model, task, target_keys, exported.base_model_prefix)
    result = exported.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise MTDNNError(
            f"cannot export task `{task.name}`: the {type(exported).__name__} layout does not match the checkpoint "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}); export works for models "
            "whose classifier is mtdnn's head on the pooled [CLS] vector (BERT-style and RoBERTa-style)."
        )
    difference = max_logit_difference(model, exported, tokenizer, task)
    if difference > atol:
        raise MTDNNError(
            f"cannot export task `{task.name}`: {type(exported).__name__} with the checkpoint's weights gives logits "
            f"{difference:.2e} away from mtdnn's on a probe input, so its head computes something else."
        )
    def write(staging: Path) -> None:
        exported.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if card is not None:
            card.save(staging / CARD_FILE)
    write_atomically(Path(output_dir), write)  # beside OUT_DIR, then swapped in: a failure leaves an earlier export
    return difference


def check_export_dir(output_dir: str | Path, overwrite: bool) -> None:
    """OUT_DIR must be new, empty, or (with --overwrite) an earlier export; never a checkpoint, a run or a file."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise MTDNNError(f"export directory {output_dir} is a file; give a directory to write the model into.")
    inside = next((parent for parent in output_dir.resolve().parents if (parent / TASKS_FILE).is_file()), None)
    if inside is not None:
        raise MTDNNError(f"export directory {output_dir} is inside the mtdnn checkpoint {inside}; an export never "
                         "writes into one. Give a directory outside it.")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    ours = {path.name for path in output_dir.iterdir()}
    if ours & {TASKS_FILE, CONFIG_FILE, CHECKPOINTS, "metrics.jsonl", LOCK_FILE}:
        raise MTDNNError(f"export directory {output_dir} holds an mtdnn checkpoint or run; an export never writes "
                         "into one. Give a new directory.")
    if not overwrite:
        raise MTDNNError(f"export directory {output_dir} is not empty; give a new directory, or pass --overwrite "
                         "to replace an earlier export.")
    if not ours & {"config.json", INDEX_FILE}:
        raise MTDNNError(f"export directory {output_dir} is not empty and holds no exported model (no config.json, "
                         f"nor {INDEX_FILE} of an export of every task); --overwrite replaces only an earlier export. "
                         "Give a new directory.")


def export_all(model: MTDNNModel, tokenizer, output_dir: str | Path, card_for: Callable[[TaskSpec], object]) -> dict:
    """One export per head in `output_dir/<task>/` (with the card `card_for(task)`), and `index.json`: every task of
    the model with the directory that predicts it (MNLI-mismatched: `mnli/`), its type, labels and logit check. A head
    that cannot be exported (SAN) is listed under `skipped` with the reason. Written beside `output_dir`, swapped in
    whole. Returns the index."""
    index = {"logit_tolerance": ATOL, "tasks": {}, "skipped": {}}
    model = merged(model)  # once for every head (`export_task` then finds no adapter to merge)

    def write(staging: Path) -> None:
        for name in model.heads:
            try:
                difference = export_task(model, tokenizer, model.tasks[name], staging / name,
                                         card=card_for(model.tasks[name]))
            except MTDNNError as error:  # the other heads are still worth having; the index says why not this one
                index["skipped"][name] = str(error)
                continue
            for task in model.tasks.values():
                if task.head_name == name:
                    index["tasks"][task.name] = {
                        "directory": name, "type": task.type,
                        "labels": list(classification_config(model, task).id2label.values()),
                        "max_logit_difference": difference}
        if not index["tasks"]:
            raise MTDNNError(f"no task of the checkpoint can be exported: {' '.join(index['skipped'].values())}")
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=2))
    write_atomically(Path(output_dir), write)
    return index


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path, task_name: str | None = None,
                      overwrite: bool = False) -> dict:
    """`mtdnn export`: the task `task_name` of a checkpoint (a directory or a hub id) into `output_dir`, or, without
    it, every task (`export_all`); each export with its model card. Returns what the command prints."""
    check_export_dir(output_dir, overwrite)
    model, tokenizer, config, state = load_checkpoint(checkpoint)
    base_model, encoder_type = base_model_of(config), model.encoder.config.model_type
    card_for = lambda task: export_card(config, task, model.tasks, state, encoder_type, base_model)  # noqa: E731
    if task_name is None:
        index = export_all(model, tokenizer, output_dir, card_for)
        return {"output_dir": str(output_dir), "index": str(Path(output_dir) / INDEX_FILE), **index}
    task = model.tasks.get(task_name) or GLUE_TASKS.get(task_name)
    if task is None:
        raise MTDNNError(f"unknown task `{task_name}`; this checkpoint has heads for {', '.join(model.heads)}.")
    difference = export_task(model, tokenizer, task, output_dir, card=card_for(task))
    return {"output_dir": str(output_dir), "task": task_name, "max_logit_difference": difference}
