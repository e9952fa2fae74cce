"""Self-describing checkpoint directories, written atomically: weights, config, task table, tokenizer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mtdnn.config import Config, load_config, save_config
from mtdnn.errors import MTDNNError
from mtdnn.model import MTDNNModel
from mtdnn.pretrained import load_tokenizer

STATE_FILE = "trainer_state.json"


def save_checkpoint(directory: Path, model: MTDNNModel, tokenizer, config: Config, state: dict) -> None:
    """Write into a hidden sibling directory, then swap it in: an interrupted save never leaves half a
    checkpoint in place of a whole one."""
    directory = Path(directory)
    staging = directory.parent / f".{directory.name}.saving"
    previous = directory.parent / f".{directory.name}.previous"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    save_config(config, staging / "mtdnn_config.yaml")
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    if directory.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(staging, directory)
    shutil.rmtree(previous, ignore_errors=True)


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
