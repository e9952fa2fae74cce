"""The `mtdnn` command line: pretrain, train, finetune, distill, evaluate, predict, export, push.

Its arguments are declared here; what each command does is in mtdnn/commands.py.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mtdnn.commands import COMMANDS
from mtdnn.errors import MTDNNError, StoppedBySignal


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtdnn", description="Multi-task fine-tuning of a transformer encoder (MT-DNN).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="multi-task fine-tuning from a YAML config")
    train.add_argument("config", help="YAML config file")
    _add_run_flags(train)

    for name, help_text in (("evaluate", "print dev/test metrics of a checkpoint as JSON"),
                            ("predict", "write one index<TAB>prediction file per task")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("checkpoint", help="checkpoint directory (a run's last/ or best/)")
        command.add_argument("--tasks", help="comma-separated task names (default: the checkpoint's tasks)")
        command.add_argument("--split", default="dev", help="split to use (default: dev)")
        command.add_argument("--data-dir", help="GLUE directory (default: the checkpoint's data.glue_dir or $GLUE_DIR)")
        command.add_argument("--batch-size", type=_positive, help="evaluation batch size (default: the checkpoint's)")
        command.add_argument("--device", help="cpu, cuda, cuda:N, mps... (default: the accelerator if there is one, "
                             "as accelerate chooses, else the CPU)")
        command.add_argument("--max-samples", type=_positive, metavar="N", help=(
            "use the first N examples of each split (default: evaluate follows the checkpoint's "
            "data.max_eval_samples, so it reproduces the metrics logged in training; predict writes every example)"))
        if name == "predict":
            _add_predict_arguments(command)
    _add_stage_commands(commands)
    _add_distill_command(commands)
    _add_sharing_commands(commands)
    return parser


def _add_run_flags(command: argparse.ArgumentParser) -> None:
    """--set, --overwrite and --resume: the flags of every command that starts a run (train, pretrain, finetune,
    distill)."""
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key, e.g. --set train.max_steps=20 (repeatable)")
    command.add_argument("--overwrite", action="store_true", help="replace the run in output_dir wholly")
    command.add_argument("--resume", action="store_true", help="continue the run in output_dir from its newest "
                         "checkpoint, with the same settings (start afresh if it has none)")


def _add_distill_command(commands) -> None:
    distill = commands.add_parser("distill", help="train a student on an ensemble of teacher checkpoints' soft targets")
    distill.add_argument("config", help="YAML config of the student (its tasks, data and training)")
    distill.add_argument("--teachers", required=True, help="comma-separated teacher checkpoint directories")
    _add_run_flags(distill)


def _add_predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("--output-dir", help="where to write <task>.tsv files (or the GLUE submission)")
    predict.add_argument("--glue-submission", action="store_true",
                         help="with --split test: write the GLUE leaderboard files and submission.zip")
    predict.add_argument("--fill-missing", action="store_true",
                         help="with --glue-submission: constant placeholder files for tasks without a head")
    predict.add_argument("--task", help="with --input: the task to predict")
    predict.add_argument("--input", help="a .tsv (with header) or .jsonl file of texts to predict, or - for stdin")
    predict.add_argument("--input-format", choices=("tsv", "jsonl"), help="format of --input (default: its extension)")
    predict.add_argument("--output", help="with --input: file to write (default: stdout)")
    predict.add_argument("--format", choices=("tsv", "jsonl"), help="with --input: output format (default: the "
                         "input's)")


def _add_stage_commands(commands) -> None:
    pretrain = commands.add_parser("pretrain", help="stage 1: masked-LM pre-training of the encoder on plain text")
    pretrain.add_argument("config", help="YAML pre-training config")
    finetune = commands.add_parser("finetune", help="stage 3: fine-tune a multi-task checkpoint on one task")
    finetune.add_argument("checkpoint", help="multi-task checkpoint directory (a run's best/ or last)")
    finetune.add_argument("config", nargs="?", help="YAML config for stage 3 (default: the checkpoint's config)")
    finetune.add_argument("--task", required=True, help="the task to fine-tune")
    for command in (pretrain, finetune):
        _add_run_flags(command)


def _add_sharing_commands(commands) -> None:
    export = commands.add_parser("export", help="write tasks as AutoModelForSequenceClassification directories")
    export.add_argument("checkpoint", help="checkpoint directory (a run's best/ or last) or its hub id")
    export.add_argument("output_dir", help="directory to write")
    export.add_argument("--task", help="the task whose head becomes the classifier (default: every task, one "
                        "subdirectory each, listed in index.json)")
    export.add_argument("--overwrite", action="store_true", help="replace an earlier export in output_dir")
    push = commands.add_parser("push", help="upload a checkpoint (or one task's export) to the Hugging Face hub")
    push.add_argument("checkpoint", help="checkpoint directory (a run's best/ or last)")
    push.add_argument("repo_id", help="hub model repository, user/name or org/name (created if it does not exist)")
    push.add_argument("--task", help="upload this task's export (a transformers model) instead of the checkpoint")
    push.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps "
                      "its visibility)")


def _quiet_libraries() -> None:
    """transformers' own progress bars (weight loading) only clutter mtdnn's output; datasets' show tokenisation."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


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
    except OSError as error:  # the file system's refusals: a missing directory, read-only, a full disk
        if args.debug:
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"mtdnn: error: {error.strerror or error}{where}. Check that the path exists and is writable and that "
              "its disk has space; files written before this point are intact, and a checkpoint being written when "
              "it happened was not put in place.", file=sys.stderr)
        return 2
    except StoppedBySignal as stop:
        print(f"mtdnn: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt:
        print("mtdnn: interrupted", file=sys.stderr)
        return 130
