"""The `mtdnn` command: train, evaluate, predict."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from mtdnn.errors import MTDNNError, StoppedBySignal

logger = logging.getLogger("mtdnn")


def _task_list(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtdnn", description="Multi-task fine-tuning of a transformer encoder (MT-DNN).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="multi-task fine-tuning from a YAML config")
    train.add_argument("config", help="YAML config file")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.max_steps=20 (repeatable)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in output_dir (start afresh if there is none)")

    for name, help_text in (("evaluate", "print dev/test metrics of a checkpoint as JSON"),
                            ("predict", "write one index<TAB>prediction file per task")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("checkpoint", help="checkpoint directory (a run's last/ or best/)")
        command.add_argument("--tasks", help="comma-separated task names (default: the checkpoint's tasks)")
        command.add_argument("--split", default="dev", help="split to use (default: dev)")
        command.add_argument("--data-dir", help="GLUE directory (default: the checkpoint's data.glue_dir or $GLUE_DIR)")
        command.add_argument("--batch-size", type=int, help="evaluation batch size (default: the checkpoint's)")
        if name == "predict":
            command.add_argument("--output-dir", required=True, help="where to write <task>.tsv files")
    return parser


def _load_for_inference(args):
    from mtdnn.checkpoint import load_checkpoint
    from mtdnn.data import load_task_data
    from mtdnn.tasks import GLUE_TASKS, TaskSpec

    model, tokenizer, config, _ = load_checkpoint(args.checkpoint)
    if args.data_dir:
        config.data.glue_dir = args.data_dir
    known: dict[str, TaskSpec] = {**GLUE_TASKS, **model.tasks}
    names = _task_list(args.tasks) or [name for name, task in model.tasks.items()
                                        if args.split in (task.data_files or task.splits)]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise MTDNNError(f"unknown task `{unknown[0]}` in --tasks; this checkpoint knows {', '.join(model.tasks)} "
                         f"and the GLUE tasks {', '.join(GLUE_TASKS)}.")
    for name in names:
        model.head_task(known[name].head_name)
    batch_size = args.batch_size or config.train.eval_batch_size
    data = {name: load_task_data(known[name], args.split, tokenizer, config.data, config.data.max_eval_samples)
            for name in names}
    return model, data, batch_size


def run_evaluate(args) -> int:
    from mtdnn.evaluation import evaluate_task

    model, data, batch_size = _load_for_inference(args)
    unlabeled = [name for name, task_data in data.items() if not task_data.has_labels]
    if unlabeled:
        raise MTDNNError(f"the `{args.split}` split of task `{unlabeled[0]}` has no labels to evaluate against; "
                         "use `mtdnn predict` for unlabeled splits.")
    results = {name: evaluate_task(model, task_data, batch_size) for name, task_data in data.items()}
    print(json.dumps(results, indent=2))
    return 0


def run_predict(args) -> int:
    from mtdnn.evaluation import predictions_from_logits, task_logits

    model, data, batch_size = _load_for_inference(args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, task_data in data.items():
        task = task_data.task
        predictions = predictions_from_logits(task.type, task_logits(model, task_data, batch_size))
        path = output_dir / f"{name}.tsv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["index", "prediction"])
            for index, prediction in zip(task_data.idx, predictions):
                if task.type in ("single_classification", "pair_classification"):
                    prediction = task.label_names[int(prediction)]
                elif task.type == "regression":
                    prediction = f"{float(prediction):.6f}"
                writer.writerow([index, prediction])
        print(path)
    return 0


def run_train(args) -> int:
    from mtdnn.config import load_config
    from mtdnn.training import train

    config = load_config(args.config, args.overrides)
    output_dir = train(config, overwrite=args.overwrite, resume=args.resume)
    state = json.loads((output_dir / "last" / "trainer_state.json").read_text())
    print(json.dumps({"output_dir": str(output_dir), "step": state["step"],
                      "dev_metrics": state.get("dev_metrics")}, indent=2))
    return 0


def _quiet_libraries() -> None:
    """The libraries' own progress bars (dataset caching, weight loading) only clutter mtdnn's output."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


COMMANDS = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except MTDNNError as error:
        if args.debug:
            raise
        print(f"mtdnn: error: {error}", file=sys.stderr)
        return 2
    except StoppedBySignal as stop:
        print(f"mtdnn: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt:
        print("mtdnn: interrupted", file=sys.stderr)
        return 130
