"""GLUE metrics and multi-label ones, computed locally (scikit-learn / SciPy) behind an `evaluate.Metric`."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float((predictions == references).mean())


def f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """F1 of the positive class (label id 1), as GLUE scores MRPC and QQP."""
    return float(f1_score(references, predictions))


def matthews_correlation(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(matthews_corrcoef(references, predictions))


def pearson(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(pearsonr(predictions, references)[0])


def spearman(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(spearmanr(predictions, references)[0])


# Multi-label: predictions and references are multi-hot rows, (examples, num_labels). A label that is neither
# true nor predicted anywhere counts as F1 0 in the macro average (scikit-learn's zero_division=0).

def f1_micro(predictions: np.ndarray, references: np.ndarray) -> float:
    """F1 over all (example, label) decisions pooled: frequent labels weigh more."""
    return float(f1_score(references, predictions, average="micro", zero_division=0))


def f1_macro(predictions: np.ndarray, references: np.ndarray) -> float:
    """The unweighted mean of each label's F1: rare labels count as much as frequent ones."""
    return float(f1_score(references, predictions, average="macro", zero_division=0))


def exact_match(predictions: np.ndarray, references: np.ndarray) -> float:
    """Subset accuracy: the share of examples whose predicted label set is exactly the true one."""
    return float(accuracy_score(references, predictions))


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearman,
    "f1_micro": f1_micro,
    "f1_macro": f1_macro,
    "exact_match": exact_match,
}


class GlueMetric(evaluate.Metric):
    """GLUE metrics under the names of `evaluate.load("glue", ...)`, without fetching its script.

    `config_name` is `regression` for float predictions, `multi_label` for multi-hot rows, anything else for
    class ids.
    `compute(predictions=..., references=..., metrics=["accuracy", "f1"])`.
    """

    def _info(self) -> evaluate.MetricInfo:
        value = datasets.Value("float32" if self.config_name == "regression" else "int64")
        if self.config_name == "multi_label":
            value = datasets.Sequence(value)
        return evaluate.MetricInfo(
            description="GLUE metrics: accuracy, F1, Matthews correlation, Pearson and Spearman correlation; "
                        "micro/macro F1 and exact match of multi-label predictions.",
            citation="Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, ICLR 2019.",
            inputs_description="predictions and references: class ids, floats for regression, or multi-hot rows.",
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions, references, metrics=("accuracy",)) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        return {name: METRIC_FUNCTIONS[name](predictions, references) for name in metrics}


def compute_metrics(metric_names, task_type: str, predictions, references) -> dict[str, float]:
    kinds = {"regression": "regression", "multi_label_classification": "multi_label"}
    metric = GlueMetric(config_name=kinds.get(task_type, "classification"), keep_in_memory=True)
    return metric.compute(predictions=predictions, references=references, metrics=list(metric_names))


def task_score(metrics: dict[str, float]) -> float:
    """One number per task: the mean of its metrics (GLUE averages F1/accuracy and Pearson/Spearman)."""
    return float(np.mean(list(metrics.values())))


def run_score(results: dict[str, dict[str, float]], head_of: dict[str, str]) -> float:
    """The dev score that chooses `best/`: the mean over tasks of each task's score, where the tasks that one head
    predicts (`mnli` and `mnli_mismatched`: GLUE's MNLI) count as one task, the mean of their scores."""
    by_head: dict[str, list[float]] = {}
    for name, metrics in results.items():
        by_head.setdefault(head_of.get(name, name), []).append(task_score(metrics))
    return float(np.mean([np.mean(scores) for scores in by_head.values()])) if by_head else 0.0
