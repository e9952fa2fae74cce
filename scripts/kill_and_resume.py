"""Real-data kill-and-resume demonstration (issue 5): SIGKILL a training run, resume it, compare.

Runs `mtdnn train CONFIG` in a child process, kills it with SIGKILL a chosen number of steps after it wrote
a checkpoint (so that it dies mid-epoch, with work after the newest checkpoint lost), runs
`mtdnn train CONFIG --resume` on the same directory, and compares the result with an uninterrupted run of
the same config: every weight of `last/` (bitwise) and every dev evaluation in `metrics.jsonl` (exactly).

    python -m scripts.kill_and_resume configs/quickstart.yaml --reference runs/quickstart
    python -m scripts.kill_and_resume CONFIG --reference REF_DIR --output-dir DIR --set train.save_every_steps=50

`--reference` is an uninterrupted run's `output_dir` (trained without `save_every_steps`; checkpoints do not
change the arithmetic); without it, the uninterrupted run is trained first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file


def train_command(config: str, output_dir: Path, overrides: list[str], *extra: str) -> list[str]:
    sets = [item for override in overrides for item in ("--set", override)]
    return [sys.executable, "-m", "mtdnn", "train", config, *sets, "--set", f"output_dir={output_dir}", *extra]


def logged_steps(run_dir: Path) -> int:
    """The newest training step logged in `metrics.jsonl` (0 before the first row)."""
    log = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return max((row["step"] for row in rows), default=0)


def kill_mid_epoch(command: list[str], run_dir: Path, checkpoint_step: int, extra_steps: int) -> int:
    """Start the run; SIGKILL it once it has logged `extra_steps` steps past checkpoint `checkpoint_step`."""
    log = run_dir.parent / "killed-run.log"  # a file, not a pipe: a full pipe would stall the child
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    target = checkpoint_step + extra_steps
    while child.poll() is None:
        if (run_dir / "checkpoints" / f"step-{checkpoint_step}").is_dir() and logged_steps(run_dir) >= target:
            child.send_signal(signal.SIGKILL)
            child.wait()
            return logged_steps(run_dir)
        time.sleep(0.2)
    sys.exit(f"the run ended (exit {child.returncode}) before step {target}: {log.read_text()[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--reference", help="output_dir of an uninterrupted run of CONFIG (else trained here)")
    parser.add_argument("--output-dir", default="runs/kill-and-resume")
    parser.add_argument("--save-every-steps", type=int, default=100)
    parser.add_argument("--kill-after", type=int, default=40,
                        help="kill this many logged steps after the first step checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    output_dir = Path(args.output_dir)
    reference = Path(args.reference) if args.reference else output_dir / "uninterrupted"
    if args.reference and not (reference / "last" / "model.safetensors").is_file():
        sys.exit(f"{reference} holds no finished run (no last/model.safetensors); run `make quickstart` first, or "
                 "leave out --reference to train the uninterrupted run here.")
    if not args.reference:
        subprocess.run(train_command(args.config, reference, args.overrides, "--overwrite"), check=True)
    run_dir = output_dir / "killed"
    overrides = [*args.overrides, f"train.save_every_steps={args.save_every_steps}", "train.log_every_steps=1"]
    started = time.perf_counter()
    killed_at = kill_mid_epoch(train_command(args.config, run_dir, overrides, "--overwrite"), run_dir,
                               args.save_every_steps, args.kill_after)
    print(f"SIGKILL after step {killed_at} (newest checkpoint: step {args.save_every_steps}; "
          f"{killed_at - args.save_every_steps} steps lost)", flush=True)
    subprocess.run(train_command(args.config, run_dir, overrides, "--resume"), check=True,
                   stdout=subprocess.DEVNULL)
    minutes = (time.perf_counter() - started) / 60
    expected, resumed = (load_file(path / "last" / "model.safetensors") for path in (reference, run_dir))
    different = [name for name in expected if not expected[name].equal(resumed[name])]
    evals = [[row for row in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())
              if row["type"] == "eval"] for path in (reference, run_dir)]
    print(f"killed and resumed run: {minutes:.1f} min; weights of last/: {len(expected) - len(different)} of "
          f"{len(expected)} tensors bitwise equal to the uninterrupted run's")
    print(f"dev evaluations: {'identical' if evals[0] == evals[1] else 'DIFFERENT'} ({len(evals[1])} rows)")
    for row in evals[1]:
        print(json.dumps({"step": row["step"], "metrics": row["metrics"]}))
    return 0 if not different and evals[0] == evals[1] else 1


if __name__ == "__main__":
    sys.exit(main())
