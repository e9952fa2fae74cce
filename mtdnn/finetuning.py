"""Stage 3: fine-tune a multi-task checkpoint on one task, with the same training loop as stage 2.

The model is the checkpoint's shared encoder and that task's head (the other heads are left out), and the
config is a one-task config: the checkpoint's own, or a YAML file given for stage 3, plus `--set` overrides.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from mtdnn.checkpoint import CONFIG_FILE, TRAINING_STATE_FILE, load_checkpoint
from mtdnn.config import Config, DistillationSettings, ModelSettings, SamplingSettings, load_config
from mtdnn.errors import MTDNNError
from mtdnn.hub import local_checkpoint
from mtdnn.model import MTDNNModel
from mtdnn.tasks import GLUE_TASKS, TaskSpec, path_for, resolve_tasks
from mtdnn.training import train
from mtdnn.yaml_settings import build_settings, read_yaml, with_overrides

logger = logging.getLogger(__name__)


def _task_entry(task_name: str, *task_lists: list) -> str | dict:
    """The first entry naming `task_name` in the given `tasks` lists (a GLUE name or an own task's mapping)."""
    for entries in task_lists:
        for entry in entries or []:
            if entry == task_name or (isinstance(entry, dict) and entry.get("name") == task_name):
                return entry
    if task_name in GLUE_TASKS:
        return task_name
    trained = [entry if isinstance(entry, str) else str(entry.get("name")) for entry in task_lists[-1] or []]
    raise MTDNNError(f"task `{task_name}` is not one the checkpoint was trained on ({', '.join(trained)}), nor defined "
                     "in the given config, nor a GLUE task; pass --task with one of the checkpoint's tasks.")


def stage2_run(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to: `RUN/best`, `RUN/last`, `RUN/checkpoints/step-N` -> `RUN`."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _without_stage_2_settings(config: Config) -> Config:
    """The checkpoint's config less what only stage 2 means: the task sampling strategy and distillation (matters
    of several tasks), and its cache directory (the machine's, $MTDNN_CACHE or $HF_HOME, not the checkpoint's)."""
    return replace(config, data=replace(config.data, cache_dir=None),
                   train=replace(config.train, sampling=SamplingSettings(), distillation=DistillationSettings()))


def _checkpoint_model(model: ModelSettings, checkpoint: Path) -> ModelSettings:
    """`model` starting from the checkpoint's encoder and tokenizer; under soft sharing, the one encoder its task
    was trained with."""
    one_encoder = {"sharing": "hard", "encoder_groups": None} if model.sharing == "soft" else {}
    return replace(model, name_or_path=str(checkpoint), tokenizer=str(checkpoint), from_scratch=False, **one_encoder)


def located(checkpoint: str | Path) -> tuple[Path, Path]:
    """The checkpoint's directory and the run directory stage 3 writes beneath by default: a local checkpoint's
    own run (`stage2_run`); for a hub id, its downloaded snapshot and a directory named after the repository in
    the current directory (never the hub cache)."""
    local = local_checkpoint(checkpoint, CONFIG_FILE, skip=(TRAINING_STATE_FILE,))
    return local, stage2_run(local) if local == Path(checkpoint) else Path(str(checkpoint).split("/")[-1])


def finetune_config(checkpoint: str | Path, task_name: str, config_path: str | Path | None = None,
                    overrides: list[str] | None = None) -> Config:
    """The one-task config of stage 3: `config_path` (else the checkpoint's config) restricted to `task_name`, then
    `--set` overrides.

    `output_dir` defaults to `finetune/<task>` inside the stage-2 run directory that holds the checkpoint (for a
    hub id, see `located`) unless the config file or an override sets it (the checkpoint's own config never
    chooses where stage 3 writes); the tokenizer is the checkpoint's. From the checkpoint's config, the task
    sampling strategy and distillation (stage-2 matters) are not inherited; per-task training caps keep this
    task's.
    """
    return _config(*located(checkpoint), task_name, config_path, overrides)


def _config(checkpoint: Path, run: Path, task_name: str, config_path: str | Path | None,
            overrides: list[str] | None) -> Config:
    checkpoint_file = checkpoint / CONFIG_FILE
    trained = load_config(checkpoint_file)
    if config_path is None:
        given, config = {}, _without_stage_2_settings(trained)
    else:  # what the file itself sets (its tasks, its output_dir) decides, not the defaults filled in
        given = read_yaml(config_path)
        config = build_settings(Config, given, source=config_path)
    entry = _task_entry(task_name, given.get("tasks"), trained.tasks)
    if "output_dir" not in given:  # beside the checkpoint, not where its config points
        config = replace(config, output_dir=str(path_for(run / "finetune", task_name)))
    config = replace(config, tasks=[entry], model=_checkpoint_model(config.model, checkpoint),
                     data=replace(config.data, max_train_samples=config.data.train_cap(task_name)))
    return with_overrides(config, overrides, config_path or checkpoint_file)


def single_task_model(model: MTDNNModel, task: TaskSpec, seed: int) -> MTDNNModel:
    """The checkpoint's encoder with only `task`'s head: its weights copied from the checkpoint, or, for a task the
    checkpoint has no head for (a new task, as WNLI after a stage 2 without it), a new head initialised from `seed`
    as stage 2 initialises its heads."""
    if task.head is not None:
        raise MTDNNError(f"task `{task.name}` is predicted by the head of `{task.head}`; fine-tune `{task.head}` "
                         "instead.")
    if task.name not in model.heads:
        logger.info("the checkpoint has no head for %s: it gets a new one on the checkpoint's encoder", task.name)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return MTDNNModel(model.encoder, {task.name: task})
    trained = model.head_task(task.name)
    if (trained.type, trained.num_labels) != (task.type, task.num_labels):
        raise MTDNNError(
            f"task `{task.name}` is a {task.type} task with {task.num_labels} output(s) in the stage-3 config, but the "
            f"checkpoint's head was trained as {trained.type} with {trained.num_labels}; keep the task's type and "
            "labels as in stage 2."
        )
    single = MTDNNModel(model.encoder_for(task.name), {task.name: task})  # its group's encoder, if soft sharing
    single.heads[task.name].load_state_dict(model.heads[task.name].state_dict())
    return single


def finetune(checkpoint: str | Path, task_name: str, config_path: str | Path | None = None,
             overrides: list[str] | None = None, overwrite: bool = False, resume: bool = False) -> Path:
    """Train the checkpoint's encoder and `task_name`'s head on that task alone; returns the run directory."""
    checkpoint, run = located(checkpoint)
    model, _, _, _ = load_checkpoint(checkpoint)
    config = _config(checkpoint, run, task_name, config_path, overrides)
    task = resolve_tasks(config.tasks)[task_name]
    if "train" not in (task.data_files or task.splits):
        raise MTDNNError(f"task `{task_name}` has no `train` split to fine-tune on.")
    model = single_task_model(model, task, config.train.seed)
    return train(config, overwrite=overwrite, model=model, resume=resume)
