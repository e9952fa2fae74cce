"""What every stage writes to be resumed: step checkpoints written atomically and rotated, and the optimizer,
scheduler and RNG state they carry, read back without unpickling anything.

A run directory holds `checkpoints/step-N/` (the newest `keep` of them), `last` (a symlink to the newest) and,
in stage 2 and 3, `best/` (hard links to the files of the best one, so rotation never removes it). Every checkpoint
is written into a hidden sibling and renamed into place: a crash or a full disk during a save leaves the previous
checkpoints whole. Each lists its files' sizes and sha256 in `mtdnn_manifest.json` (`mtdnn.manifest`).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mtdnn.errors import MTDNNError
from mtdnn.manifest import REFUSAL_HINT, read_json, verify_files, write_manifest

STATE_FILE = "trainer_state.json"
"""The position (epoch, batch, step) and whatever the stage records with it: readable JSON."""
TRAINING_STATE_FILE = "training_state.pt"
"""Optimizer, scheduler and RNG state: only `--resume` needs it, and `best/` goes without it."""
CHECKPOINTS = "checkpoints"
STEP_DIR = re.compile(r"^step-(\d+)$")


def write_atomically(directory: Path, write: Callable[[Path], None]) -> None:
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


def write_checkpoint(directory: Path, write_model: Callable[[Path], None], state: dict, optimizer=None,
                     scheduler=None) -> None:
    """A checkpoint directory: what `write_model(staging)` writes, `trainer_state.json` and, with an optimizer and
    scheduler, everything `--resume` needs; then the manifest of it all."""
    def write(staging: Path) -> None:
        write_model(staging)
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
                       staging / TRAINING_STATE_FILE)
        write_manifest(staging, reuse_entries=True)  # last: it lists every file above
    write_atomically(Path(directory), write)


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
        write_atomically(output_dir / "best", link_files)
    for old in step_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def remove_checkpoints(output_dir: Path) -> None:
    """A finished run that keeps no checkpoint (stage 1): nothing is left to resume."""
    (Path(output_dir) / "last").unlink(missing_ok=True)
    shutil.rmtree(Path(output_dir) / CHECKPOINTS, ignore_errors=True)


def load_training_state(directory: Path) -> tuple[dict, dict]:
    """What `--resume` restores: the checkpoint's trainer state (with its `position`) and its optimizer,
    scheduler and RNG state, once both files are checked against the manifest and readable."""
    directory = Path(directory)
    path = directory / TRAINING_STATE_FILE
    if not path.is_file():
        raise MTDNNError(f"{directory} has no {TRAINING_STATE_FILE}: it cannot be resumed from.")
    verify_files(directory, (TRAINING_STATE_FILE, STATE_FILE), warn_unverified=False)  # the model's load warns
    state = read_json(directory / STATE_FILE)
    position = state.get("position")
    if not isinstance(position, dict) or not all(isinstance(value, (int, float)) for value in position.values()):
        raise MTDNNError(f"{directory / STATE_FILE} has no `position` mapping of numbers (step, epoch, batch); it "
                         f"cannot be resumed from. {REFUSAL_HINT}")
    try:
        saved = torch.load(path, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError) as error:
        raise MTDNNError(f"{path} cannot be read ({type(error).__name__}: {first_line(error)}); it cannot be "
                         f"resumed from. {REFUSAL_HINT}") from None
    if not isinstance(saved, dict) or not {"optimizer", "scheduler", "rng"} <= saved.keys():
        raise MTDNNError(f"{path} does not hold the optimizer, scheduler and RNG state that mtdnn saves; it cannot "
                         f"be resumed from. {REFUSAL_HINT}")
    return state, saved


def first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else ""
