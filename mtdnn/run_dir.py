"""A run's output directory: claimed by one process at a time, cleared wholly on --overwrite, and resumed only
with the settings it was started with.

The claim is a lock file created first, before anything else is written, and held (an advisory `flock`) for as
long as the run lives: a second run started into the same directory, even seconds later, is refused, and a run
killed at any moment (SIGKILL included) leaves the lock free for `--resume`. What a run leaves before its first
log row or checkpoint (the lock and its config.yaml) is no run to protect: the next run clears it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path

import yaml

from mtdnn.errors import MTDNNError

logger = logging.getLogger(__name__)

LOCK_FILE = ".mtdnn-run.lock"
RUN_FILES = ("metrics.jsonl", "checkpoints", "last", "best", "checkpoint", "logs")
"""What a run that has done some work leaves at its top level: a directory holding any of these holds a run."""
SETUP_FILES = (LOCK_FILE, "config.yaml", "pretrain_config.yaml")
"""What a run writes before any work: its lock and settings."""

RESUMABLE_CHANGES = frozenset({
    "output_dir", "data.glue_dir", "data.cache_dir", "train.eval_batch_size", "train.log_every_steps",
    "train.save_every_steps", "train.keep_checkpoints", "train.report_to", "model.gradient_checkpointing",
})
"""Settings a resumed run may change: where the same data is read from, how the run is logged and saved, and
whether activations are recomputed (a run out of memory resumes with gradient checkpointing on): nothing that
changes the updates it makes."""


def flatten(values: dict, prefix: str = "") -> dict[str, object]:
    """Dotted keys of a nested mapping: {"train": {"seed": 1}} -> {"train.seed": 1}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_setting(saved: dict, wanted: dict) -> str | None:
    """The first setting (a dotted key) that differs between two configs, ignoring RESUMABLE_CHANGES."""
    saved, wanted = flatten(saved), flatten(wanted)
    for key in sorted(set(saved) | set(wanted)):
        if key not in RESUMABLE_CHANGES and saved.get(key) != wanted.get(key):
            return key
    return None


class RunDirectory:
    """The output directory of one run, held by this process until it ends (or `release` is called)."""

    def __init__(self, path: str | Path, config_name: str = "config.yaml"):
        self.path, self.config_name = Path(path), config_name
        self._lock = None

    def _has(self, names) -> bool:
        return any((self.path / name).exists() or (self.path / name).is_symlink() for name in names)

    def claim(self, settings: dict, overwrite: bool, resume: bool, has_checkpoint: bool) -> bool:
        """Lock the directory for this run and prepare it; returns whether the run resumes.

        Without a flag a directory that holds a run is refused; --overwrite clears it wholly; --resume continues
        it from its checkpoint if the settings are those it was started with (else it is refused, naming the
        setting, and nothing is written), or starts it again if it has no checkpoint yet. `config.yaml` is written
        only once the run is accepted."""
        if self.path.exists() and not self.path.is_dir():
            raise MTDNNError(f"`output_dir` {self.path} is a file, not a directory; choose a directory for the run.")
        if self.path.is_dir() and any(self.path.iterdir()) and not self._has((*SETUP_FILES, *RUN_FILES)):
            raise MTDNNError(f"`output_dir` {self.path} is not empty and holds no mtdnn run; choose a new or empty "
                             "directory (mtdnn does not clear directories that it did not write).")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire()  # before looking further: a run in progress is refused whatever the flags
        if self._has(RUN_FILES) and not (overwrite or resume):
            self.release()
            raise MTDNNError(f"output directory {self.path} already holds a run; choose another `output_dir`, pass "
                             "--resume to continue it, or --overwrite to replace it.")
        resuming = resume and has_checkpoint
        if resuming:
            self._check_resumable(settings)
        else:
            if resume:
                logger.info("no checkpoint in %s to resume from; starting afresh", self.path)
            self.clear()
        (self.path / self.config_name).write_text(yaml.safe_dump(settings, sort_keys=False))
        return resuming

    def _acquire(self) -> None:
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise MTDNNError(f"output directory {self.path} is in use by a running mtdnn run ({holder}); wait for it "
                             "to end, stop it, or choose another `output_dir`.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        handle.flush()
        self._lock = handle

    def _check_resumable(self, settings: dict) -> None:
        path = self.path / self.config_name
        if not path.is_file():
            return
        try:
            saved = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            raise MTDNNError(f"{path} is not valid YAML; the run cannot be checked for --resume. Use --overwrite "
                             "to start it again.") from None
        key = changed_setting(saved if isinstance(saved, dict) else {}, settings)
        if key is not None:
            old, new = flatten(saved).get(key), flatten(settings).get(key)
            raise MTDNNError(f"--resume would change the run in {self.path}: config key `{key}` was {old!r} and is "
                             f"now {new!r}. Resume with the run's own settings ({path}), or start a new run "
                             "(another `output_dir`, or --overwrite).")

    def clear(self) -> None:
        """Remove everything in the directory but the lock: no file of an earlier run survives an --overwrite."""
        for entry in self.path.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
