"""Storing an experiment's results: one JSON file per finished job, so that a re-run skips it."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scripts import jobs

logger = logging.getLogger(__name__)


class ResultStore:
    """Finished jobs, one JSON file each at `root/<key parts>.json`, written atomically: a file means done."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, *key) -> Path:
        return self.root.joinpath(*map(str, key[:-1]), f"{key[-1]}.json")

    def load(self, *key) -> dict | None:
        path = self.path(*key)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, row: dict, *key) -> None:
        path = self.path(*key)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(json.dumps(row, indent=2))
        os.replace(staging, path)

    def rows(self) -> list[dict]:
        return [json.loads(path.read_text()) for path in sorted(self.root.rglob("*.json"))]

    def run_once(self, key: tuple, work: Callable[[], dict], **fields) -> dict:
        """The stored result of job `key`, else `work()` timed, stored with `fields`, and returned."""
        found = self.load(*key)
        if found is not None:
            logger.info("done already: %s", "/".join(map(str, key)))
            return found
        logger.info("running: %s", "/".join(map(str, key)))
        started = time.perf_counter()
        row = {**fields, **work()}
        row["seconds"] = row.get("seconds", time.perf_counter() - started)
        import torch

        row.setdefault("threads", torch.get_num_threads())  # how the job ran: its seconds depend on it
        row.setdefault("side_by_side", jobs.side_by_side())
        self.save(row, *key)
        return row


def run_or_load(output_dir: Path, target: str, run: Callable[[], ResultStore] | None) -> ResultStore:
    """`run()` (None: only the stored results); on Ctrl-C or SIGTERM, a one-line message and exit 130 instead
    of a traceback: the finished jobs are stored, and interrupted training runs have checkpointed."""
    from mtdnn.errors import StoppedBySignal

    try:
        return ResultStore(output_dir / "results") if run is None else run()
    except (KeyboardInterrupt, StoppedBySignal):
        print(f"interrupted: the finished jobs are stored under {output_dir}/results and interrupted training runs "
              f"kept their checkpoints; `make {target}` (or the same command) continues.", file=sys.stderr)
        sys.exit(130)
