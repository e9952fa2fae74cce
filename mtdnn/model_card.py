"""The model card (README.md) of a checkpoint and of an export: the hub's metadata (huggingface_hub's ModelCardData,
the dev metrics as its `model-index`) and a body saying what the model is, its tasks and dev metrics, the settings it
was trained with and how to load it."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mtdnn.config import Config
from mtdnn.tasks import TaskSpec

CARD_FILE = "README.md"
TAGS = ("mtdnn", "multi-task")
HUB_TASKS = {"single_classification": "text-classification", "pair_classification": "text-classification",
             "regression": "text-classification", "multi_label_classification": "text-classification",
             "ranking": "text-ranking"}
"""The hub's task id for each task type (the hub files regression, e.g. STS-B, under text classification)."""
MODEL_ID = "REPO_ID"
"""What the usage snippets load: the card says to put the repository's id (or the local directory) in its place."""
DATA_KEYS = ("max_seq_length", "max_train_samples", "max_eval_samples")
"""The `data` settings that describe the training; the rest are where this machine keeps its files."""
PAPER = "[MT-DNN](https://arxiv.org/abs/1901.11504) (Liu et al., ACL 2019)"


def checkpoint_card(config: Config, tasks: dict[str, TaskSpec], state: dict, encoder_type: str,
                    base_model: str | None) -> ModelCard:
    """The card of an mtdnn checkpoint: every task, the dev metrics of `state` (a trainer state) if it has them."""
    name = Path(config.output_dir).name or "mtdnn"
    intro = (f"A multi-task model trained with mtdnn after {PAPER}: one shared `{encoder_type}` "
             f"encoder{_from(base_model)} and a head per task, trained on the tasks below together. It is an mtdnn "
             "checkpoint: mtdnn loads it whole (the encoder, every head, the tokenizer and the run's config), and "
             "`mtdnn export` turns each task into a standard transformers sequence-classification model.")
    body = [f"# {name}", intro, _tasks_section(tasks, state), _settings_section(config), _mtdnn_usage(tasks)]
    return _card(_metadata(name, tasks, state, base_model, "mtdnn", None), body)


def export_card(config: Config, task: TaskSpec, tasks: dict[str, TaskSpec], state: dict, encoder_type: str,
                base_model: str | None) -> ModelCard:
    """The card of one task's export (`tasks`: the checkpoint's; the tasks its head predicts keep their metrics)."""
    name = f"{Path(config.output_dir).name or 'mtdnn'}-{task.name}"
    predicted = {other.name: other for other in tasks.values() if other.head_name == task.head_name}
    predicted.setdefault(task.name, task)  # a GLUE task the checkpoint predicts without listing it (`ax`)
    others = sorted(other for other in tasks if tasks[other].head_name != task.head_name)
    intro = (f"The `{task.name}` head of a multi-task model trained with mtdnn after {PAPER}, "
             "exported as a standard transformers `AutoModelForSequenceClassification`: the shared "
             f"`{encoder_type}` encoder{_from(base_model)} with the task's head as its classifier. "
             + (f"The encoder was trained together with {', '.join(f'`{n}`' for n in others)}. " if others else "")
             + "Before it was written, the export was checked to give mtdnn's logits on a probe input.")
    body = [f"# {name}", intro, _tasks_section(predicted, state), _settings_section(config), _pipeline_usage(task)]
    return _card(_metadata(name, predicted, state, base_model, "transformers", "text-classification"), body)


def _card(data: ModelCardData, body: list[str]) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(body) + "\n")


def _from(base_model: str | None) -> str:
    return f" fine-tuned from [{base_model}](https://huggingface.co/{base_model})" if base_model else ""


def _metadata(name: str, tasks: dict[str, TaskSpec], state: dict, base_model: str | None, library: str,
              pipeline_tag: str | None) -> ModelCardData:
    results = _eval_results(tasks, state.get("dev_metrics") or {})
    hub_tasks = sorted({HUB_TASKS[task.type] for task in tasks.values()})
    datasets = sorted({task.hub_dataset for task in tasks.values() if task.hub_dataset})
    metrics = sorted({metric for task in tasks.values() for metric in task.metrics})
    return ModelCardData(base_model=base_model, library_name=library, pipeline_tag=pipeline_tag,
                         tags=[*TAGS, *hub_tasks], datasets=datasets or None, metrics=metrics,
                         model_name=name if results else None, eval_results=results or None)


def _eval_results(tasks: dict[str, TaskSpec], dev_metrics: dict) -> list[EvalResult]:
    """One `model-index` entry per finite dev metric of each task (the hub takes no NaN)."""
    results = []
    for name, task in tasks.items():
        for metric, value in (dev_metrics.get(name) or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                results.append(EvalResult(
                    task_type=HUB_TASKS[task.type], dataset_type=task.hub_dataset or name,
                    dataset_name=_dataset_name(task), dataset_config=task.hub_config,
                    dataset_split=task.splits.get("dev") if task.hub_dataset else "dev",
                    metric_type=metric, metric_value=float(value), metric_name=f"dev {metric}"))
    return results


def _dataset_name(task: TaskSpec) -> str:
    return f"GLUE {Path(task.submission_file).stem}" if task.submission_file else task.name


def _tasks_section(tasks: dict[str, TaskSpec], state: dict) -> str:
    dev_metrics = state.get("dev_metrics") or {}
    rows = ["| task | type | labels | dev metrics |", "|---|---|---|---|"]
    for name, task in tasks.items():
        kind = task.type + (f" (the head of `{task.head}`)" if task.head else "")
        labels = ", ".join(task.label_names) if task.label_names and task.type != "ranking" else "(a score)"
        metrics = ", ".join(f"{metric} {_number(value)}" for metric, value in (dev_metrics.get(name) or {}).items())
        rows.append(f"| `{name}` | {kind} | {labels} | {metrics or 'no dev evaluation'} |")
    where = f"step {state.get('step', '?')}" + (f", epoch {state['epoch']}" if "epoch" in state else "")
    if "dev_score" in state:
        note = (f"Saved at {where}, with a dev score of {_number(state['dev_score'])} (the mean over tasks of each "
                "task's mean metric; a run's `best/` is its checkpoint with the best dev score).")
    else:
        note = f"Saved at {where} without a dev evaluation; `mtdnn evaluate` computes its dev metrics."
    return "## Tasks and dev metrics\n\n" + "\n".join(rows) + "\n\n" + note


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _settings_section(config: Config) -> str:
    settings = config.to_dict()
    shown = {"model": settings["model"], "train": settings["train"],
             "data": {key: settings["data"][key] for key in DATA_KEYS}}
    return ("## Training settings\n\nFrom the run's resolved config (a checkpoint's `mtdnn_config.yaml` holds all of "
            "it):\n\n```yaml\n" + yaml.safe_dump(shown, sort_keys=False) + "```")


def _example(task: TaskSpec) -> str:
    return ('[("A man is playing a guitar.", "A man plays the guitar.")]' if len(task.text_columns) == 2
            else '["a gripping, funny film"]')


def _usage_header() -> str:
    return (f"## How to use\n\n`{MODEL_ID}` below is this model's hub id (`user/name`) or the local directory that "
            "holds these files.")


def _mtdnn_usage(tasks: dict[str, TaskSpec]) -> str:
    task = next(iter(tasks.values()))
    return (_usage_header() + " With mtdnn:\n\n```python\n"
            "from mtdnn.inference import Predictor\nfrom mtdnn.model import MTDNNModel\n\n"
            f'model = MTDNNModel.from_pretrained("{MODEL_ID}")  # the shared encoder and every head\n'
            f'predictor = Predictor.from_pretrained("{MODEL_ID}")  # with its tokenizer and sequence length\n'
            f'print(predictor.predict("{task.name}", {_example(task)}))\n```\n\n```bash\n'
            f"mtdnn predict {MODEL_ID} --task {task.name} --input texts.tsv   # columns: "
            f"{', '.join(task.text_columns)}\n"
            f"mtdnn export {MODEL_ID} exported/   # every task as a transformers model\n```")


def _pipeline_usage(task: TaskSpec) -> str:
    inputs = ('[{"text": "A man is playing a guitar.", "text_pair": "A man plays the guitar."}]'
              if len(task.text_columns) == 2 else '["a gripping, funny film"]')
    options, meaning = "", "`label` is the predicted class and `score` its probability"
    if task.type == "multi_label_classification":
        options, meaning = ", top_k=None", f"every label with its own probability (predicted where >= {task.threshold})"
    elif task.type == "regression":
        meaning = "`score` is the predicted value"
    elif task.type == "ranking":
        meaning = "`score` is the relevance of a (query, candidate) pair: rank a query's candidates by it"
    return (_usage_header() + " With transformers:\n\n```python\nfrom transformers import pipeline\n\n"
            f'classify = pipeline("text-classification", model="{MODEL_ID}")\n'
            f"print(classify({inputs}{options}))  # {meaning}\n```")
