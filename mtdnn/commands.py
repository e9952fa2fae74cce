"""What each `mtdnn` command does with its parsed arguments (mtdnn/cli.py parses them and reports errors)."""

from __future__ import annotations

import csv
import json
import logging
import sys
import tempfile
from pathlib import Path

from mtdnn.errors import MTDNNError

logger = logging.getLogger("mtdnn")


def _task_list(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def _print_run(output_dir: Path, **extra) -> None:
    """What a finished training run prints: its directory, last step and final dev metrics (and `extra`); under
    `accelerate launch`, by the main process alone."""
    from mtdnn.checkpoint import STATE_FILE
    from mtdnn.processes import process_state

    if not process_state().is_main_process:
        return
    state = json.loads((output_dir / "last" / STATE_FILE).read_text())
    print(json.dumps({"output_dir": str(output_dir), **extra, "step": state["step"],
                      "dev_metrics": state.get("dev_metrics")}, indent=2))


def _use_local_data_settings(data, args) -> None:
    """Where a checkpoint's data is read and cached is this machine's choice, not the checkpoint config's: the GLUE
    directory from --data-dir (else the checkpoint's, else $GLUE_DIR), the cache from $MTDNN_CACHE or $HF_HOME."""
    if args.data_dir:
        data.glue_dir = args.data_dir
    data.cache_dir = None


def _load_for_inference(args, checkpoint_cap: bool):
    """The checkpoint's model on the inference device, and the chosen split of each task: its first --max-samples
    examples if given, else the checkpoint's `data.max_eval_samples` with `checkpoint_cap`, else all of them."""
    from mtdnn.checkpoint import load_checkpoint
    from mtdnn.data import load_task_data
    from mtdnn.evaluation import inference_device
    from mtdnn.tasks import GLUE_TASKS, TaskSpec

    device = inference_device(args.device)
    model, tokenizer, config, _ = load_checkpoint(args.checkpoint)
    _use_local_data_settings(config.data, args)
    known: dict[str, TaskSpec] = {**GLUE_TASKS, **model.tasks}
    names = _task_list(args.tasks) or [name for name, task in model.tasks.items()
                                        if args.split in (task.data_files or task.splits)]
    if not names:
        raise MTDNNError(f"none of the checkpoint's tasks ({', '.join(model.tasks)}) has a `{args.split}` split; "
                         "use --split dev or test, or name tasks that have it with --tasks.")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise MTDNNError(f"unknown task `{unknown[0]}` in --tasks; this checkpoint knows {', '.join(model.tasks)} "
                         f"and the GLUE tasks {', '.join(GLUE_TASKS)}.")
    for name in names:
        model.head_task(known[name].head_name)
    batch_size = args.batch_size or config.train.eval_batch_size
    max_samples = args.max_samples or (config.data.max_eval_samples if checkpoint_cap else None)
    data = {name: load_task_data(known[name], args.split, tokenizer, config.data, max_samples) for name in names}
    logger.info("%s on %s", args.command, device)
    return model.to(device), data, batch_size, device


def _shares() -> dict[str, int | bool]:
    """Under `accelerate launch`, each process runs every num_processes-th batch and the logits are gathered
    (`task_logits`): this process's part, and whether it shows progress."""
    from mtdnn.processes import process_state

    state = process_state()
    return {"process_index": state.process_index, "num_processes": state.num_processes,
            "progress": state.is_local_main_process}


def _main_process() -> bool:
    from mtdnn.processes import process_state

    return process_state().is_main_process


def run_evaluate(args) -> int:
    from mtdnn.evaluation import evaluate_task

    model, data, batch_size, device = _load_for_inference(args, checkpoint_cap=True)
    unlabeled = [name for name, task_data in data.items() if not task_data.has_labels]
    if unlabeled:
        raise MTDNNError(f"the `{args.split}` split of task `{unlabeled[0]}` has no labels to evaluate against; "
                         "use `mtdnn predict` for unlabeled splits.")
    results = {name: evaluate_task(model, task_data, batch_size, device, **_shares())
               for name, task_data in data.items()}
    if _main_process():
        print(json.dumps(results, indent=2))
    return 0


def run_predict(args) -> int:
    from mtdnn.evaluation import prediction_texts, predictions_from_logits, task_logits
    from mtdnn.tasks import path_for

    if args.input is not None:
        return _predict_input(args)
    if not args.output_dir:
        raise MTDNNError("mtdnn predict needs --output-dir (or --task NAME --input FILE for your own texts).")
    if args.glue_submission:
        return _predict_glue_submission(args)
    model, data, batch_size, device = _load_for_inference(args, checkpoint_cap=False)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, task_data in data.items():
        task = task_data.task
        logits = task_logits(model, task_data, batch_size, device, **_shares())
        if not _main_process():
            continue
        predictions = predictions_from_logits(task.type, logits, task.threshold)
        path = path_for(output_dir, name, ".tsv")
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["index", "prediction"])
            writer.writerows(zip(task_data.idx, prediction_texts(task, predictions)))
        print(path)
    return 0


def _predict_input(args) -> int:
    from mtdnn.inference import Predictor, read_inputs, write_predictions

    if not args.task:
        raise MTDNNError("--input needs --task NAME: the task whose head predicts the texts.")
    if not _main_process():  # a file of texts is one process's work: the others under `accelerate launch` stop
        return 0
    predictor = Predictor.from_pretrained(args.checkpoint, args.device)
    if args.batch_size:
        predictor.batch_size = args.batch_size
    task = predictor.task(args.task)
    ids, texts, input_format = read_inputs(args.input, task, args.input_format)
    predictions = predictor.predict(args.task, texts)
    output_format = args.format or input_format
    if args.output:
        with open(args.output, "w", newline="") as handle:
            write_predictions(handle, task, ids, predictions, output_format)
        print(json.dumps({"output": args.output, "rows": len(predictions)}))
    else:
        write_predictions(sys.stdout, task, ids, predictions, output_format)
    return 0


def _predict_glue_submission(args) -> int:
    from dataclasses import asdict

    from mtdnn.checkpoint import load_checkpoint
    from mtdnn.evaluation import inference_device
    from mtdnn.submission import ZIP_NAME, write_submission

    if args.split != "test" or args.tasks:
        raise MTDNNError("--glue-submission predicts every GLUE test set: use it with --split test and without "
                         "--tasks.")
    device = inference_device(args.device)
    model, tokenizer, config, _ = load_checkpoint(args.checkpoint)
    _use_local_data_settings(config.data, args)
    report = write_submission(model.to(device), tokenizer, config.data, args.output_dir,
                              args.batch_size or config.train.eval_batch_size, args.fill_missing, device, _shares())
    if not _main_process():
        return 0
    print(json.dumps({"zip": str(Path(args.output_dir) / ZIP_NAME), "files": [asdict(entry) for entry in report]},
                     indent=2))
    return 0


def run_train(args) -> int:
    from mtdnn.config import load_config
    from mtdnn.training import train

    config = load_config(args.config, args.overrides)
    _print_run(train(config, overwrite=args.overwrite, resume=args.resume))
    return 0


def run_pretrain(args) -> int:
    from mtdnn.pretrain_config import load_pretrain_config
    from mtdnn.pretraining import pretrain
    from mtdnn.processes import process_state

    result = pretrain(load_pretrain_config(args.config, args.overrides), overwrite=args.overwrite, resume=args.resume)
    if process_state().is_main_process:  # under `accelerate launch`, print once
        print(json.dumps(result, indent=2))
    return 0


def run_finetune(args) -> int:
    from mtdnn.finetuning import finetune

    output_dir = finetune(args.checkpoint, args.task, args.config, args.overrides, args.overwrite, args.resume)
    _print_run(output_dir, task=args.task)
    return 0


def run_export(args) -> int:
    from mtdnn.export import export_checkpoint

    print(json.dumps(export_checkpoint(args.checkpoint, args.output_dir, args.task, args.overwrite)))
    return 0


def run_push(args) -> int:
    """Upload a checkpoint (all but its optimizer state), or with --task the export of that task, to a hub model
    repository; everything that can be refused locally is refused before anything is sent."""
    from mtdnn.checkpoint import load_checkpoint, shared_files
    from mtdnn.export import export_checkpoint
    from mtdnn.hub import check_upload, upload

    check_upload(args.repo_id)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_dir():
        raise MTDNNError(f"checkpoint directory {checkpoint} does not exist; `mtdnn push` uploads a local checkpoint "
                         "(a run's best/ or last).")
    if args.task is None:
        load_checkpoint(checkpoint)  # only a checkpoint that loads whole is shared
        folder = checkpoint.resolve()  # `last` is a link; the repository gets the files
        files = shared_files(folder)
        url = upload(folder, args.repo_id, files, args.private)
    else:
        with tempfile.TemporaryDirectory(prefix="mtdnn-push-") as temporary:
            folder = Path(temporary) / args.task
            export_checkpoint(checkpoint, folder, args.task)
            files = sorted(path.name for path in folder.iterdir() if path.is_file())
            url = upload(folder, args.repo_id, files, args.private)
    print(json.dumps({"repo_id": args.repo_id, "url": url, "task": args.task, "private": args.private,
                      "files": files}, indent=2))
    return 0


def run_distill(args) -> int:
    from mtdnn.config import load_config
    from mtdnn.distillation import distill

    config = load_config(args.config, args.overrides)
    output_dir = distill(config, _task_list(args.teachers), overwrite=args.overwrite, resume=args.resume)
    _print_run(output_dir, soft_targets=config.train.distillation.soft_targets)
    return 0


COMMANDS = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict, "pretrain": run_pretrain,
            "finetune": run_finetune, "export": run_export, "push": run_push, "distill": run_distill}
