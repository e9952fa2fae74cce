"""Run settings: typed dataclasses loaded from YAML, validated, overridable with `--set key=value`."""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mtdnn.errors import MTDNNError
from mtdnn.tasks import GLUE_TASKS

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ModelSettings:
    name_or_path: str = DEFAULT_MODEL
    """Hub id or local directory of a BERT-family encoder (or an mtdnn checkpoint)."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; defaults to `name_or_path`."""
    from_scratch: bool = False
    """Build the encoder from its config with random weights instead of loading the weights."""
    attn_implementation: str | None = None
    """Attention kernel passed to transformers (`sdpa`, `eager`); None lets transformers choose."""
    task_embeddings: bool = False
    """ERNIE 2.0: add a learned per-task vector to the input embeddings (saved with the encoder)."""
    sharing: Literal["hard", "soft"] = "hard"
    """`hard`: one encoder for all tasks (MT-DNN); `soft`: one encoder per group of tasks, tied by an L2 penalty."""
    encoder_groups: list[Any] | None = None
    """Soft sharing: lists of tasks that share one encoder; a task not listed gets its own."""
    sharing_weight: float = 1.0e-3
    """Soft sharing: lambda of the penalty lambda * sum_t ||theta_t - theta_mean||^2."""

    def __post_init__(self) -> None:
        if self.sharing_weight < 0:
            raise MTDNNError(f"model.sharing_weight must be at least 0, got {self.sharing_weight}.")
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


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field's annotation; builds nested dataclasses; raises on mismatch."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except MTDNNError as error:  # the option of the value's own kind (a mapping, a list) explains best
                kind = typing.get_origin(option) or option
                errors.insert(0 if isinstance(kind, type) and isinstance(value, kind) else len(errors), error)
        raise errors[0]
    if origin is Literal:
        if value not in typing.get_args(annotation):
            allowed = ", ".join(repr(v) for v in typing.get_args(annotation))
            raise MTDNNError(f"config key `{key}` must be one of {allowed}; got {value!r}.")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise MTDNNError(f"config key `{key}` must be a mapping, got {value!r}.")
        return build_dataclass(annotation, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise MTDNNError(f"config key `{key}` must be a list, got {value!r}.")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise MTDNNError(f"config key `{key}` must be a mapping, got {value!r}.")
        key_type, value_type = typing.get_args(annotation)
        return {_coerce(name, key_type, key): _coerce(item, value_type, f"{key}.{name}") for name, item in value.items()}
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # YAML reads `5e-5` (no dot) as a string
            number = float(value)
        except ValueError:
            number = None
        if number is not None and not math.isfinite(number):  # .nan, .inf: no setting means that
            raise MTDNNError(f"config key `{key}` must be a finite number, got {value!r}.")
        if number is not None:
            return number
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise MTDNNError(
            f"config key `{key}` must be of type {_type_name(annotation)}, got {value!r} ({type(value).__name__})."
        )
    return value


def build_dataclass(cls: type, values: dict, prefix: str = "") -> Any:
    """Build `cls` from a mapping, naming any unknown key or wrongly typed value."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise MTDNNError(
            f"unknown config key `{prefix}{unknown[0]}`; the keys allowed here are: {', '.join(names)}."
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    return cls(**kwargs)


def apply_override(values: dict, assignment: str) -> None:
    """Apply one `--set a.b=value` to a nested mapping; the value is parsed as YAML."""
    if "=" not in assignment:
        raise MTDNNError(f"--set expects key=value (e.g. train.max_steps=20), got {assignment!r}.")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = values
    for key in keys[:-1]:
        if node.get(key) is None:  # an unset (null) key becomes a section: `data.max_train_samples.cola=300`
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise MTDNNError(f"--set {dotted}: `{key}` is not a section of the config.")
    try:
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise MTDNNError(f"--set {dotted}: the value {raw!r} is not valid YAML ({problem}); quote a string, "
                         "e.g. --set 'tasks=[rte, mrpc]'.") from None


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML settings file (`yaml.safe_load`); a missing or malformed file is an MTDNNError."""
    path = Path(path)
    if not path.is_file():
        raise MTDNNError(f"config file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MTDNNError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise MTDNNError(f"config file {path} must hold a mapping of keys, not {type(values).__name__}.")
    return values


def build_settings(cls: type, values: dict, overrides: list[str] | None = None, source: str | Path | None = None):
    """Apply `--set` overrides to a mapping and build the settings dataclass `cls`, naming `source` on error."""
    for assignment in overrides or []:
        apply_override(values, assignment)
    try:
        return build_dataclass(cls, values)
    except MTDNNError as error:
        raise MTDNNError(f"{error}{f' (in {source})' if source else ''}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply `--set` overrides, validate."""
    return build_settings(Config, read_yaml(path) if path is not None else {}, overrides, path)


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
