"""Paired bootstrap intervals for the difference of two arms' dev scores, over dev examples and seeds.

Each resample draws dev examples with replacement (per task) and seeds with replacement; paired, both arms are
scored on the same examples and the same seeds, so what they share (hard examples, a seed's lucky batch order)
cancels in the difference. An arm's score in a resample is its task score (mtdnn.metrics' definitions,
vectorised over resamples) averaged over the drawn seeds; an average over tasks draws every task each time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def _correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row pair, (resamples, examples) -> (resamples,); NaN for a constant row, as SciPy."""
    x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        x, y = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    return np.clip((x * y).sum(axis=1), -1.0, 1.0)


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """scikit-learn's multi-class Matthews correlation from the confusion counts; 0 where it is undefined."""
    classes = np.union1d(np.unique(predictions), np.unique(labels))
    predicted = (predictions[..., None] == classes).sum(axis=1).astype(np.float64)  # (resamples, classes)
    true = (labels[..., None] == classes).sum(axis=1).astype(np.float64)
    correct = (predictions == labels).sum(axis=1).astype(np.float64)
    samples = predicted.sum(axis=1)
    covariance = correct * samples - (true * predicted).sum(axis=1)
    spread = (samples ** 2 - (predicted * predicted).sum(axis=1)) * (samples ** 2 - (true * true).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread == 0, 0.0, covariance / np.sqrt(spread))


def _f1(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """F1 of label 1, as GLUE scores MRPC; 0 where there is no positive prediction nor label (scikit-learn)."""
    true_positives = ((predictions == 1) & (labels == 1)).sum(axis=1)
    wrong = (predictions != labels)
    denominator = 2 * true_positives + (wrong & (labels == 1)).sum(axis=1) + (wrong & (predictions == 1)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator == 0, 0.0, 2 * true_positives / denominator)


METRICS = {
    "accuracy": lambda predictions, labels: (predictions == labels).mean(axis=1),
    "f1": _f1,
    "matthews_correlation": _matthews,
    "pearson": _correlation,
    "spearmanr": lambda predictions, labels: _correlation(rankdata(predictions, axis=1), rankdata(labels, axis=1)),
}


def task_scores(metric_names, task_type: str, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """mtdnn.metrics.task_score of each row: (resamples, examples) predictions and labels -> (resamples,)."""
    if task_type == "regression":  # mtdnn's metric passes values through float32, as `evaluate` stores them
        predictions = np.asarray(predictions, np.float32).astype(np.float64)
        labels = np.asarray(labels, np.float32).astype(np.float64)
    return np.mean([METRICS[name](predictions, labels) for name in metric_names], axis=0)


@dataclass(frozen=True)
class Scored:
    """One task of one arm: its dev predictions per seed, with what scores them."""

    predictions: dict[int, np.ndarray]
    """Seed -> (examples,) predictions, in dev-file order."""
    labels: np.ndarray
    metric_names: tuple[str, ...]
    task_type: str


@dataclass(frozen=True)
class Interval:
    delta: float
    """The difference of the two arms' scores on the whole dev sets, averaged over the common seeds."""
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _resampled(arm: Scored, seeds: list[int], seed_draws: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """The arm's score in each resample: (resamples,), the mean over the drawn seeds of the drawn examples' score."""
    labels = arm.labels[examples]  # (resamples, examples)
    per_seed = np.stack([task_scores(arm.metric_names, arm.task_type, np.asarray(arm.predictions[seed])[examples],
                                     labels) for seed in seeds], axis=1)  # (resamples, seeds)
    return np.take_along_axis(per_seed, seed_draws, axis=1).mean(axis=1)


def _whole(arm: Scored, seeds: list[int]) -> float:
    everything = np.arange(len(arm.labels))[None, :]
    return float(_resampled(arm, seeds, np.arange(len(seeds))[None, :], everything)[0])


def compare(first: dict[str, Scored], second: dict[str, Scored], resamples: int = 2000, seed: int = 0,
            level: float = 0.95, paired: bool = True) -> dict[str, Interval]:
    """first − second for each task both have (over the seeds both have) and for their average ("average"), with
    a percentile interval at `level`. `paired=False` draws the second arm's examples and seeds on their own (the
    interval a comparison of two independent samples would give)."""
    tasks = [task for task in first if task in second]
    seeds = sorted(set.intersection(*(set(first[t].predictions) & set(second[t].predictions) for t in tasks)))
    if not tasks or not seeds:
        return {}
    rng = np.random.default_rng(seed)

    def draw() -> tuple[np.ndarray, dict[str, np.ndarray]]:
        seed_draws = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
        return seed_draws, {task: rng.integers(0, len(first[task].labels), size=(resamples, len(first[task].labels)))
                            for task in tasks}

    draws_first = draw()
    draws_second = draws_first if paired else draw()
    deltas = {task: _resampled(first[task], seeds, draws_first[0], draws_first[1][task])
              - _resampled(second[task], seeds, draws_second[0], draws_second[1][task]) for task in tasks}
    points = {task: _whole(first[task], seeds) - _whole(second[task], seeds) for task in tasks}
    deltas["average"], points["average"] = np.mean(list(deltas.values()), axis=0), float(np.mean(list(points.values())))
    tail = 100 * (1 - level) / 2
    return {name: Interval(points[name], *map(float, np.percentile(values, [tail, 100 - tail])))
            for name, values in deltas.items()}
