"""Running an experiment's jobs: a pool of worker processes sharing the CPU cores, and every training run a job
starts (one way: mtdnn's own stage functions, resumed where an interrupted run stopped)."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from mtdnn.config import DEFAULT_MODEL, Config, build_settings

logger = logging.getLogger(__name__)


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
    """Jobs to run side by side: on a CPU with 2+ cores, two single-threaded jobs get more done than one job on
    both cores (docs/performance.md, "Processes instead of threads"); one at a time with a GPU."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(2, len(os.sched_getaffinity(0))))


_SIDE_BY_SIDE = 1
"""Jobs running at once in this experiment: set in each worker of a `job_pool`; stored with every result."""


_BUSY = False
"""Whether this worker is running a job: a signal stops a job, and is ignored between jobs (where it would kill
the worker while it holds the pool's queue lock and hang the pool's shutdown)."""


def side_by_side() -> int:
    """Jobs running at once in this experiment (1 outside a pool's workers)."""
    return _SIDE_BY_SIDE


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


def mtdnn_config(tasks: list, output_dir: Path, seed: int, settings: dict, model: str = DEFAULT_MODEL,
                 **train_extra) -> Config:
    """A run config: `settings` holds the shared `data` and `train` sections; no best-checkpoint selection on dev."""
    train_settings = {**settings["train"], "seed": seed, "save_best": False, "keep_checkpoints": 1, **train_extra}
    return build_settings(Config, {"model": {"name_or_path": model}, "tasks": tasks, "data": dict(settings["data"]),
                                   "train": train_settings, "output_dir": str(output_dir)})


def run_stage(stage: Callable[..., Path], *args, **kwargs) -> Path:
    """Every training run a driver starts: `stage` is mtdnn's `train`, `finetune` or `distill`, called as its
    command does with `--resume`, so a re-run continues an interrupted run from its newest checkpoint (and refuses
    one whose settings changed) instead of starting it again. Returns the run directory."""
    return stage(*args, resume=True, **kwargs)


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
    """A finished run keeps metrics.jsonl and config.yaml; its checkpoints (a whole model each) go."""
    run_dir = Path(run_dir)
    for name in ("last", "best"):
        if (run_dir / name).is_symlink():
            (run_dir / name).unlink()
        elif (run_dir / name).exists():
            shutil.rmtree(run_dir / name)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
