"""GLUE metric values against hand-computed ones."""

import json
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


def test_run_score_counts_the_tasks_of_one_head_once():
    from mtdnn.metrics import run_score

    results = {"mnli": {"accuracy": 0.8}, "mnli_mismatched": {"accuracy": 0.6}, "mrpc": {"accuracy": 0.5, "f1": 0.7}}
    heads = {"mnli": "mnli", "mnli_mismatched": "mnli", "mrpc": "mrpc"}
    assert run_score(results, heads) == pytest.approx((0.7 + 0.6) / 2)  # not (0.8 + 0.6 + 0.6) / 3


def test_the_logged_dev_score_counts_a_task_and_its_second_dev_set_once(tiny_model_dir, task_files, tmp_path):
    """As MNLI matched + mismatched: a dev-only task predicted by another task's head is not a task of its own."""
    from mtdnn.config import load_config
    from mtdnn.training import train

    mismatched = {**task_files["single"], "name": "single_mismatched", "head": "single",
                  "data_files": {"dev": task_files["pair"]["data_files"]["dev"].replace("pair", "single")
                                 .replace(".jsonl", ".tsv")}}
    config = load_config(None, [f"model.name_or_path={tiny_model_dir}", "train.max_steps=2", "train.batch_size=8",
                                "data.max_seq_length=32", f"output_dir={tmp_path / 'run'}"])
    config.tasks = [task_files["single"], mismatched, task_files["score"]]
    train(config)
    row = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    scores = {name: task_score(metrics) for name, metrics in row["metrics"].items()}
    assert set(scores) == {"single", "single_mismatched", "score"}
    assert row["score"] == pytest.approx(((scores["single"] + scores["single_mismatched"]) / 2 + scores["score"]) / 2)
