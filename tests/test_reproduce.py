"""scripts.reproduce: aggregation over seeds, the targets' verdicts, and a tiny run that a re-run skips."""

import pytest

from scripts import jobs, reproduce
from scripts import reproduce_report as report
from scripts.reproduce_plan import ReproducePlan


def _rows(values: dict) -> list[dict]:
    """arm -> task -> per-seed accuracy, as stored result rows."""
    return [{"arm": arm, "task": task, "seed": seed, "metrics": {"accuracy": value}}
            for arm, tasks in values.items() for task, per_seed in tasks.items()
            for seed, value in enumerate(per_seed, 1)]


TABLE = report.collect(_rows({
    "single": {"rte": [0.60, 0.62, 0.64], "mrpc": [0.80, 0.80, 0.80]},
    "trainer": {"rte": [0.61, 0.63, 0.65], "mrpc": [0.85, 0.85, 0.85]},
    "mtdnn": {"rte": [0.66, 0.66, 0.66], "mrpc": [0.78, 0.78, 0.78]},
    "finetuned": {"rte": [0.66, 0.68, 0.70], "mrpc": [0.70, 0.70, 0.70]},
}))


def test_scores_delta_and_small_task_average():
    assert report.scores(TABLE, "single", "rte") == [0.60, 0.62, 0.64]
    assert report.delta(TABLE, "rte") == pytest.approx(6.0)
    assert report.delta(TABLE, "mrpc") == pytest.approx(-10.0)
    assert report.small_task_average(TABLE, "single", ["rte", "mrpc"]) == pytest.approx([0.70, 0.71, 0.72])
    assert report.delta(TABLE, "wnli") is None


def test_targets_say_which_are_not_met():
    lines = "\n".join(report.targets(TABLE, ["rte", "mrpc"]))
    assert "rte: ours − Trainer = -1.0 points (within 1 point)" in lines
    assert "mrpc: ours − Trainer = -5.0 points (NOT within 1 point)" in lines
    assert "Δ -2.0 points: NOT met (target: arm 3 ahead)" in lines  # small-task average: (6 - 10) / 2
    assert "mrpc: arm 3 − arm 1 = -10.0 points, arm 1 std 0.0: NOT met" in lines
    assert "rte: arm 3 − arm 1 = +6.0 points, arm 1 std 2.0: not behind" in lines


def test_summary_table_rows():
    lines = report.summary_table(TABLE, ["rte", "mrpc"])
    assert lines[2] == "| rte | 62.0 ± 2.0 | 63.0 ± 2.0 | 66.0 ± 0.0 | 68.0 ± 2.0 | +6.0 | +12.3 | 3 |"  # 83.4 − 71.1
    assert lines[-1].startswith("| small-task average | 71.0 ± 1.0 |")
    assert report.summary_table(TABLE, ["wnli"])[2].endswith("| not in Table 3 | 0 |")


def test_paper_deltas_average_a_tasks_numbers_as_ours_do():
    assert report.paper_delta("mrpc") == pytest.approx((91.0 + 87.5) / 2 - (89.5 + 85.8) / 2)
    assert report.paper_delta("wnli") is None


def test_a_stage_2_run_counts_once_in_the_job_time():
    rows = [{"seconds": 3600, "shared_run": "runs/mtdnn/seed-1"}, {"seconds": 3600, "shared_run": "runs/mtdnn/seed-1"},
            {"seconds": 1800}]
    assert report.job_hours(rows) == pytest.approx(1.5)


def test_a_tiny_run_trains_every_arm_and_a_rerun_skips_them(tiny_model_dir, task_files, tmp_path, monkeypatch):
    plan = ReproducePlan(name="test", seeds=(1,), epochs=1, train_caps={"single": 40}, stage2_evals_per_epoch=1,
                          tasks=(task_files["single"], task_files["score"]), model=str(tiny_model_dir),
                          max_seq_length=32, learning_rate=1e-3)
    store = reproduce.run_all(plan, tmp_path, workers=2)  # jobs in two spawned processes, one thread each
    rows = store.rows()
    assert sorted((row["arm"], row["task"]) for row in rows) == sorted(
        (arm, task) for arm in report.ARMS for task in ("single", "score"))
    assert {tuple(row["metrics"]) for row in rows if row["task"] == "score"} == {("pearson", "spearmanr")}
    assert not list(tmp_path.rglob("model.safetensors"))  # finished runs keep no checkpoints
    config = (tmp_path / "runs" / "single" / "single" / "seed-1" / "config.yaml").read_text()
    assert "single-train-n40-s0.jsonl" in config  # the capped task trains on its subset

    def no_training(*args, **kwargs):
        raise AssertionError("a finished job was run again")

    monkeypatch.setattr(jobs, "run_stage", no_training)
    monkeypatch.setattr(reproduce, "run_trainer", no_training)
    assert reproduce.run_all(plan, tmp_path).rows() == rows


def test_the_trainer_reference_scores_predictions_against_their_own_labels(task_files, tiny_model_dir, tmp_path,
                                                                           monkeypatch):
    """With group_by_length, transformers 5 orders evaluation batches by length too: each prediction must be scored
    against its own example's label, as a plain forward pass over the dev set in file order pairs them."""
    import numpy as np
    import torch
    import transformers

    import mtdnn.evaluation
    import mtdnn.metrics
    from mtdnn.config import DataSettings
    from mtdnn.data import load_task_data
    from mtdnn.pretrained import load_tokenizer
    from mtdnn.tasks import resolve_tasks

    plan = ReproducePlan(name="test", seeds=(1,), epochs=1, model=str(tiny_model_dir), max_seq_length=32,
                          batch_size=8, learning_rate=1e-3)
    seen = {}
    original_predict, original_from_logits = transformers.Trainer.predict, mtdnn.evaluation.predictions_from_logits
    original_metrics = mtdnn.metrics.compute_metrics

    def predict(self, dataset, *args, **kwargs):
        seen["model"] = self.model
        return original_predict(self, dataset, *args, **kwargs)

    def from_logits(task_type, logits, *args):
        seen["logits"] = np.asarray(logits)
        return original_from_logits(task_type, logits, *args)

    def metrics(names, task_type, predictions, references):
        seen["references"] = np.asarray(references)
        return original_metrics(names, task_type, predictions, references)

    monkeypatch.setattr(transformers.Trainer, "predict", predict)
    monkeypatch.setattr(mtdnn.evaluation, "predictions_from_logits", from_logits)
    monkeypatch.setattr(mtdnn.metrics, "compute_metrics", metrics)
    reproduce.run_trainer(plan, task_files["single"], 1, tmp_path / "trainer")
    task = next(iter(resolve_tasks([task_files["single"]]).values()))
    dev = load_task_data(task, "dev", load_tokenizer(str(tiny_model_dir)), DataSettings(max_seq_length=32))
    model = seen["model"].eval()
    with torch.no_grad():
        logits = [model(input_ids=torch.tensor([ids.tolist()]), token_type_ids=torch.tensor([types.tolist()])).logits[0].numpy()
                  for ids, types in zip(dev.input_ids, dev.token_type_ids)]

    def pairs(all_logits, labels):
        return sorted((tuple(np.round(row, 4)), int(label)) for row, label in zip(all_logits, labels))

    assert pairs(seen["logits"], seen["references"]) == pairs(logits, dev.labels)


def test_a_rerun_is_compared_arm_by_arm_over_common_seeds_against_seed_noise():
    other = report.collect(_rows({
        "single": {"rte": [0.61, 0.63, 0.65], "mrpc": [0.70, 0.70, 0.70]},  # rte within its std, mrpc 10 points off
        "trainer": {"rte": [0.61]},  # a re-run still going: seed 1 of one job
    }))
    lines = report.rerun_lines(TABLE, other, "runs/again")
    assert lines[0].startswith("The same plan run again from scratch (results in `runs/again`), over the seeds both "
                               "runs have: 1 of 2 ")
    assert lines[0].endswith("over seeds, and 1 of 3 arm/task results are identical seed for seed.")
    rows = [line.split(" | ")[1:] for line in lines if line.startswith("| arm 1")]
    assert rows == [["rte", "1,2,3", "62.0 ± 2.0", "63.0 ± 2.0", "+1.0", "yes |"],
                    ["mrpc", "1,2,3", "80.0 ± 0.0", "70.0 ± 0.0", "-10.0", "no |"],
                    ["rte", "1", "61.0", "61.0", "+0.0", "one seed: no noise measured |"]]
    assert report.rerun_lines(TABLE, report.collect([]), "x") == ["No arm, task and seed of the re-run in `x` is in "
                                                                  "this run too."]
