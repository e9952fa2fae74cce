"""MTDNNModel: one shared encoder (hard parameter sharing) and one small head per task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from mtdnn.errors import MTDNNError
from mtdnn.heads import HEADS
from mtdnn.losses import LOSSES
from mtdnn.pretrained import load_encoder
from mtdnn.tasks import TaskSpec

WEIGHTS_FILE = "model.safetensors"
TASKS_FILE = "mtdnn_tasks.json"
FORMAT_VERSION = 1


@dataclass
class TaskOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (batch, num_labels); regression (batch, 1); ranking (batch, group_size)


class MTDNNModel(nn.Module):
    def __init__(self, encoder: nn.Module, tasks: dict[str, TaskSpec]):
        super().__init__()
        self.encoder = encoder
        self.tasks = dict(tasks)
        hidden_size = encoder.config.hidden_size
        orphans = [task for task in tasks.values() if task.head is not None and task.head not in tasks]
        if orphans:
            raise MTDNNError(f"task `{orphans[0].name}` is predicted by the head of `{orphans[0].head}`: "
                             f"list `{orphans[0].head}` in `tasks` too.")
        self.heads = nn.ModuleDict({
            name: HEADS[task.type](task, hidden_size) for name, task in tasks.items() if task.head is None
        })

    @classmethod
    def from_encoder(cls, name_or_path: str, tasks: dict[str, TaskSpec], from_scratch: bool = False,
                     attn_implementation: str | None = None) -> "MTDNNModel":
        """A new multi-task model on a pre-trained (or randomly initialised) encoder, with fresh heads."""
        return cls(load_encoder(name_or_path, from_scratch, attn_implementation), tasks)

    def head_task(self, head_name: str) -> TaskSpec:
        """The task that owns head `head_name` (a task's `head_name`: itself, or e.g. `mnli` for `ax`)."""
        if head_name not in self.heads:
            raise MTDNNError(f"this model has no head `{head_name}`; it has heads for {', '.join(self.heads)}.")
        return self.tasks[head_name]

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The sentence representation: BERT's pooled [CLS] where the encoder has a pooler, else [CLS]."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        outputs = self.encoder(**inputs)
        pooled = getattr(outputs, "pooler_output", None)
        return pooled if pooled is not None else outputs.last_hidden_state[:, 0]  # (batch, hidden)

    def forward(self, head_name: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                candidate_mask: torch.Tensor | None = None) -> TaskOutput:
        task = self.head_task(head_name)
        head = self.heads[task.name]
        if task.type == "ranking":  # (batch, group_size, seq) -> one score per (query, candidate)
            batch, group_size, _ = input_ids.shape
            flat = {"input_ids": input_ids.flatten(0, 1), "attention_mask": attention_mask.flatten(0, 1),
                    "token_type_ids": token_type_ids.flatten(0, 1) if token_type_ids is not None else None}
            logits = head(self.encode(**flat)).view(batch, group_size)  # (batch, group_size)
            if candidate_mask is not None:
                logits = logits.masked_fill(~candidate_mask, float("-inf"))
        else:
            logits = head(self.encode(input_ids, attention_mask, token_type_ids))
        loss = LOSSES[task.type](logits, labels) if labels is not None else None
        return TaskOutput(loss=loss, logits=logits)

    def save_pretrained(self, directory: str | Path) -> None:
        """Weights (safetensors), the encoder's config and the task table; no pickles."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(directory)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt", "mtdnn_version": str(FORMAT_VERSION)})
        (directory / TASKS_FILE).write_text(json.dumps({
            "format_version": FORMAT_VERSION, "tasks": {name: task.to_dict() for name, task in self.tasks.items()},
        }, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "MTDNNModel":
        """Load a model written by `save_pretrained` (an mtdnn checkpoint directory)."""
        directory = Path(directory)
        missing = [name for name in ("config.json", WEIGHTS_FILE, TASKS_FILE) if not (directory / name).is_file()]
        if missing:
            raise MTDNNError(
                f"{directory} is not a complete mtdnn checkpoint: {', '.join(missing)} missing. "
                "Point at a `last/` or `best/` directory of a run."
            )
        table = json.loads((directory / TASKS_FILE).read_text())
        if table.get("format_version") != FORMAT_VERSION:
            raise MTDNNError(
                f"{directory / TASKS_FILE} has format version {table.get('format_version')}, this mtdnn reads "
                f"version {FORMAT_VERSION}; use the mtdnn release that wrote it."
            )
        tasks = {name: TaskSpec.from_dict(values) for name, values in table["tasks"].items()}
        model = cls(AutoModel.from_config(AutoConfig.from_pretrained(directory)), tasks)
        state = load_file(directory / WEIGHTS_FILE)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise MTDNNError(
                f"{directory / WEIGHTS_FILE} does not match its task table and encoder config "
                f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})."
            )
        return model
