"""MTDNNModel: one shared encoder (hard parameter sharing) and one small head per task.

Options of the multi-task toolbox: SAN heads read the token states; ERNIE 2.0 task embeddings are added to the
input embeddings (`mtdnn.task_embeddings`); soft sharing gives groups of tasks their own encoders (`mtdnn.sharing`).
An encoder may carry a LoRA adapter (`mtdnn.adapters`), which a checkpoint records in its task table.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from mtdnn import adapters, task_embeddings
from mtdnn.config import LoraSettings
from mtdnn.errors import MTDNNError
from mtdnn.heads import SANHead, build_head, initializer_range_of
from mtdnn.hub import local_checkpoint
from mtdnn.losses import LOSSES
from mtdnn.manifest import REFUSAL_HINT, read_json, verify_files, write_manifest
from mtdnn.pretrained import load_encoder, resolve
from mtdnn.run_state import TRAINING_STATE_FILE
from mtdnn.sharing import soft_sharing_penalty
from mtdnn.tasks import TaskSpec, check_task_name
from mtdnn.yaml_settings import build_dataclass

WEIGHTS_FILE = "model.safetensors"
TASKS_FILE = "mtdnn_tasks.json"
FORMAT_VERSION = 1


@dataclass
class TaskOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (batch, num_labels); regression (batch, 1); ranking (batch, group_size)
    sharing_penalty: torch.Tensor | None = None  # soft sharing's L2 tie, when asked for


class MTDNNModel(nn.Module):
    def __init__(self, encoder: nn.Module, tasks: dict[str, TaskSpec], encoder_groups: list[list[str]] | None = None,
                 use_task_embeddings: bool = False):
        """`encoder_groups` (soft sharing): the first group uses `encoder`, each other group a copy of it."""
        super().__init__()
        self.encoder = encoder
        self.tasks = dict(tasks)
        hidden_size = encoder.config.hidden_size
        orphans = [task for task in tasks.values() if task.head is not None and task.head not in tasks]
        if orphans:
            raise MTDNNError(f"task `{orphans[0].name}` is predicted by the head of `{orphans[0].head}`: "
                             f"list `{orphans[0].head}` in `tasks` too.")
        # Heads start as transformers starts a classifier on this encoder (N(0, initializer_range), zero bias)
        std = initializer_range_of(encoder.config)
        self.heads = nn.ModuleDict({
            name: build_head(task, hidden_size, std) for name, task in tasks.items() if task.head is None
        })
        if use_task_embeddings or task_embeddings.table_of(encoder) is not None:
            task_embeddings.attach(encoder, self.heads)
        self.encoder_groups = [list(group) for group in encoder_groups] if encoder_groups else None
        # Keyed by each group's first task; the first group's encoder is `self.encoder` (the same state-dict names
        # as under hard sharing), so nothing changes for a model without groups.
        self.group_encoders = nn.ModuleDict({group[0]: copy.deepcopy(encoder) for group in (encoder_groups or [])[1:]})
        self.encoder_of = {name: group[0] for group in (encoder_groups or [])[1:] for name in group}

    @classmethod
    def from_encoder(cls, name_or_path: str, tasks: dict[str, TaskSpec], from_scratch: bool = False,
                     attn_implementation: str | None = None, encoder_groups: list[list[str]] | None = None,
                     use_task_embeddings: bool = False) -> "MTDNNModel":
        """A new multi-task model on a pre-trained (or randomly initialised) encoder, with fresh heads."""
        return cls(shared_encoder(name_or_path, from_scratch, attn_implementation), tasks, encoder_groups,
                   use_task_embeddings)

    def head_task(self, head_name: str) -> TaskSpec:
        """The task that owns head `head_name` (a task's `head_name`: itself, or e.g. `mnli` for `ax`)."""
        if head_name not in self.heads:
            raise MTDNNError(f"this model has no head `{head_name}`; it has heads for {', '.join(self.heads)}.")
        return self.tasks[head_name]

    def encoder_for(self, head_name: str) -> nn.Module:
        """The encoder that task `head_name` runs through (the shared one, unless soft sharing gave it another)."""
        return self.group_encoders[self.encoder_of[head_name]] if head_name in self.encoder_of else self.encoder

    def encoders(self) -> list[nn.Module]:
        return [self.encoder, *self.group_encoders.values()]

    def sharing_penalty(self) -> torch.Tensor:
        """Soft sharing's sum_t ||theta_t - theta_mean||^2 over the encoders; 0 under hard sharing."""
        return soft_sharing_penalty(self.encoders())

    def embed(self, head_name: str, input_ids: torch.Tensor) -> torch.Tensor:
        """The word embeddings of `input_ids` in task `head_name`'s encoder (what SMART perturbs). (..., hidden)"""
        return self.encoder_for(head_name).get_input_embeddings()(input_ids)

    def encoder_outputs(self, input_ids, attention_mask, token_type_ids=None, head_name: str | None = None,
                        inputs_embeds=None):
        """The encoder's outputs; with task embeddings, the task's vector is added to the word embeddings."""
        encoder = self.encoder_for(head_name) if head_name is not None else self.encoder
        table = task_embeddings.table_of(encoder)
        if table is not None and head_name is not None:
            if inputs_embeds is None:
                inputs_embeds = encoder.get_input_embeddings()(input_ids)
            inputs_embeds = inputs_embeds + table(head_name)  # (batch, seq, hidden)
        inputs = {"attention_mask": attention_mask}
        if inputs_embeds is not None:
            inputs["inputs_embeds"] = inputs_embeds
        else:
            inputs["input_ids"] = input_ids
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return encoder(**inputs)

    def encode(self, input_ids, attention_mask, token_type_ids=None, head_name: str | None = None,
               inputs_embeds=None) -> torch.Tensor:
        """The sentence representation: BERT's pooled [CLS] where the encoder has a pooler, else [CLS]."""
        outputs = self.encoder_outputs(input_ids, attention_mask, token_type_ids, head_name, inputs_embeds)
        pooled = getattr(outputs, "pooler_output", None)
        return pooled if pooled is not None else outputs.last_hidden_state[:, 0]  # (batch, hidden)

    def forward(self, head_name: str, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                candidate_mask: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                sharing_penalty: bool = False) -> TaskOutput:
        """`inputs_embeds` (the word embeddings, e.g. perturbed by SMART) may replace `input_ids`. The soft-sharing
        penalty is computed here when asked for, inside `forward`, where DDP expects every use of a parameter."""
        task = self.head_task(head_name)
        head = self.heads[task.name]
        if task.type == "ranking":  # (batch, group_size, seq) -> one score per (query, candidate)
            batch, group_size = attention_mask.shape[:2]
            flatten = lambda tensor: tensor.flatten(0, 1) if tensor is not None else None  # noqa: E731
            flat = {"input_ids": flatten(input_ids), "attention_mask": flatten(attention_mask),
                    "token_type_ids": flatten(token_type_ids), "inputs_embeds": flatten(inputs_embeds)}
            logits = head(self.encode(**flat, head_name=task.name)).view(batch, group_size)  # (batch, group_size)
            if candidate_mask is not None:
                logits = logits.masked_fill(~candidate_mask, float("-inf"))
        elif isinstance(head, SANHead):  # reads the token states of premise and hypothesis, not a pooled vector
            states = self.encoder_outputs(input_ids, attention_mask, token_type_ids, task.name, inputs_embeds)
            logits = head(states.last_hidden_state, attention_mask, token_type_ids)
        else:
            logits = head(self.encode(input_ids, attention_mask, token_type_ids, task.name, inputs_embeds))
        loss = LOSSES[task.type](logits, labels) if labels is not None else None
        return TaskOutput(loss=loss, logits=logits, sharing_penalty=self.sharing_penalty() if sharing_penalty else None)

    def save_pretrained(self, directory: str | Path) -> None:
        """Weights (safetensors), the encoder's config, the task table and a manifest of the files; no pickles.

        With a LoRA adapter, the weights hold the frozen encoder and the adapter side by side, and the task table
        its settings (`lora`), from which `from_pretrained` injects the same adapter before loading them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(directory)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt", "mtdnn_version": str(FORMAT_VERSION)})
        lora = adapters.lora_of(self.encoder)  # every encoder has the same one (adapters.prepare_encoders)
        (directory / TASKS_FILE).write_text(json.dumps({
            "format_version": FORMAT_VERSION, "tasks": {name: task.to_dict() for name, task in self.tasks.items()},
            **({"encoder_groups": self.encoder_groups} if self.encoder_groups else {}),
            **({"lora": dataclasses.asdict(lora)} if lora else {}),
        }, indent=2))
        write_manifest(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "MTDNNModel":
        """Load a model written by `save_pretrained` (an mtdnn checkpoint directory, or the hub id of one that `mtdnn
        push` uploaded). Its files are checked against the directory's manifest first; a missing, changed or
        unreadable file is an MTDNNError naming it."""
        directory = local_checkpoint(directory, TASKS_FILE, skip=(TRAINING_STATE_FILE,))  # a local path: as given
        if (directory / TASKS_FILE).is_file():  # another release's checkpoint is named as such, whatever else differs
            cls._check_format_version(directory / TASKS_FILE)
        verify_files(directory, ("config.json", WEIGHTS_FILE, TASKS_FILE))
        tasks, groups, lora = cls._read_task_table(directory / TASKS_FILE)
        try:
            state = load_file(directory / WEIGHTS_FILE)
        except (SafetensorError, OSError) as error:
            raise MTDNNError(f"{directory / WEIGHTS_FILE} cannot be read as safetensors ({error}). "
                             f"{REFUSAL_HINT}") from None
        try:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(directory))
        except Exception as error:  # noqa: BLE001 - transformers raises OSError, ValueError, TypeError...
            raise MTDNNError(f"{directory / 'config.json'} does not describe an encoder transformers can build "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                             f"{REFUSAL_HINT}") from error
        if task_embeddings.names_in_state(state, "encoder."):
            task_embeddings.attach(encoder, task_embeddings.names_in_state(state, "encoder."))
        model = cls(encoder, tasks, groups)
        for each in model.encoders() if lora else ():  # the adapter's layers, before the weights that fill them
            adapters.add_lora(each, lora)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as error:  # a tensor of another shape than the config and task table give
            raise MTDNNError(f"{directory / WEIGHTS_FILE} does not match its task table and encoder config "
                             f"({str(error).splitlines()[-1].strip()}).") from None
        if result.missing_keys or result.unexpected_keys:
            raise MTDNNError(
                f"{directory / WEIGHTS_FILE} does not match its task table and encoder config "
                f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})."
            )
        return model

    @staticmethod
    def _check_format_version(path: Path) -> None:
        version = read_json(path).get("format_version")
        if version != FORMAT_VERSION:
            raise MTDNNError(f"{path} has format version {version}, this mtdnn reads version {FORMAT_VERSION}; use "
                             "the mtdnn release that wrote it.")

    @staticmethod
    def _read_task_table(path: Path) -> tuple[dict[str, TaskSpec], list[list[str]] | None, LoraSettings | None]:
        """The tasks (each checked as a config's task is, its key its name), encoder groups and LoRA adapter
        settings of a task table."""
        table = read_json(path)
        entries, groups = table.get("tasks"), table.get("encoder_groups")
        try:
            lora = build_dataclass(LoraSettings, table["lora"], "lora.") if "lora" in table else None
        except (MTDNNError, AttributeError, TypeError, ValueError) as error:  # not a mapping, or not LoRA's keys
            raise MTDNNError(f"{path}: `lora` must hold a LoRA adapter's settings ({error}). {REFUSAL_HINT}") from None
        if not isinstance(entries, dict) or not all(isinstance(values, dict) for values in entries.values()):
            raise MTDNNError(f"{path}: `tasks` must map each task name to its definition. {REFUSAL_HINT}")
        tasks = {}
        for key, values in entries.items():
            try:
                check_task_name(key, f"the key {key!r} of `tasks`")
                tasks[key] = TaskSpec.from_dict(values)
            except (MTDNNError, TypeError, ValueError) as error:
                raise MTDNNError(f"{path}: {error} {REFUSAL_HINT}") from None
            if tasks[key].name != key:
                raise MTDNNError(f"{path}: the task under the key {key!r} of `tasks` is named {tasks[key].name!r}; "
                                 f"a task table holds each task under its own name. {REFUSAL_HINT}")
        if groups is not None and not (isinstance(groups, list) and all(
                isinstance(group, list) and group and all(name in tasks for name in group) for group in groups)):
            raise MTDNNError(f"{path}: `encoder_groups` must be a list of groups of the table's task names. "
                             f"{REFUSAL_HINT}")
        return tasks, groups, lora


def shared_encoder(name_or_path: str, from_scratch: bool = False, attn_implementation: str | None = None) -> nn.Module:
    """The encoder to start from: a hub id or directory of a pre-trained model, or an mtdnn checkpoint, whose weights
    file nests the encoder's under `encoder.` (which `AutoModel` would silently not find)."""
    source = resolve(name_or_path)
    if not from_scratch and (Path(source) / TASKS_FILE).is_file():
        return MTDNNModel.from_pretrained(source).encoder
    return load_encoder(name_or_path, from_scratch, attn_implementation)
