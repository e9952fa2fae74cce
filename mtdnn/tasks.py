"""The task table: every fact about a task (type, columns, labels, metrics, splits, data) is data.

GLUE is a set of rows (mtdnn/glue_tasks.py); a user's own task is a mapping in the YAML config with the same fields
(a `TaskSpec`, mtdnn/task_spec.py). This module turns the config's `tasks` list into TaskSpecs.
"""

from __future__ import annotations

from mtdnn.errors import MTDNNError
from mtdnn.glue_tasks import GLUE_TASKS
from mtdnn.task_spec import (ANSWER_MODULES, METRICS, MULTI_LABEL, MULTI_LABEL_METRICS, TASK_NAME, TASK_TYPES,
                             GlueFiles, TaskSpec, check_task_name, path_for)

__all__ = ["ANSWER_MODULES", "GLUE_TASKS", "GlueFiles", "METRICS", "MULTI_LABEL", "MULTI_LABEL_METRICS", "TASK_NAME",
           "TASK_TYPES", "TaskSpec", "check_task_name", "path_for", "resolve_tasks"]


def resolve_tasks(entries: list) -> dict[str, TaskSpec]:
    """Turn the config's `tasks` list into TaskSpecs: GLUE names, overrides of GLUE rows, or own tasks."""
    tasks: dict[str, TaskSpec] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            if entry not in GLUE_TASKS:
                raise MTDNNError(
                    f"unknown task `{entry}` in config key `tasks[{i}]`; GLUE tasks are {', '.join(GLUE_TASKS)}, "
                    "and an own task is a mapping with `name`, `type`, `text_columns`, `data_files` (see README)."
                )
            task = GLUE_TASKS[entry]
        else:
            if not isinstance(entry, dict) or "name" not in entry:
                raise MTDNNError(f"config key `tasks[{i}]` must be a GLUE task name or a mapping with `name`.")
            check_task_name(entry["name"], f"config key `tasks[{i}].name`")
            if entry.get("head") is not None:
                check_task_name(entry["head"], f"config key `tasks[{i}].head`")
            base = GLUE_TASKS.get(entry["name"])
            task = TaskSpec.from_dict({**base.to_dict(), **entry} if base else entry)
        if task.name in tasks:
            raise MTDNNError(f"task `{task.name}` is listed twice in config key `tasks`.")
        tasks[task.name] = task
    return tasks
