"""What a task is: a `TaskSpec` row (type, columns, labels, metrics, splits, data) and its checks, and the rule
for task names, which become file names."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mtdnn.errors import MTDNNError

TASK_TYPES = ("single_classification", "pair_classification", "regression", "ranking", "multi_label_classification")
"""The paper's four task types and multi-label classification, by name (their heads and losses are keyed by these)."""

MULTI_LABEL = "multi_label_classification"
"""Several independent yes/no labels per example: one sigmoid output per label name."""

MULTI_LABEL_METRICS = ("f1_micro", "f1_macro", "exact_match")
"""Metrics of multi-label predictions (multi-hot vectors); exact_match is subset accuracy."""

METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", *MULTI_LABEL_METRICS)

TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""What a task name (and a task's `head`) may be. Task names become file names (tokenised caches, prediction
files, fine-tuning runs), so a name is one plain path component; no dots, since a head is an `nn.ModuleDict` key."""

ANSWER_MODULES = ("linear", "san")
"""What turns a task's encoder output into logits: the paper's linear head, or SAN (paper section 3.2)."""


@dataclass(frozen=True)
class GlueFiles:
    """Where a GLUE task lives in the classic `download_glue_data.py` layout, and its TSV columns."""

    files: dict[str, str]
    """split -> path relative to the GLUE directory."""
    text_columns: tuple[str, ...]
    """Header names of the text columns (first, then second sentence)."""
    label_column: str | None
    """Header name of the label column (train/dev only)."""
    index_column: str | None = "index"
    """Header name of the example id column (test files); rows are numbered where absent."""
    headerless_columns: tuple[str, ...] = ()
    """Column names for files without a header line (CoLA train/dev)."""
    fallback_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """split -> other paths of the same file, tried in order where `files[split]` is absent."""

    def candidates(self, split: str) -> tuple[str, ...]:
        """The split's paths relative to the GLUE directory, in the order they are looked for."""
        return (self.files[split], *self.fallback_files.get(split, ())) if split in self.files else ()


@dataclass(frozen=True)
class TaskSpec:
    name: str
    """Task name (the Hugging Face GLUE config name for GLUE tasks); it names files, so it must match TASK_NAME."""
    type: str
    """One of TASK_TYPES."""
    text_columns: tuple[str, ...]
    """Input text columns in the source data: one (single sentence) or two (pair, query/candidate)."""
    label_names: tuple[str, ...] | None = None
    """Class names in label-id order; None for regression. Multi-label: every label that an example may carry."""
    label_column: str = "label"
    """Column holding the label (a name, an id, a number for regression, 0/1 for ranking candidates; multi-label:
    a list of names, or names joined by `label_delimiter`)."""
    metrics: tuple[str, ...] = ()
    """Metric names (those of the GLUE metric, or MULTI_LABEL_METRICS); empty: accuracy, multi-label all three."""
    threshold: float = 0.5
    """Multi-label only: a label is predicted where its probability is at least this."""
    label_delimiter: str = ","
    """Multi-label only: what separates label names in a text label column (an empty cell: no labels)."""
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"})
    """Our split name -> the source's split name (hub) ."""
    dropout: float = 0.1
    """Dropout before this task's output layer."""
    head: str | None = None
    """Predict with another task's head (MNLI-mismatched and AX use `mnli`); None: its own."""
    hub_dataset: str | None = None
    """Hugging Face dataset id (`nyu-mll/glue`) or None for local files."""
    hub_config: str | None = None
    """Dataset config name on the hub."""
    data_files: dict[str, str] | None = None
    """Local files, split -> path (.tsv, .csv, .json/.jsonl), for a user's own task."""
    index_column: str | None = "idx"
    """Column with example ids, written in prediction files; rows are numbered where absent."""
    skip_invalid_groups: bool = False
    """Ranking only: drop queries without exactly one positive among two or more candidates, instead of failing."""
    answer_module: str = "linear"
    """`linear` (dropout + linear on the pooled [CLS]) or `san` (stochastic answer network; pair classification)."""
    san_steps: int = 5
    """SAN: reasoning steps K."""
    san_step_dropout: float = 0.1
    """SAN: probability of dropping one step's prediction in training (at least one step is always kept)."""
    glue: GlueFiles | None = None
    """Where the task lives in a classic GLUE directory."""
    submission_file: str | None = None
    """File name on the GLUE leaderboard (e.g. `CoLA.tsv`)."""

    @property
    def head_name(self) -> str:
        return self.head or self.name

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names else 1

    def __post_init__(self) -> None:
        check_task_name(self.name, "task")
        where = f"task `{self.name}`"
        if self.head is not None:
            check_task_name(self.head, f"{where}: `head`")
        if self.type not in TASK_TYPES:
            raise MTDNNError(f"{where}: unknown type {self.type!r}; use one of {', '.join(TASK_TYPES)}.")
        if self.type.endswith("classification") and not self.label_names:
            raise MTDNNError(f"{where}: a classification task needs `label_names`.")
        expected = (1, 2) if self.type == MULTI_LABEL else (1,) if self.type == "single_classification" else (2,)
        if len(self.text_columns) not in expected:
            raise MTDNNError(f"{where}: type {self.type} needs {' or '.join(map(str, expected))} text column(s), "
                             f"got {list(self.text_columns)}.")
        self._check_metrics(where)
        self._check_multi_label(where)
        if not 0.0 <= self.dropout < 1.0:
            raise MTDNNError(f"{where}: dropout must be in [0, 1), got {self.dropout}.")
        if self.answer_module not in ANSWER_MODULES:
            raise MTDNNError(f"{where}: unknown answer_module {self.answer_module!r}; use one of "
                             f"{', '.join(ANSWER_MODULES)}.")
        if self.answer_module == "san" and self.type != "pair_classification":
            raise MTDNNError(f"{where}: answer_module san reads a premise and a hypothesis; it needs a "
                             f"pair_classification task, not {self.type}.")
        if isinstance(self.san_steps, bool) or not isinstance(self.san_steps, int) or self.san_steps < 1:
            raise MTDNNError(f"{where}: san_steps must be a whole number of at least 1, got {self.san_steps!r}.")
        if not isinstance(self.san_step_dropout, (int, float)) or not 0.0 <= self.san_step_dropout < 1.0:
            raise MTDNNError(f"{where}: san_step_dropout must be in [0, 1), got {self.san_step_dropout!r}.")

    def _check_metrics(self, where: str) -> None:
        if not self.metrics:  # frozen: the type's default is filled in once, so that to_dict() records it
            object.__setattr__(self, "metrics", MULTI_LABEL_METRICS if self.type == MULTI_LABEL else ("accuracy",))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise MTDNNError(f"{where}: unknown metric {unknown[0]!r}; use some of {', '.join(METRICS)}.")
        # multi-hot rows and single class ids need different metrics: scikit-learn's binary F1 refuses the former
        allowed = MULTI_LABEL_METRICS if self.type == MULTI_LABEL else METRICS[: -len(MULTI_LABEL_METRICS)]
        misplaced = [m for m in self.metrics if m not in allowed]
        if misplaced:
            raise MTDNNError(f"{where}: metric {misplaced[0]!r} does not apply to type {self.type}; use some of "
                             f"{', '.join(allowed)}.")

    def _check_multi_label(self, where: str) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0.0 < self.threshold < 1.0:
            raise MTDNNError(f"{where}: threshold must be a probability in (0, 1), got {self.threshold!r}.")
        if not isinstance(self.label_delimiter, str) or not self.label_delimiter:
            raise MTDNNError(f"{where}: label_delimiter must be a non-empty string, got {self.label_delimiter!r}.")
        if self.type == MULTI_LABEL and len(set(self.label_names)) != len(self.label_names):
            raise MTDNNError(f"{where}: `label_names` lists a name twice: {list(self.label_names)}.")
        clashing = [name for name in self.label_names or () if self.type == MULTI_LABEL and self.label_delimiter in name]
        if clashing:
            raise MTDNNError(f"{where}: the label name {clashing[0]!r} contains the label_delimiter "
                             f"{self.label_delimiter!r}, so it could not be read back; choose another delimiter.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TaskSpec":
        """Build a task from a mapping (the YAML config or a checkpoint's task table)."""
        name = values.get("name", "?")
        # `group_column` was declared but never read; task tables written with it (as null) still load
        values = {key: value for key, value in values.items() if not (key == "group_column" and value is None)}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in names]
        if unknown:
            raise MTDNNError(f"task `{name}`: unknown key `{unknown[0]}`; allowed keys: {', '.join(sorted(names))}.")
        missing = [k for k in ("name", "type", "text_columns") if k not in values]
        if missing:
            raise MTDNNError(f"task `{name}`: the key `{missing[0]}` is required for a task not in the GLUE table.")
        values = dict(values)
        for key in ("text_columns", "label_names", "metrics"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if isinstance(values.get("glue"), dict):
            glue = dict(values["glue"])
            for key in ("text_columns", "headerless_columns"):
                glue[key] = tuple(glue.get(key, ()))
            fallbacks = glue.get("fallback_files") or {}
            glue["fallback_files"] = {split: tuple(paths) for split, paths in fallbacks.items()}
            values["glue"] = GlueFiles(**glue)
        hints = typing.get_type_hints(cls)
        for key in ("dropout",):
            if key in values and not isinstance(values[key], (int, float)):
                raise MTDNNError(f"task `{name}`: `{key}` must be a number, got {values[key]!r}.")
        for key in ("splits", "data_files"):
            if values.get(key) is not None and not isinstance(values[key], dict):
                raise MTDNNError(f"task `{name}`: `{key}` must be a mapping of split -> name/path ({hints[key]}).")
        return cls(**values)


def check_task_name(name: object, where: str) -> None:
    """Refuse a task name that could not safely name a file; `where` says where it was given (a config key)."""
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        raise MTDNNError(
            f"{where}: {name!r} is not a valid task name. Task names become file names (caches, prediction files, "
            f"runs), so a name must match `{TASK_NAME.pattern}`: a letter or digit, then at most 63 letters, "
            "digits, `_` or `-` (no `/`, `\\`, `.`, spaces, nor an empty name). Rename the task."
        )


def path_for(directory: str | Path, name: str, suffix: str = "") -> Path:
    """`directory / (name + suffix)`, refused unless that names a file directly inside `directory`: task names
    are checked where tasks are defined, and this guards each place a name is joined into a path as well."""
    file_name = f"{name}{suffix}"
    if file_name in ("", ".", "..") or any(character in file_name for character in "/\\\0"):
        raise MTDNNError(f"{file_name!r} cannot name a file inside {directory}: a name joined into a path must be a "
                         f"single file name (no `/`, `\\`, nor `..`); task names must match `{TASK_NAME.pattern}`.")
    return Path(directory) / file_name
