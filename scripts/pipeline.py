"""MT-DNN stages 2 and 3 end to end: multi-task training on every task of a config, then fine-tuning of the
multi-task checkpoint on each task alone (the same training loop), and a table of dev scores after each stage.

    python -m scripts.pipeline [--config configs/pipeline.yaml] [--quick] [--set KEY=VALUE ...]
                               [--finetune-set KEY=VALUE ...]

Stage 2 is `mtdnn train CONFIG`, stage 3 `mtdnn finetune RUN/best --task NAME` for every task with a training
split (starting from the checkpoint's resolved config, so `--set` applies to both stages). Both report the dev
metrics of their `best/` checkpoint, chosen on dev. The table is printed and written to
`<output_dir>/dev_table.md` and `dev_table.json`. `--quick` caps data and steps to finish in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import datasets
import transformers

from mtdnn.config import load_config
from mtdnn.errors import MTDNNError
from mtdnn.finetuning import finetune
from mtdnn.tasks import resolve_tasks
from mtdnn.training import train

QUICK = ["data.max_train_samples=256", "data.max_eval_samples=256", "data.max_seq_length=64", "train.epochs=1",
         "train.batch_size=16", "train.eval_batch_size=64", "train.warmup_ratio=0.1"]
"""Overrides of --quick: 16 updates per task and stage, dev sets cut to 256 examples."""


def best_dev_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """Dev metrics of a run's best checkpoint (its last one where `save_best` is off)."""
    checkpoint = run_dir / "best" if (run_dir / "best").is_dir() else run_dir / "last"
    return json.loads((checkpoint / "trainer_state.json").read_text())["dev_metrics"]


def dev_table(stage2: dict, stage3: dict) -> list[dict]:
    """One row per (task, metric): the dev score after stage 2 and after stage 3."""
    return [{"task": task, "metric": metric, "stage2": value, "stage3": stage3.get(task, {}).get(metric)}
            for task, metrics in stage2.items() for metric, value in metrics.items()]


def format_table(rows: list[dict]) -> str:
    number = lambda value: "-" if value is None else f"{100 * value:.2f}"  # noqa: E731
    lines = ["| task | metric | after stage 2 | after stage 3 |", "|---|---|---:|---:|"]
    lines += [f"| {r['task']} | {r['metric']} | {number(r['stage2'])} | {number(r['stage3'])} |" for r in rows]
    return "\n".join(lines)


def run(config_path: str, overrides: list[str], finetune_overrides: list[str]) -> list[dict]:
    config = load_config(config_path, overrides)
    run_dir = train(config, overwrite=True)
    checkpoint = run_dir / "best" if (run_dir / "best").is_dir() else run_dir / "last"
    stage3 = {}
    for name, task in resolve_tasks(config.tasks).items():
        if "train" not in (task.data_files or task.splits) or task.head is not None:
            continue
        finetune_dir = finetune(checkpoint, name, overrides=[*finetune_overrides,
                                                             f"output_dir={run_dir / 'finetune' / name}"],
                                overwrite=True)
        stage3[name] = best_dev_metrics(finetune_dir)[name]
    rows = dev_table(best_dev_metrics(run_dir), stage3)
    (run_dir / "dev_table.json").write_text(json.dumps(rows, indent=2))
    (run_dir / "dev_table.md").write_text(format_table(rows) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/pipeline.yaml", help="stage-2 config (its tasks are the list)")
    parser.add_argument("--quick", action="store_true", help="small data and few steps: minutes on a CPU")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in both stages (repeatable)")
    parser.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config key in stage 3 only, e.g. train.learning_rate=2e-5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    overrides = [*(QUICK if args.quick else []), *args.overrides]
    try:
        rows = run(args.config, overrides, args.finetune_overrides)
    except MTDNNError as error:
        print(f"pipeline: error: {error}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
