"""GLUE metric values against hand-computed ones."""

import math

import numpy as np
import pytest

from mtdnn.metrics import compute_metrics, task_score


def test_classification_metrics_by_hand():
    predictions = np.array([1, 1, 0, 0, 1, 0])
    references = np.array([1, 0, 0, 1, 1, 0])
    result = compute_metrics(["accuracy", "f1", "matthews_correlation"], "pair_classification", predictions, references)
    tp, fp, fn, tn = 2, 1, 1, 2
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert result["matthews_correlation"] == pytest.approx(mcc)


def test_regression_metrics_by_hand():
    predictions = np.array([1.0, 2.0, 3.0, 5.0])
    references = np.array([1.0, 3.0, 2.0, 4.0])
    result = compute_metrics(["pearson", "spearmanr"], "regression", predictions, references)
    p, r = predictions - predictions.mean(), references - references.mean()
    assert result["pearson"] == pytest.approx((p @ r) / math.sqrt((p @ p) * (r @ r)), rel=1e-6)
    # ranks: [1,2,3,4] vs [1,3,2,4]: d^2 = 0+1+1+0
    assert result["spearmanr"] == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert task_score({"pearson": 0.5, "spearmanr": 0.7}) == pytest.approx(0.6)
