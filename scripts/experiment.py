"""What the experiment drivers (reproduce.py, transfer.py, ablation.py) share.

One JSON file per finished job (so a re-run skips it), mtdnn runs that resume where they stopped, mean ± std
over seeds, random training subsets written as task files, and the driver's own section of docs/results.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtdnn.config import Config, build_settings
from mtdnn.sources import glue_dir_from, load_split
from mtdnn.tasks import resolve_tasks
from mtdnn.training import train

logger = logging.getLogger(__name__)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The training settings every run of an experiment shares (each driver extends it)."""

    epochs: int
    """Epochs of every training run."""
    max_eval_samples: int | None = None
    """First N dev examples per task (None: the whole dev set)."""
    model: str = MODEL
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


class InlineExecutor:
    """The one-worker `job_pool`: `submit` runs the job at once in this process and raises its error there."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def result(self, future: concurrent.futures.Future):
        return future.result()


class BoundedPool:
    """A process pool that holds at most one job per worker: `submit` waits for a free worker, so nothing sits
    queued inside the pool, and a failure or an interruption leaves only the jobs in flight to stop. Any job's
    error is raised by the next `submit` or `result`."""

    def __init__(self, pool: concurrent.futures.ProcessPoolExecutor, workers: int):
        self.pool, self.workers, self.in_flight = pool, workers, set()

    def _reap(self) -> None:
        done = {future for future in self.in_flight if future.done()}
        self.in_flight -= done
        for future in done:
            future.result()  # raises the job's error here

    def _wait(self, return_when: str) -> None:
        concurrent.futures.wait(self.in_flight, return_when=return_when)
        self._reap()

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        self._reap()
        while len(self.in_flight) >= self.workers:
            self._wait(concurrent.futures.FIRST_COMPLETED)
        future = self.pool.submit(_run_in_worker, fn, args, kwargs)
        self.in_flight.add(future)
        return future

    def result(self, future: concurrent.futures.Future):
        """`future`'s result, raising meanwhile the error of any other job that fails first."""
        while not future.done():
            self._wait(concurrent.futures.FIRST_COMPLETED)
        self._reap()
        return future.result()

    def finish(self) -> None:
        """Wait for every job in flight; the first error is raised as soon as it happens."""
        while self.in_flight:
            self._wait(concurrent.futures.FIRST_EXCEPTION)

    def stop_workers(self) -> None:
        """SIGTERM to every worker: a training loop checkpoints and stops, anything else ends."""
        for process in list((self.pool._processes or {}).values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)


def default_workers() -> int:
    """Jobs to run side by side: two single-threaded jobs on a CPU with 2+ cores get more done than one job on
    both cores (on the 2-core EPYC here, `scripts/profile_step.py --side-by-side`: 1.05x to 1.69x the MiniLM
    training steps per second over 16 to 64 tokens per example, in two noisy runs); one at a time with a GPU."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(2, len(os.sched_getaffinity(0))))


_SIDE_BY_SIDE = 1
"""Jobs running at once in this experiment: set in each worker of a `job_pool`; stored with every result."""


_BUSY = False
"""Whether this worker is running a job: a signal stops a job, and is ignored between jobs (where it would kill
the worker while it holds the pool's queue lock and hang the pool's shutdown)."""


def _run_in_worker(fn, args, kwargs):
    global _BUSY
    _BUSY = True
    try:
        return fn(*args, **kwargs)
    finally:
        _BUSY = False


def _signal_in_worker(number, _frame) -> None:
    if _BUSY:  # a training loop has its own handler (checkpoint, then stop); anything else is interrupted
        raise KeyboardInterrupt(f"signal {number}")


def _start_worker(threads: int, parent: int, workers: int) -> None:
    import threading

    import torch

    global _SIDE_BY_SIDE
    _SIDE_BY_SIDE = workers
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _signal_in_worker)

    def stop_when_orphaned() -> None:  # the parent was killed outright: checkpoint and stop, as on SIGTERM
        while os.getppid() == parent:
            time.sleep(2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_orphaned, daemon=True).start()


def _raise_interrupt(number, _frame):
    raise KeyboardInterrupt(f"signal {number}")


@contextlib.contextmanager
def job_pool(workers: int):
    """A pool for an experiment's jobs: `workers` spawned processes sharing the CPU cores, or (1) this process.
    Jobs are module-level functions with picklable arguments, each writing its own result file; leaving the
    block waits for them. On a job's error, Ctrl-C or SIGTERM, no further job starts, the workers get SIGTERM
    (a training run checkpoints, so a re-run resumes it) and the error propagates once they have stopped."""
    if workers <= 1:
        yield InlineExecutor()
        return
    import multiprocessing

    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    logger.info("jobs run on %d workers of %d thread(s) each", workers, threads)
    pool = BoundedPool(concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
        initargs=(threads, os.getpid(), workers)), workers)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield pool
        pool.finish()
    except BaseException:
        pool.stop_workers()
        pool.pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    pool.pool.shutdown(wait=True)


def add_run_arguments(parser: argparse.ArgumentParser, target: str, quick: str) -> None:
    """The options every experiment driver has: `--quick` (what it trains: `quick`), where results and the report
    go, `--report-only` and `--workers`."""
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {quick}")
    parser.add_argument("--output-dir", type=Path, default=None, help=f"default runs/{target} (quick: -quick)")
    parser.add_argument("--report", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the stored results")
    parser.add_argument("--workers", type=int, default=None,
                        help="jobs run side by side (default: 2 on a CPU with 2+ cores, 1 with a GPU)")


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


def described(plan: Recipe) -> dict:
    """`plan` as the JSON value its output directory's plan.json holds."""
    return json.loads(json.dumps(dataclasses.asdict(plan), default=list))


def claim_output_dir(output_dir: Path, plan: Recipe) -> None:
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


def task_name(entry: str | dict) -> str:
    """The name of a config `tasks` entry (a GLUE name, or a mapping with `name`)."""
    return entry if isinstance(entry, str) else entry["name"]


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
        row.setdefault("side_by_side", _SIDE_BY_SIDE)
        self.save(row, *key)
        return row


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_mean_std(values: list[float], scale: float = 100.0) -> str:
    """`81.2 ± 1.3` (scaled to points), `81.2` for one value, `–` for none."""
    mean, std = mean_std(values)
    if mean is None:
        return "–"
    return f"{mean * scale:.1f}" + (f" ± {std * scale:.1f}" if std is not None else "")


def subset_size(fraction: float, total: int) -> int:
    """Examples in a `fraction` of `total` (at least one)."""
    return max(1, min(total, round(fraction * total)))


def write_subset(entry: str | dict, size: int | None, seed: int, directory: Path) -> dict:
    """A task entry whose training set is `size` examples drawn at random (by `seed`) from the task's own.

    The train subset and the complete dev set are written as JSON-lines files with the task's own column
    names and the entry points `data_files` at them, so mtdnn and the Trainer reference read the same rows.
    Works for any task with train and dev splits (GLUE name or own task); `size=None` keeps all rows.
    """
    task = next(iter(resolve_tasks([entry]).values()))
    if task.type == "ranking":
        raise ValueError(f"task {task.name}: subsets of ranking tasks (grouped rows) are not supported")
    glue_dir = glue_dir_from(None)
    files = {}
    for split in ("train", "dev"):
        label = f"n{size}-s{seed}" if split == "train" and size is not None else "all"
        path = Path(directory) / f"{task.name}-{split}-{label}.jsonl"
        files[split] = str(path.resolve())
        if path.is_file():  # deterministic content; rewriting would only change its mtime (and the data cache key)
            continue
        columns = load_split(task, split, glue_dir)
        rows = range(len(columns["idx"]))
        if split == "train" and size is not None:
            if size > len(rows):
                raise ValueError(f"task {task.name}: asked for {size} training examples, it has {len(rows)}")
            rows = sorted(np.random.default_rng(seed).choice(len(rows), size=size, replace=False).tolist())
        names = [task.index_column or "idx", *task.text_columns]
        sources = ["idx", "text_a", "text_b"][: len(names)]
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        with open(staging, "w") as handle:
            for row in rows:
                record = {name: columns[source][row] for name, source in zip(names, sources)}
                if "label" in columns:
                    record[task.label_column] = columns["label"][row]
                handle.write(json.dumps(record) + "\n")
        os.replace(staging, path)
    base = entry if isinstance(entry, dict) else {"name": entry}
    return {**base, "data_files": files}


def mtdnn_config(tasks: list, output_dir: Path, seed: int, settings: dict, model: str = MODEL,
                 **train_extra) -> Config:
    """A run config: `settings` holds the shared `data` and `train` sections; no best-checkpoint selection on dev."""
    train_settings = {**settings["train"], "seed": seed, "save_best": False, "keep_checkpoints": 1, **train_extra}
    return build_settings(Config, {"model": {"name_or_path": model}, "tasks": tasks, "data": dict(settings["data"]),
                                   "train": train_settings, "output_dir": str(output_dir)})


def train_or_resume(config: Config) -> Path:
    """Train, continuing from the newest checkpoint of an interrupted run in the same directory."""
    return train(config, overwrite=True, resume=True)


def eval_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [row for row in map(json.loads, path.read_text().splitlines()) if row["type"] == "eval"]


def final_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """Dev metrics per task after the last update (never the best epoch: no model selection on dev)."""
    rows = eval_rows(run_dir)
    if not rows:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has no evaluation; the run did not finish")
    return rows[-1]["metrics"]


def remove_checkpoints(run_dir: Path) -> None:
    """A finished run keeps metrics.jsonl and config.yaml; its checkpoints (~270 MB each) go."""
    run_dir = Path(run_dir)
    for name in ("last", "best"):
        if (run_dir / name).is_symlink():
            (run_dir / name).unlink()
        elif (run_dir / name).exists():
            shutil.rmtree(run_dir / name)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def write_section(report: Path, name: str, body: str, title: str = "# Results") -> None:
    """Replace this driver's section (between `<!-- name:begin -->` and `<!-- name:end -->`), or append it."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = report.read_text() if report.is_file() else f"{title}\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)


def how_jobs_ran(rows: list[dict]) -> str:
    """`1 thread per job, 2 jobs side by side`, from the result rows (older rows say nothing)."""
    threads = sorted({row["threads"] for row in rows if "threads" in row})
    together = sorted({row.get("side_by_side", 1) for row in rows if "threads" in row})
    if not threads:
        return "threads per job not recorded"
    return (f"{'/'.join(map(str, threads))} thread(s) per job, {'/'.join(map(str, together))} job(s) side by "
            "side")


def report_header(title: str, *, command: str, target: str, output_dir: Path | str, job_time: str,
                  smoke: str | None = None) -> list[str]:
    """The opening lines of every experiment's report section: its title, a warning when a smoke run (`smoke`
    says what it trained) wrote it, and where it came from (command, `make` target, result files, machine)."""
    lines = [title, ""]
    if smoke:
        lines += [f"> **This section was generated by a `--quick` smoke run** ({smoke}): its numbers check the "
                  f"plumbing and are not evidence. `make {target}` replaces it with the real run.", ""]
    make = f"make {target}" + (" ARGS=--quick" if smoke else "")
    with contextlib.suppress(ValueError):  # a path inside the working directory is shown relative to it
        output_dir = Path(output_dir).resolve().relative_to(Path.cwd())
    return lines + [f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `{command}` (`{make}`), from the "
                    f"result files in `{output_dir}/results/`; {job_time}. Machine: {machine()}.", ""]


def machine() -> str:
    """One line: CPU, cores, accelerator, library versions."""
    import torch
    import transformers

    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, {device}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
            f"Python {platform.python_version()}")
