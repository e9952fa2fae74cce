"""Stage 3: fine-tune a multi-task checkpoint on one task, with the same training loop as stage 2.

The model is the checkpoint's shared encoder and that task's head (the other heads are left out), and the
config is a one-task config: the checkpoint's own, or a YAML file given for stage 3, plus `--set` overrides.
"""

from __future__ import annotations

from pathlib import Path

from mtdnn.checkpoint import CONFIG_FILE, load_checkpoint
from mtdnn.config import Config, build_settings, read_yaml
from mtdnn.errors import MTDNNError
from mtdnn.model import MTDNNModel
from mtdnn.tasks import GLUE_TASKS, TaskSpec, path_for, resolve_tasks
from mtdnn.training import train

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


def finetune_config(checkpoint: Path, task_name: str, config_path: str | Path | None = None,
                    overrides: list[str] | None = None) -> Config:
    """The one-task config of stage 3: `config_path` (else the checkpoint's config) restricted to `task_name`.

    `output_dir` defaults to `finetune/<task>` inside the stage-2 run directory that holds the checkpoint unless the
    config file or an override sets it (the checkpoint's own config never chooses where stage 3 writes); the tokenizer is the checkpoint's. From the checkpoint's config, the task sampling
    strategy and distillation (stage-2 matters) are not inherited; per-task training caps keep this task's.
    """
    checkpoint_values = read_yaml(checkpoint / CONFIG_FILE)
    values = read_yaml(config_path) if config_path is not None else dict(checkpoint_values)
    entry = _task_entry(task_name, values.get("tasks") if config_path is not None else None,
                        checkpoint_values.get("tasks"))
    if config_path is None or "output_dir" not in values:  # beside the checkpoint, not where its config points
        values["output_dir"] = str(path_for(stage2_run(checkpoint) / "finetune", task_name))
    values["tasks"] = [entry]
    data = dict(values.get("data") or {})
    if config_path is None:  # the cache is this machine's ($MTDNN_CACHE or $HF_HOME), not the checkpoint's
        data.pop("cache_dir", None)
        values["data"] = data
    if isinstance(data.get("max_train_samples"), dict):  # per-task caps: keep this task's
        data["max_train_samples"] = data["max_train_samples"].get(task_name)
        values["data"] = data
    if config_path is None:  # what only makes sense across several tasks is not inherited from stage 2
        train_values = dict(values.get("train") or {})
        train_values.pop("sampling", None)
        train_values.pop("distillation", None)
        values["train"] = train_values
    model = {**(values.get("model") or {}), "name_or_path": str(checkpoint), "tokenizer": str(checkpoint),
             "from_scratch": False}
    if model.get("sharing") == "soft":  # the stage-3 model has the one encoder its task was trained with
        model.update(sharing="hard", encoder_groups=None)
    values["model"] = model
    return build_settings(Config, values, overrides, config_path or checkpoint / CONFIG_FILE)


def single_task_model(model: MTDNNModel, task: TaskSpec) -> MTDNNModel:
    """The checkpoint's encoder with only `task`'s head, its weights copied from the checkpoint."""
    if task.head is not None:
        raise MTDNNError(f"task `{task.name}` is predicted by the head of `{task.head}`; fine-tune `{task.head}` "
                         "instead.")
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
    checkpoint = Path(checkpoint)
    model, _, _, _ = load_checkpoint(checkpoint)
    config = finetune_config(checkpoint, task_name, config_path, overrides)
    task = resolve_tasks(config.tasks)[task_name]
    if "train" not in (task.data_files or task.splits):
        raise MTDNNError(f"task `{task_name}` has no `train` split to fine-tune on.")
    return train(config, overwrite=overwrite, model=single_task_model(model, task), resume=resume)
