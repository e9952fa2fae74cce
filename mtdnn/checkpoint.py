"""Self-describing checkpoint directories, written atomically, rotated, and resumable.

A run directory holds `checkpoints/step-N/` (the newest `train.keep_checkpoints` of them), `last`
(a symlink to the newest) and `best/` (hard links to the files of the best one, so rotation never
removes it). Every checkpoint is written into a hidden sibling and renamed into place: a crash or a
full disk during a save leaves the previous checkpoints whole. Every checkpoint lists its files' sizes and
sha256 in `mtdnn_manifest.json` (`mtdnn.manifest`), and is loaded whole or refused. Nothing is ever unpickled
on load: weights are safetensors, settings YAML/JSON, optimizer and RNG state `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from mtdnn.config import Config, load_config, save_config
from mtdnn.errors import MTDNNError
from mtdnn.manifest import REFUSAL_HINT, read_json, verify_files, write_manifest
from mtdnn.model import TASKS_FILE, WEIGHTS_FILE, MTDNNModel
from mtdnn.tasks import resolve_tasks

CONFIG_FILE = "mtdnn_config.yaml"
STATE_FILE = "trainer_state.json"
TRAINING_STATE_FILE = "training_state.pt"
"""Optimizer, scheduler and RNG state: only `--resume` needs it, and `best/` goes without it."""
MODEL_FILES = ("config.json", WEIGHTS_FILE, TASKS_FILE)
"""What `MTDNNModel.from_pretrained` reads (and checks against the manifest itself)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""What every tokenizer saves; a checkpoint without a manifest must hold them (without tokenizer.json, transformers
would quietly build a tokenizer of five special tokens)."""
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
        save_config(config, staging / CONFIG_FILE)
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
                       staging / TRAINING_STATE_FILE)
        write_manifest(staging, reuse_entries=True)  # last: it lists every file above
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
    """What `--resume` restores (optimizer, scheduler, RNG), once it and `trainer_state.json` (the position) are
    checked against the manifest and readable."""
    directory = Path(directory)
    path = directory / TRAINING_STATE_FILE
    if not path.is_file():
        raise MTDNNError(f"{directory} has no {TRAINING_STATE_FILE}: it cannot be resumed from.")
    verify_files(directory, (TRAINING_STATE_FILE, STATE_FILE), warn_unverified=False)  # the model's load warns
    position = read_json(directory / STATE_FILE).get("position")
    if not isinstance(position, dict) or not all(isinstance(value, (int, float)) for value in position.values()):
        raise MTDNNError(f"{directory / STATE_FILE} has no `position` mapping of numbers (step, epoch, batch); it "
                         f"cannot be resumed from. {REFUSAL_HINT}")
    try:
        state = torch.load(path, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError) as error:
        raise MTDNNError(f"{path} cannot be read ({type(error).__name__}: {_first_line(error)}); it cannot be "
                         f"resumed from. {REFUSAL_HINT}") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= state.keys():
        raise MTDNNError(f"{path} does not hold the optimizer, scheduler and RNG state that mtdnn saves; it cannot "
                         f"be resumed from. {REFUSAL_HINT}")
    return state


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else ""


def load_checkpoint(directory: str | Path) -> tuple[MTDNNModel, object, Config, dict]:
    """Model, tokenizer, the run's resolved config and trainer state of a checkpoint directory, each file checked
    against the checkpoint's manifest first."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MTDNNError(f"checkpoint directory {directory} does not exist.")
    if not (directory / CONFIG_FILE).is_file():
        raise MTDNNError(f"{directory} is not an mtdnn checkpoint (no {CONFIG_FILE}); "
                         "point at the `last/` or `best/` directory of a run.")
    # here every file but the model's (which from_pretrained checks as it reads them, and warns where unverified)
    verify_files(directory, (CONFIG_FILE, *TOKENIZER_FILES), listed_too=True,
                 skip=(*MODEL_FILES, TRAINING_STATE_FILE), warn_unverified=False)
    config = load_config(directory / CONFIG_FILE)
    try:  # its task names become paths too (`finetune --task` names the stage-3 run directory after one)
        resolve_tasks(config.tasks)
    except MTDNNError as error:
        raise MTDNNError(f"{directory / CONFIG_FILE}: {error} {REFUSAL_HINT}") from None
    state = read_json(directory / STATE_FILE) if (directory / STATE_FILE).is_file() else {}
    model = MTDNNModel.from_pretrained(directory)  # before the tokenizer, which reads config.json too
    return model, _load_tokenizer(directory), config, state


def _load_tokenizer(directory: Path):
    """The checkpoint's own tokenizer; files the tokenizer library cannot read are named, not a traceback."""
    for name in (*TOKENIZER_FILES, "special_tokens_map.json", "added_tokens.json"):
        if (directory / name).is_file():
            read_json(directory / name)
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:  # noqa: BLE001 - the library raises KeyError, TypeError... for a damaged file
        raise MTDNNError(f"the tokenizer files of {directory} ({', '.join(TOKENIZER_FILES)}) cannot be read as a "
                         f"tokenizer ({type(error).__name__}: {_first_line(error)}). {REFUSAL_HINT}") from error
