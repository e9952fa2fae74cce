"""What the experiment drivers share: result files that make a re-run skip finished jobs, mean ± std, paired
bootstrap intervals, random subsets, report sections, plans and the job pool (scripts.jobs, results, stats,
bootstrap, subsets, report, plan)."""

import json

import numpy as np
import pytest

from conftest import GLUE_DIR, needs_glue
from scripts import jobs, machine, plan, report, results, stats, subsets
from scripts.bootstrap import Interval, Scored, compare, task_scores


def test_mean_std_and_its_format():
    mean, std = stats.mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1)  # sample std (n - 1)
    assert stats.format_mean_std([0.8, 0.9, 1.0]) == "90.0 ± 10.0"
    assert stats.format_mean_std([0.9]) == "90.0" and stats.mean_std([0.9]) == (0.9, None)
    assert stats.format_mean_std([]) == "–"


def test_a_finished_job_is_skipped(tmp_path):
    store, calls = results.ResultStore(tmp_path), []
    work = lambda: calls.append(1) or {"metrics": {"accuracy": 0.75}}  # noqa: E731
    first = store.run_once(("single", "rte", "seed-1"), work, arm="single", seed=1)
    again = store.run_once(("single", "rte", "seed-1"), work, arm="single", seed=1)
    assert calls == [1] and first == again
    assert first["arm"] == "single" and first["metrics"] == {"accuracy": 0.75} and first["seconds"] >= 0
    assert json.loads((tmp_path / "single" / "rte" / "seed-1.json").read_text()) == first
    assert store.rows() == [first]


def test_a_failed_job_leaves_no_result(tmp_path):
    store = results.ResultStore(tmp_path)

    def fail():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.run_once(("trainer", "mrpc", "seed-2"), fail)
    assert store.load("trainer", "mrpc", "seed-2") is None and store.rows() == []


def test_subset_size():
    assert subsets.subset_size(0.001, 2490) == 2 and subsets.subset_size(0.01, 2490) == 25
    assert subsets.subset_size(1.0, 2490) == 2490 and subsets.subset_size(0.0001, 100) == 1


def _lines(path):
    return open(path).read().splitlines()


def test_subsets_are_reproducible_by_seed_and_load_as_the_task(task_files, tiny_model_dir, tmp_path):
    from mtdnn.config import DataSettings
    from mtdnn.data import load_task_data
    from mtdnn.pretrained import load_tokenizer
    from mtdnn.tasks import resolve_tasks

    entry = task_files["pair"]
    first = subsets.write_subset(entry, 10, seed=3, directory=tmp_path / "a")
    same = subsets.write_subset(entry, 10, seed=3, directory=tmp_path / "b")
    other = subsets.write_subset(entry, 10, seed=4, directory=tmp_path / "c")
    assert len(_lines(first["data_files"]["train"])) == 10
    assert _lines(first["data_files"]["train"]) == _lines(same["data_files"]["train"])
    assert _lines(first["data_files"]["train"]) != _lines(other["data_files"]["train"])
    assert len(_lines(first["data_files"]["dev"])) == 24  # the dev set stays whole
    assert {k: v for k, v in first.items() if k != "data_files"} == {k: v for k, v in entry.items() if k != "data_files"}

    tokenizer = load_tokenizer(str(tiny_model_dir))
    task = resolve_tasks([first])["pair"]
    subset = load_task_data(task, "train", tokenizer, DataSettings(max_seq_length=32))
    full = load_task_data(resolve_tasks([entry])["pair"], "train", tokenizer, DataSettings(max_seq_length=32))
    assert len(subset) == 10
    pairs = {(tuple(ids), label) for ids, label in zip(full.input_ids, full.labels)}
    assert all((tuple(ids), label) in pairs for ids, label in zip(subset.input_ids, subset.labels))


@needs_glue("RTE/train.tsv", "RTE/dev.tsv")
def test_a_glue_task_subset_keeps_its_columns_and_labels(tmp_path, monkeypatch):
    from mtdnn.sources import load_split
    from mtdnn.tasks import resolve_tasks

    monkeypatch.setenv("GLUE_DIR", str(GLUE_DIR))
    entry = subsets.write_subset("rte", 25, seed=1, directory=tmp_path)
    assert entry["name"] == "rte"
    columns = load_split(resolve_tasks([entry])["rte"], "train", None)
    assert len(columns["idx"]) == 25 and set(columns["label"]) <= {0, 1} and len(columns["text_b"]) == 25
    dev = load_split(resolve_tasks([entry])["rte"], "dev", None)
    assert len(dev["idx"]) == 277


def test_a_report_section_replaces_only_itself(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nintro\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n")
    report.write_section(path, "reproduce", "first")
    report.write_section(path, "reproduce", "second")
    text = path.read_text()
    assert "keep me" in text and "intro" in text and "first" not in text
    assert text.count("<!-- reproduce:begin -->") == 1 and "second" in text


def test_final_metrics_are_those_after_the_last_update(tmp_path):
    rows = [{"type": "eval", "step": 5, "metrics": {"rte": {"accuracy": 0.9}}},
            {"type": "train", "step": 6, "loss": 0.1},
            {"type": "eval", "step": 10, "metrics": {"rte": {"accuracy": 0.6}}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert jobs.final_metrics(tmp_path) == {"rte": {"accuracy": 0.6}}


def test_an_output_dir_accepts_its_own_plan_in_any_key_order_and_refuses_another(tmp_path):
    two_epochs = plan.Plan(epochs=2)
    plan.claim_output_dir(tmp_path, two_epochs)
    stored = json.loads((tmp_path / "plan.json").read_text())
    (tmp_path / "plan.json").write_text(json.dumps(dict(reversed(list(stored.items())))))  # older field order
    plan.claim_output_dir(tmp_path, two_epochs)  # the same plan: accepted
    with pytest.raises(SystemExit, match="different plan"):
        plan.claim_output_dir(tmp_path, plan.Plan(epochs=3))
    older = tmp_path / "older"  # results from before plans were recorded: whose plan they were is unknown
    results.ResultStore(older / "results").save({"metrics": {}}, "baseline", "seed-1")
    with pytest.raises(SystemExit, match="unrecorded plan"):
        plan.claim_output_dir(older, two_epochs)
    assert not (older / "plan.json").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_job_pool_returns_results_and_a_failure_stops_it(workers, tmp_path):
    with pytest.raises(TypeError):  # raised in the worker process, re-raised here
        with jobs.job_pool(workers) as pool:
            assert [pool.submit(subsets.subset_size, 0.5, n).result() for n in (10, 4)] == [5, 2]
            pool.submit(subsets.subset_size, 0.5, "ten")
            for number in range(20):  # a free worker is waited for, and the failure is raised meanwhile
                pool.submit((tmp_path / f"job-{number}").touch)
    assert len(list(tmp_path.iterdir())) < 20  # at most the jobs already in flight ran


def test_the_machine_line_of_a_report_shows_what_the_benchmark_stores():
    described = machine.machine()
    assert {"cpu", "cores", "accelerator", "torch_threads", "torch", "transformers", "python"} <= set(described)
    line = machine.machine_line({**described, "cpu": "AMD EPYC", "cores": 2, "accelerator": "no GPU",
                                 "torch_threads": 2, "torch": "2.13.0", "transformers": "5.24.0", "python": "3.11.7"})
    assert line == "AMD EPYC, 2 cores, no GPU; torch 2.13.0 (2 threads), transformers 5.24.0, Python 3.11.7"


def _scored(predictions: dict, labels, metrics=("accuracy",), task_type="single_classification"):
    return Scored({seed: np.asarray(values) for seed, values in predictions.items()}, np.asarray(labels),
                  tuple(metrics), task_type)


@pytest.mark.parametrize("metrics,task_type", [(("matthews_correlation",), "single_classification"),
                                               (("accuracy", "f1"), "pair_classification"),
                                               (("pearson", "spearmanr"), "regression")])
def test_the_bootstrap_scores_a_resample_exactly_as_mtdnn_scores_it(metrics, task_type):
    from mtdnn.metrics import compute_metrics, task_score

    rng = np.random.default_rng(0)
    if task_type == "regression":  # rounded: ties, which Spearman ranks as their average
        labels = np.round(rng.uniform(0, 5, 150), 1).astype(np.float32)
        predictions = np.round(labels + rng.normal(0, 1.5, 150), 1).astype(np.float32)
    else:
        labels = rng.integers(0, 2, 150)
        predictions = np.where(rng.random(150) < 0.7, labels, 1 - labels)
    rows = rng.integers(0, 150, size=(25, 150))
    expected = [task_score(compute_metrics(metrics, task_type, predictions[row], labels[row])) for row in rows]
    assert task_scores(metrics, task_type, predictions[rows], labels[rows]) == pytest.approx(expected, abs=1e-12)


def test_the_bootstrap_scores_degenerate_resamples_as_mtdnn_does():
    constant, labels = np.zeros((1, 6), dtype=int), np.array([[0, 1, 0, 1, 1, 0]])
    assert task_scores(["matthews_correlation"], "single_classification", constant, labels).tolist() == [0.0]
    assert task_scores(["f1"], "pair_classification", constant, np.zeros((1, 6), dtype=int)).tolist() == [0.0]
    assert np.isnan(task_scores(["pearson"], "regression", np.ones((1, 6)), labels)).all()  # SciPy: undefined


def _arms(rng, examples=400, seeds=(1, 2, 3), right_first=0.7, right_second=0.7, shared=False):
    """Two arms' predictions on one binary task: each right with its probability; `shared`: the second arm is the
    first with a few of its errors fixed (what paired comparisons see: mostly the same mistakes)."""
    labels = rng.integers(0, 2, examples)
    first, second = {}, {}
    for seed in seeds:
        right = rng.random(examples) < right_first
        first[seed] = np.where(right, labels, 1 - labels)
        fixed = right | (rng.random(examples) < (right_second - right_first) / (1 - right_first)) if shared \
            else rng.random(examples) < right_second
        second[seed] = np.where(fixed, labels, 1 - labels)
    return _scored(first, labels), _scored(second, labels)


def test_identical_arms_give_an_interval_around_zero_and_a_clear_shift_excludes_it():
    rng = np.random.default_rng(1)
    first, _ = _arms(rng)
    assert compare({"t": first}, {"t": first}, resamples=300)["t"] == Interval(0.0, 0.0, 0.0)
    same_quality = compare(*(({"t": arm}) for arm in _arms(rng)), resamples=500)["t"]
    assert same_quality.low < 0 < same_quality.high and not same_quality.excludes_zero()
    weak, strong = _arms(rng, right_first=0.6, right_second=0.85)
    shift = compare({"t": strong}, {"t": weak}, resamples=500)["t"]
    assert shift.excludes_zero() and shift.low > 0.15 and shift.delta == pytest.approx(
        np.mean([np.mean(strong.predictions[s] == strong.labels) - np.mean(weak.predictions[s] == weak.labels)
                 for s in (1, 2, 3)]))


def test_pairing_by_example_and_seed_narrows_the_interval():
    first, second = _arms(np.random.default_rng(2), right_first=0.7, right_second=0.75, shared=True)
    paired = compare({"t": second}, {"t": first}, resamples=1000)["t"]
    unpaired = compare({"t": second}, {"t": first}, resamples=1000, paired=False)["t"]
    assert paired.delta == unpaired.delta
    assert (paired.high - paired.low) < 0.5 * (unpaired.high - unpaired.low)
    assert paired.excludes_zero() and not unpaired.excludes_zero()


def test_the_bootstrap_is_determined_by_its_seed_and_averages_over_tasks():
    rng = np.random.default_rng(3)
    (a1, b1), (a2, b2) = _arms(rng), _arms(rng, right_second=0.8)
    first, second = {"t1": a1, "t2": a2}, {"t1": b1, "t2": b2}
    once, again = compare(first, second, resamples=200, seed=7), compare(first, second, resamples=200, seed=7)
    assert once == again and compare(first, second, resamples=200, seed=8)["average"] != once["average"]
    assert once["average"].delta == pytest.approx((once["t1"].delta + once["t2"].delta) / 2)
    assert once["t1"].low <= once["t1"].delta <= once["t1"].high
    only_seed_2 = {"t1": _scored({2: a1.predictions[2]}, a1.labels)}
    assert set(compare(only_seed_2, {"t1": b1}, resamples=50)) == {"t1", "average"}  # the seeds both arms have
