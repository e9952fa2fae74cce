"""Self-describing checkpoint directories, written atomically, rotated, and resumable.

A run directory holds `checkpoints/step-N/` (the newest `train.keep_checkpoints` of them), `last`
(a symlink to the newest) and `best/` (hard links to the files of the best one, so rotation never
removes it). Every checkpoint is written into a hidden sibling and renamed into place: a crash or a
full disk during a save leaves the previous checkpoints whole. Nothing is ever unpickled on load:
weights are safetensors, settings YAML/JSON, optimizer and RNG state `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from mtdnn.config import Config, load_config, save_config
from mtdnn.errors import MTDNNError
from mtdnn.model import MTDNNModel
from mtdnn.pretrained import load_tokenizer

STATE_FILE = "trainer_state.json"
TRAINING_STATE_FILE = "training_state.pt"
CHECKPOINTS = "checkpoints"
STEP_DIR = re.compile(r"^step-(\d+)$")


def _write_atomically(directory: Path, write) -> None:
    """Call `write(staging)`, then swap the staging directory in place of `directory`."""
    staging = directory.parent / f".{directory.name}.saving"
    previous = directory.parent / f".{directory.name}.previous"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if directory.is_symlink():
        directory.unlink()
    elif directory.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(staging, directory)
    shutil.rmtree(previous, ignore_errors=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state["numpy"] = [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss_value = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss_value))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, model: MTDNNModel, tokenizer, config: Config, state: dict,
                    optimizer=None, scheduler=None) -> None:
    """A loadable checkpoint; with optimizer and scheduler, also everything `--resume` needs."""
    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_config(config, staging / "mtdnn_config.yaml")
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
                       staging / TRAINING_STATE_FILE)
    _write_atomically(Path(directory), write)


def step_checkpoints(output_dir: Path) -> list[Path]:
    """Complete `checkpoints/step-N` directories, oldest first (staging directories are hidden)."""
    root = Path(output_dir) / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in root.glob("step-*") if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def publish(output_dir: Path, checkpoint: Path, keep: int, is_best: bool) -> None:
    """Point `last` at a new step checkpoint, copy it to `best/` if it is the best, drop old ones."""
    output_dir = Path(output_dir)
    link = output_dir / ".last.link"
    link.unlink(missing_ok=True)
    link.symlink_to(checkpoint.relative_to(output_dir))
    if (output_dir / "last").exists() and not (output_dir / "last").is_symlink():
        shutil.rmtree(output_dir / "last")
    os.replace(link, output_dir / "last")
    if is_best:
        def link_files(staging: Path) -> None:
            for path in checkpoint.iterdir():
                if path.name != TRAINING_STATE_FILE:
                    os.link(path, staging / path.name)
        _write_atomically(output_dir / "best", link_files)
    for old in step_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_training_state(directory: Path) -> dict:
    path = Path(directory) / TRAINING_STATE_FILE
    if not path.is_file():
        raise MTDNNError(f"{directory} has no {TRAINING_STATE_FILE}: it cannot be resumed from.")
    return torch.load(path, weights_only=True)


def load_checkpoint(directory: str | Path) -> tuple[MTDNNModel, object, Config, dict]:
    """Model, tokenizer, the run's resolved config and trainer state of a checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MTDNNError(f"checkpoint directory {directory} does not exist.")
    if not (directory / "mtdnn_config.yaml").is_file():
        raise MTDNNError(f"{directory} is not an mtdnn checkpoint (no mtdnn_config.yaml); "
                         "point at the `last/` or `best/` directory of a run.")
    model = MTDNNModel.from_pretrained(directory)
    config = load_config(directory / "mtdnn_config.yaml")
    state_path = directory / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    return model, load_tokenizer(str(directory)), config, state
