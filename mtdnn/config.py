"""Run settings of stages 2 and 3: typed dataclasses, each field with its description and checks.

They are read from YAML, with `--set key=value` overrides, by mtdnn/yaml_settings.py.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mtdnn.errors import MTDNNError
from mtdnn.tasks import GLUE_TASKS
from mtdnn.tracking import check_tracker_names
from mtdnn.yaml_settings import build_settings, read_yaml

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class EncoderSettings:
    """The `model` keys of every stage: which encoder and tokenizer to start from (stage 1 reads only these)."""
    name_or_path: str = DEFAULT_MODEL
    """Hub id or local directory of a BERT-family encoder (stages 2 and 3: also an mtdnn checkpoint)."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; defaults to `name_or_path`."""
    from_scratch: bool = False
    """Build the encoder from its config with random weights instead of loading the weights."""
    attn_implementation: str | None = None
    """Attention kernel passed to transformers (`sdpa`, `eager`); None lets transformers choose."""


@dataclass
class LoraSettings:
    r: int = 0
    """Rank of the LoRA update of each adapted weight (0: off, every encoder weight trains)."""
    alpha: float = 16.0
    """Scale of the update: it is multiplied by alpha / r."""
    dropout: float = 0.1
    """Dropout on the adapter's input."""
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    """Names of the encoder's linear layers that get an adapter (BERT's attention `query`, `key`, `value`...)."""

    def __post_init__(self) -> None:
        if self.r < 0 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0 or not self.target_modules:
            raise MTDNNError(f"model.lora needs r >= 0, alpha > 0, dropout in [0, 1) and at least one target module; "
                             f"got r={self.r}, alpha={self.alpha}, dropout={self.dropout}, "
                             f"target_modules={self.target_modules}.")


@dataclass
class ModelSettings(EncoderSettings):
    """The shared encoder of stages 2 and 3: the common keys plus task embeddings and how tasks share it."""
    task_embeddings: bool = False
    """ERNIE 2.0: add a learned per-task vector to the input embeddings (saved with the encoder)."""
    sharing: Literal["hard", "soft"] = "hard"
    """`hard`: one encoder for all tasks (MT-DNN); `soft`: one encoder per group of tasks, tied by an L2 penalty."""
    encoder_groups: list[Any] | None = None
    """Soft sharing: lists of tasks that share one encoder; a task not listed gets its own."""
    sharing_weight: float = 1.0e-3
    """Soft sharing: lambda of the penalty lambda * sum_t ||theta_t - theta_mean||^2."""
    gradient_checkpointing: bool = False
    """Recompute the encoder's activations during the backward pass (transformers' own): less memory, more time."""
    freeze_embeddings: bool = False
    """Keep the encoder's embedding layer as loaded (it gets no updates)."""
    freeze_layers: int = 0
    """Keep the encoder's first N transformer layers as loaded."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Train one LoRA adapter (peft) on the shared encoder instead of its weights; the heads train fully."""

    def __post_init__(self) -> None:
        if self.sharing_weight < 0:
            raise MTDNNError(f"model.sharing_weight must be at least 0, got {self.sharing_weight}.")
        if self.freeze_layers < 0:
            raise MTDNNError(f"model.freeze_layers must be at least 0, got {self.freeze_layers}.")
        if self.encoder_groups and self.sharing != "soft":
            raise MTDNNError("model.encoder_groups is set but model.sharing is `hard`; set `model.sharing: soft`.")


@dataclass
class DataSettings:
    glue_dir: str | None = None
    """Directory in the `download_glue_data.py` layout; None falls back to $GLUE_DIR, then the hub."""
    max_seq_length: int = 128
    """Tokens per example after truncation ([CLS] and [SEP] included)."""
    max_train_samples: int | dict[str, int] | None = None
    """Keep the first N training examples of each task (None: all), or a mapping task -> N (tasks not named: all)."""
    max_eval_samples: int | None = None
    """Keep the first N dev/test examples of each task (None: all)."""
    cache_dir: str | None = None
    """Where tokenised data is cached; None: $MTDNN_CACHE, else $HF_HOME/mtdnn."""

    def __post_init__(self) -> None:
        if self.max_seq_length < 8:
            raise MTDNNError(f"data.max_seq_length must be at least 8, got {self.max_seq_length}.")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise MTDNNError(f"config key `data.max_eval_samples` must be a positive integer (or null: all), got "
                             f"{self.max_eval_samples}.")
        caps = self.max_train_samples if isinstance(self.max_train_samples, dict) else {"": self.max_train_samples}
        for task, cap in caps.items():
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                key = "data.max_train_samples" + (f".{task}" if task else "")
                raise MTDNNError(f"config key `{key}` must be a positive integer (or null), got {cap!r}.")

    def train_cap(self, task: str) -> int | None:
        """How many training examples of `task` to keep (None: all)."""
        if isinstance(self.max_train_samples, dict):
            return self.max_train_samples.get(task)
        return self.max_train_samples

    def check_train_caps(self, tasks) -> None:
        """A per-task cap must name a known task: one of the run's, or a GLUE task, which is ignored when the run
        leaves it out (narrowing a config's `tasks` keeps its caps valid); a typo would silently train on everything."""
        if isinstance(self.max_train_samples, dict):
            unknown = sorted(set(self.max_train_samples) - set(tasks) - set(GLUE_TASKS))
            if unknown:
                raise MTDNNError(f"config key `data.max_train_samples.{unknown[0]}` names no task of this run nor a "
                                 f"GLUE task; the tasks are {', '.join(tasks)}.")
            unused = sorted(set(self.max_train_samples) - set(tasks))
            if unused:
                logger.info("data.max_train_samples: ignoring the caps of %s, not a task of this run",
                            ", ".join(unused))


SAMPLING_STRATEGIES = ("proportional", "uniform", "temperature", "annealed_temperature", "main_task_ratio",
                       "continual")


@dataclass
class SamplingSettings:
    strategy: Literal[SAMPLING_STRATEGIES] = "proportional"
    """Which task each step trains (see mtdnn/sampling.py); `proportional` is MT-DNN's: every batch once per epoch."""
    temperature: float = 2.0
    """`temperature`: p_t proportional to n_t^(1/T); `annealed_temperature`: the T reached at the end (from T=1)."""
    main_task: str | None = None
    """`main_task_ratio`: the task whose batches are all kept."""
    ratio: float = 1.0
    """`main_task_ratio`: the other tasks' batches per epoch, at most ratio x the main task's."""
    stages: list[Any] | None = None
    """`continual`: the tasks each stage adds, e.g. [[rte], [mrpc, stsb]]; earlier tasks keep training."""

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise MTDNNError(f"train.sampling.temperature must be positive, got {self.temperature}.")
        if self.ratio < 0:
            raise MTDNNError(f"train.sampling.ratio must be at least 0, got {self.ratio}.")
        if self.strategy == "main_task_ratio" and not self.main_task:
            raise MTDNNError("train.sampling.strategy main_task_ratio needs train.sampling.main_task.")
        if self.strategy == "continual" and not self.stages:
            raise MTDNNError("train.sampling.strategy continual needs train.sampling.stages (lists of tasks).")


@dataclass
class AdversarialSettings:
    weight: float = 0.0
    """alpha: weight of SMART's smoothness loss (0: off; the SMART paper uses 1 to 5 for BERT)."""
    epsilon: float = 1.0e-3
    """Radius of the max-norm ball the embedding perturbation stays in."""
    step_size: float = 1.0e-3
    """eta: size of each (normalised) ascent step."""
    noise: float = 1.0e-5
    """sigma: standard deviation of the random start."""
    steps: int = 1
    """Ascent steps per batch."""

    def __post_init__(self) -> None:
        for key in ("weight", "epsilon", "step_size", "noise"):
            if getattr(self, key) < 0:
                raise MTDNNError(f"train.adversarial.{key} must be at least 0, got {getattr(self, key)}.")
        if self.steps < 1:
            raise MTDNNError(f"train.adversarial.steps must be at least 1, got {self.steps}.")


@dataclass
class DistillationSettings:
    soft_targets: str | None = None
    """Directory of `<task>.safetensors` teacher logits (written by `mtdnn distill`); null: no distillation."""
    weight: float = 0.5
    """Share of the soft-target loss: (1 - weight) * hard-label loss + weight * soft-target loss."""
    temperature: float = 1.0
    """T: teachers and student are softened as softmax(logits / T)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise MTDNNError(f"train.distillation.weight must be in [0, 1], got {self.weight}.")
        if self.temperature <= 0:
            raise MTDNNError(f"train.distillation.temperature must be positive, got {self.temperature}.")


@dataclass
class OptimizationSettings:
    """The `train` keys every loop here reads (stages 2 and 3, and stage 1's `mtdnn pretrain`), with their checks."""
    epochs: int = 3
    """Passes over the training data."""
    max_steps: int | None = None
    """Stop after this many optimizer updates (overrides `epochs` when set)."""
    batch_size: int = 32
    """Examples per mini-batch and per process; each mini-batch holds one task."""
    eval_batch_size: int = 128
    """Examples per evaluation batch (sorted by length, no gradients)."""
    learning_rate: float = 5.0e-5
    """Peak learning rate after warm-up."""
    weight_decay: float = 0.01
    """Decoupled weight decay, not applied to biases and LayerNorm weights."""
    optimizer: Literal["adamw", "adamax"] = "adamw"
    """`adamw`, or `adamax` as in the MT-DNN paper; both decay the weights decoupled from the gradient."""
    warmup_ratio: float = 0.1
    """Fraction of updates spent warming the learning rate up linearly from 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    gradient_accumulation_steps: int = 1
    """Mini-batches per optimizer update."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision, passed to accelerate."""
    seed: int = 42
    """Seed for weights of new heads, dropout and the task schedule."""
    eval_every_steps: int | None = None
    """Also evaluate every N updates (dev metrics are always computed at each epoch's end)."""
    log_every_steps: int = 20
    """Write the running training loss to metrics.jsonl every N updates."""
    save_every_steps: int | None = None
    """Also write a resumable checkpoint every N updates (one is always written at each epoch's end)."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that also get metrics.jsonl's rows (accelerate's: tensorboard, wandb, mlflow, ...)."""

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_every_steps"):
            if getattr(self, key) < 1:
                raise MTDNNError(f"train.{key} must be at least 1, got {getattr(self, key)}.")
        for key in ("max_steps", "eval_every_steps", "save_every_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise MTDNNError(f"train.{key} must be at least 1 (or null), got {getattr(self, key)}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise MTDNNError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.learning_rate <= 0:
            raise MTDNNError(f"train.learning_rate must be positive, got {self.learning_rate}.")
        check_tracker_names(self.report_to)
        if not 0 <= self.seed < 2**32:
            raise MTDNNError(f"train.seed must be in 0 .. 2**32 - 1 (what NumPy and torch accept), got {self.seed}.")


@dataclass
class TrainSettings(OptimizationSettings):
    """Multi-task training (stages 2 and 3): the shared keys plus checkpoints and the toolbox."""
    save_best: bool = True
    """Keep a `best/` checkpoint chosen by the mean dev score over tasks."""
    keep_checkpoints: int = 2
    """How many of the newest `checkpoints/step-N` directories to keep (`best/` is kept apart)."""
    skip_nonfinite_batches: bool = False
    """On a NaN/inf loss skip that batch (with a warning) instead of stopping the run."""
    early_stopping_patience: int | None = None
    """End the run after N dev evaluations in a row without a better dev score (None: never stop early)."""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    """Task sampling strategy."""
    adversarial: AdversarialSettings = field(default_factory=AdversarialSettings)
    """SMART adversarial regularisation (off unless `weight` > 0)."""
    distillation: DistillationSettings = field(default_factory=DistillationSettings)
    """Knowledge distillation from teachers' soft targets (off unless `soft_targets` is set)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep_checkpoints < 1:
            raise MTDNNError(f"train.keep_checkpoints must be at least 1, got {self.keep_checkpoints}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise MTDNNError(f"train.early_stopping_patience must be at least 1 (or null: never stop early), got "
                             f"{self.early_stopping_patience}.")


@dataclass
class Config:
    model: ModelSettings = field(default_factory=ModelSettings)
    """The shared encoder."""
    tasks: list[Any] = field(default_factory=lambda: ["cola", "sst2", "mrpc", "stsb", "rte"])
    """Task names (GLUE or defined here), or mappings `{name: ..., <task fields>}` for own tasks/overrides."""
    data: DataSettings = field(default_factory=DataSettings)
    """Where data comes from and how it is tokenised."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Optimisation."""
    output_dir: str = "runs/mtdnn"
    """Run directory: metrics.jsonl, config.yaml, checkpoints `last/` and `best/`."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise MTDNNError("config key `tasks` is empty: name at least one task (e.g. `tasks: [sst2]`).")
        for i, entry in enumerate(self.tasks):
            if not isinstance(entry, (str, dict)):
                raise MTDNNError(f"config key `tasks[{i}]` must be a task name or a mapping, got {entry!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply `--set` overrides, validate."""
    return build_settings(Config, read_yaml(path) if path is not None else {}, overrides, path)


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
