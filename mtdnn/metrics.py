"""The official GLUE metrics, computed locally (scikit-learn / SciPy) behind an `evaluate.Metric`."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef


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


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearman,
}


class GlueMetric(evaluate.Metric):
    """GLUE metrics under the names of `evaluate.load("glue", ...)`, without fetching its script.

    `config_name` is `regression` for float predictions, anything else for class ids.
    `compute(predictions=..., references=..., metrics=["accuracy", "f1"])`.
    """

    def _info(self) -> evaluate.MetricInfo:
        dtype = "float32" if self.config_name == "regression" else "int64"
        return evaluate.MetricInfo(
            description="GLUE metrics: accuracy, F1, Matthews correlation, Pearson and Spearman correlation.",
            citation="Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, ICLR 2019.",
            inputs_description="predictions and references: class ids, or floats for regression.",
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
        )

    def _compute(self, predictions, references, metrics=("accuracy",)) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        return {name: METRIC_FUNCTIONS[name](predictions, references) for name in metrics}


def compute_metrics(metric_names, task_type: str, predictions, references) -> dict[str, float]:
    metric = GlueMetric(config_name="regression" if task_type == "regression" else "classification",
                        keep_in_memory=True)
    return metric.compute(predictions=predictions, references=references, metrics=list(metric_names))


def task_score(metrics: dict[str, float]) -> float:
    """One number per task: the mean of its metrics (GLUE averages F1/accuracy and Pearson/Spearman)."""
    return float(np.mean(list(metrics.values())))
