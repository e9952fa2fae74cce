"""Experiment tracking through accelerate's trackers (`train.report_to`): the rows of metrics.jsonl, as scalars,
in TensorBoard, Weights & Biases, MLflow or any other tracker accelerate supports, from the main process only."""

from __future__ import annotations

from pathlib import Path

from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType

from mtdnn.errors import MTDNNError

PROJECT = "mtdnn"
"""The trackers' project (a W&B project, an MLflow experiment); TensorBoard writes to `<output_dir>/logs/mtdnn/`."""
LOGS = "logs"
TRACKERS = tuple(kind.value for kind in LoggerType if kind is not LoggerType.ALL)
PACKAGES = {"comet_ml": "comet-ml"}
"""The pip package of a tracker, where it is not spelt like the tracker."""


def check_tracker_names(names: list[str], key: str = "train.report_to") -> None:
    """Refuse a tracker accelerate does not know (when the config is read: a typo is found before any work)."""
    for name in names:
        if name not in TRACKERS:
            raise MTDNNError(f"`{key}` lists {name!r}, which is not a tracker accelerate supports; choose from "
                             f"{', '.join(TRACKERS)}.")


def check_installed(names: list[str], key: str = "train.report_to") -> None:
    """Refuse a tracker whose package is missing (when a run starts: reading a checkpoint's config needs none)."""
    available = {LoggerType(kind).value for kind in get_available_trackers()}
    missing = [name for name in names if name not in available]
    if missing:
        packages = " ".join(PACKAGES.get(name, name) for name in missing)
        raise MTDNNError(f"`{key}` lists {', '.join(missing)}, but the package is not installed: `pip install "
                         f"{packages}` (or remove it from `{key}`).")


def logging_dir(output_dir: Path) -> Path:
    return Path(output_dir) / LOGS


def hyperparameters(settings: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """A config as the flat scalars trackers store: nested keys dotted, lists and None written as text."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(hyperparameters(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return flat


def tracker_values(row: dict) -> dict[str, float]:
    """The scalars of one metrics.jsonl row: `train/loss`, `dev/<task>/<metric>`, `dev/score`, `held_out/loss`..."""
    if row["type"] == "train":
        return {f"train/{name}": row[name] for name in ("loss", "learning_rate", "examples_per_second") if name in row}
    if "metrics" in row:  # a dev evaluation of tasks
        values = {f"dev/{task}/{name}": value for task, metrics in row["metrics"].items()
                  for name, value in metrics.items()}
        return {**values, "dev/score": row["score"]}
    if row["type"] == "eval":  # stage 1's held-out masked-LM loss
        return {f"held_out/{name}": row[name] for name in ("loss", "perplexity") if name in row}
    return {}
