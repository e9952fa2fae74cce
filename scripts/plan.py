"""What an experiment trains: the settings every run of it shares, recorded next to its results as plan.json."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from mtdnn.config import DEFAULT_MODEL


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The training settings every run of an experiment shares (each experiment's plan extends it)."""

    epochs: int
    """Epochs of every training run."""
    max_eval_samples: int | None = None
    """First N dev examples per task (None: the whole dev set)."""
    model: str = DEFAULT_MODEL
    max_seq_length: int = 128
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01

    def settings(self) -> dict:
        """The `data` and `train` config sections shared by every mtdnn run."""
        return {"data": {"max_seq_length": self.max_seq_length, "max_eval_samples": self.max_eval_samples},
                "train": {"epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                          "warmup_ratio": self.warmup_ratio, "weight_decay": self.weight_decay,
                          "optimizer": "adamw", "log_every_steps": 10}}


def task_name(entry: str | dict) -> str:
    """The name of a config `tasks` entry (a GLUE name, or a mapping with `name`)."""
    return entry if isinstance(entry, str) else entry["name"]


def described(plan: Plan) -> dict:
    """`plan` as the JSON value its output directory's plan.json holds."""
    return json.loads(json.dumps(dataclasses.asdict(plan), default=list))


def claim_output_dir(output_dir: Path, plan: Plan) -> None:
    """Record `plan` in `output_dir/plan.json`; exit if the directory holds results of a different plan.

    Plans compare as JSON values, so reordering the dataclass fields does not orphan stored results."""
    plan_file = output_dir / "plan.json"
    if plan_file.is_file() and json.loads(plan_file.read_text()) != described(plan):
        sys.exit(f"{output_dir} holds results of a different plan ({plan_file}); use another --output-dir")
    if not plan_file.is_file() and any((output_dir / "results").glob("**/*.json")):
        sys.exit(f"{output_dir}/results holds results of an unrecorded plan (no {plan_file.name}): they cannot be "
                 "told apart from this plan's; use another --output-dir, or move them away")
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = plan_file.with_suffix(".json.tmp")
    staging.write_text(json.dumps(described(plan), indent=2))
    staging.replace(plan_file)  # whole or absent, never half written
