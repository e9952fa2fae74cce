"""scripts.reproduce: the budget probe's verdicts and choice, aggregation with intervals, the report's tables and
reading, and a tiny run of every arm that a re-run skips."""

import dataclasses
import json

import numpy as np
import pytest
import yaml

from scripts import jobs, reproduce, reproduce_runs
from scripts import reproduce_budget as budget
from scripts import reproduce_tables as tables
from scripts.bootstrap import Interval
from scripts.reproduce_plan import FULL, QUICK, STAGE2_TASKS, ReproducePlan
from scripts.reproduce_reading import reading
from scripts.reproduce_report import job_hours, rerun_lines


def _rows(values: dict) -> list[dict]:
    """arm -> task -> per-seed accuracy, as stored result rows."""
    return [{"arm": arm, "task": task, "seed": seed, "metrics": {"accuracy": value}}
            for arm, tasks in values.items() for task, per_seed in tasks.items()
            for seed, value in enumerate(per_seed, 1)]


TABLE = tables.collect(_rows({
    "single": {"rte": [0.60, 0.62, 0.64], "mrpc": [0.80, 0.80, 0.80]},
    "control": {"rte": [0.62, 0.64, 0.66], "mrpc": [0.72, 0.72, 0.72]},
    "mtdnn": {"rte": [0.66, 0.66, 0.66], "mrpc": [0.78, 0.78, 0.78]},
    "finetuned": {"rte": [0.66, 0.68, 0.70], "mrpc": [0.70, 0.70, 0.70]},
}))


def test_wnli_stays_out_of_stage_2_and_the_budget_is_the_same_for_every_arm():
    assert STAGE2_TASKS == ("cola", "sst2", "mrpc", "stsb", "rte")
    for plan in (FULL, QUICK):
        assert [task for task in plan.tasks if task not in plan.separate] == list(STAGE2_TASKS)
        assert plan.separate == ("wnli",) and plan.exempt == ("wnli",)
        assert plan.epochs is None and plan.learning_rate is None  # set only by the chosen budget
    chosen = FULL.at(FULL.budgets[0])
    assert (chosen.epochs, chosen.learning_rate, chosen.budget_label) == (3, 5e-5, "e3-lr5e-05")
    assert chosen.settings()["train"]["epochs"] == 3 and chosen.settings()["train"]["learning_rate"] == 5e-5
    assert all(rate in (2e-5, 3e-5, 5e-5) for _, rate in FULL.budgets)


def test_scores_deltas_and_small_task_average():
    assert tables.scores(TABLE, "single", "rte") == [0.60, 0.62, 0.64]
    assert tables.mean_delta(TABLE, "finetuned", "single", "rte") == pytest.approx(6.0)
    assert tables.mean_delta(TABLE, "finetuned", "control", "mrpc") == pytest.approx(-2.0)
    assert tables.small_task_average(TABLE, "single", ["rte", "mrpc"]) == pytest.approx([0.70, 0.71, 0.72])
    assert tables.mean_delta(TABLE, "finetuned", "single", "wnli") is None


def test_the_summary_shows_both_deltas_with_their_intervals_and_the_paper():
    found = {"single": {"rte": Interval(0.06, 0.01, 0.11), "average": Interval(-0.02, -0.05, 0.01)},
             "control": {"rte": Interval(0.04, -0.01, 0.09)}}
    lines = tables.summary_table(TABLE, found, ["rte", "mrpc"])
    assert lines[0].startswith("| task | arm 1 | control | arm 2 | arm 3 | Δ(3 − 1) [95% CI] | Δ(3 − control)")
    assert lines[2] == ("| rte | 62.0 ± 2.0 | 64.0 ± 2.0 | 66.0 ± 0.0 | 68.0 ± 2.0 | +6.0 [+1.0, +11.0] | "
                        "+4.0 [-1.0, +9.0] | +12.3 | 3 |")  # paper: 83.4 − 71.1
    assert lines[3].split(" | ")[5:7] == ["-10.0", "-2.0"]  # no interval: the bare Δ of the means
    assert lines[-1].startswith("| small-task average | 71.0 ± 1.0 | 68.0 ± 1.0 | 72.0 ± 0.0 | 69.0 ± 1.0 |")
    assert lines[-1].endswith("| -2.0 [-5.0, +1.0] | – | +7.0 | |")  # paper: the mean of its rte and mrpc Δs
    wnli = tables.separate_table(TABLE, {"single": {}, "control": {}}, ["wnli"], {"wnli": 0.563})
    assert wnli[2] == "| wnli | – | – | – | – | – | 56.3 | 0 |"


def test_paper_deltas_average_a_tasks_numbers_as_ours_do():
    assert tables.paper_delta("mrpc") == pytest.approx((91.0 + 87.5) / 2 - (89.5 + 85.8) / 2)
    assert tables.paper_delta("wnli") is None


def test_the_intervals_of_the_table_come_from_the_stored_predictions():
    from mtdnn.tasks import resolve_tasks

    labels = {"rte": np.array([0, 1] * 50)}
    right, wrong = labels["rte"].tolist(), (1 - labels["rte"]).tolist()
    predictions = {"finetuned": {"rte": {1: right, 2: right}}, "single": {"rte": {1: wrong, 2: wrong}},
                   "control": {"rte": {1: right, 2: wrong}}}
    found = tables.intervals(predictions, labels, resolve_tasks(["rte"]), ["rte"], 200, 0)
    assert found["single"]["rte"] == Interval(1.0, 1.0, 1.0) == found["single"]["average"]
    assert found["control"]["rte"].delta == pytest.approx(0.5) and found["control"]["rte"].low < 0.5


def test_the_reading_says_which_deltas_exclude_zero_and_how_much_survives_the_control():
    found = {"single": {"rte": Interval(0.10, 0.04, 0.16), "mrpc": Interval(0.02, -0.01, 0.05),
                        "average": Interval(0.06, 0.02, 0.10)},
             "control": {"rte": Interval(0.03, -0.02, 0.08), "mrpc": Interval(0.01, -0.02, 0.04),
                         "average": Interval(0.02, -0.01, 0.05)}}
    text = reading(FULL.at((3, 5e-5)), found, ["rte", "mrpc"], [], {"rte": 277, "mrpc": 408})
    assert "(arm 1), arm 3's small-task average differs by +6.0 points [+2.0, +10.0], an interval that excludes " \
           "zero; per task the interval excludes zero on rte (+10.0) and includes it on mrpc." in text
    assert "the equal-passes control, arm 3's small-task average differs by +2.0 points [-1.0, +5.0], an interval " \
           "that includes zero; per task the interval excludes zero on none and includes it on rte, mrpc." in text
    assert "+2.0 points (33%) remain against the control, and the other 4.0 are what a second stage" in text
    assert "the dev sets are small (rte 277, mrpc 408 examples)" in text and "MNLI" in text
    failed = reading(FULL.at((3, 5e-5)), found, ["rte", "mrpc"], ["cola"], {})
    assert "did not clear its floor on cola" in failed and "cannot carry the claim" in failed


def test_majority_floors_and_verdicts():
    from mtdnn.tasks import GLUE_TASKS

    assert budget.majority_floor(GLUE_TASKS["rte"], np.array([0, 0, 1])) == pytest.approx(2 / 3)
    assert budget.majority_floor(GLUE_TASKS["cola"], np.array([1, 1, 0])) == 0.0  # MCC of a constant
    assert budget.majority_floor(GLUE_TASKS["stsb"], np.array([0.5, 2.0])) == 0.0
    assert budget.majority_floor(GLUE_TASKS["mrpc"], np.array([1, 1, 1, 0])) == pytest.approx((0.75 + 6 / 7) / 2)
    plan = FULL.at((3, 5e-5))
    assert budget.judge(plan, "rte", 1, {"accuracy": 0.60}, 0.527)["passed"]
    assert not budget.judge(plan, "rte", 1, {"accuracy": 0.57}, 0.527)["passed"]  # within 5 points of the floor
    cola = budget.judge(plan, "cola", 2, {"matthews_correlation": 0.12}, 0.0)
    assert not cola["passed"] and cola["minimums"] == {"matthews_correlation": [0.12, 0.15]}
    assert budget.miss(cola) == "cola seed 2: 12.0 ≥ 5.0 (matthews_correlation 12.0 < 15.0)"
    wnli = budget.judge(plan, "wnli", 1, {"accuracy": 0.40}, 0.563)
    assert wnli["passed"] and wnli["exempt"]


def _verdicts(plan, passed: dict) -> list[dict]:
    return [{"task": task, "seed": seed, "score": 0.5 if ok else 0.1, "floor": 0.0, "threshold": 0.3, "minimums": {},
             "exempt": False, "passed": ok} for task, ok in passed.items() for seed in plan.seeds]


def test_the_first_passing_candidate_is_chosen_else_the_accepted_one_else_a_refusal():
    plan = FULL.at((3, 5e-5))
    everything = {task: True for task in plan.tasks}
    failing = budget.candidate(1, plan, _verdicts(plan, {"cola": False}))
    passing = budget.candidate(2, FULL.at((3, 3e-5)), _verdicts(plan, everything))
    assert not failing["passed"] and passing["passed"]
    assert not budget.candidate(3, plan, _verdicts(plan, {"cola": True}))["passed"]  # tasks left to run
    assert budget.choose([failing, passing], accept=None)["chosen"] == 2
    accepted = budget.choose([failing], accept=1)
    assert accepted["accepted"] and budget.not_learnt(accepted) == ["cola"]
    with pytest.raises(budget.BudgetRefused) as refusal:
        budget.choose([failing], accept=None)
    assert "candidate 1 (3 epochs, lr 5e-05): cola seed 1: 10.0 < 30.0; cola seed 2" in str(refusal.value)
    assert "--accept-budget N" in str(refusal.value)


def test_the_probe_stops_a_candidate_at_its_first_miss_and_keeps_its_arm_1(tmp_path, monkeypatch):
    plan = ReproducePlan(name="test", seeds=(1, 2), budgets=((1, 5e-5), (2, 5e-5)), tasks=("rte", "cola", "wnli"))
    labels = {"rte": [0, 0, 1, 1], "cola": [0, 1, 1, 1], "wnli": [0, 1]}
    ran = []

    def fake_job(at, entries, output_dir, job):
        arm, task, seed = job
        ran.append((at.epochs, task, seed))
        (output_dir / "dev_labels").mkdir(exist_ok=True)
        (output_dir / "dev_labels" / f"{task}.json").write_text(json.dumps(labels[task]))
        learnt = at.epochs == 2 or task == "rte"  # one epoch leaves cola at the majority class
        metric = {"cola": "matthews_correlation"}.get(task, "accuracy")
        return {"metrics": {metric: 0.9 if learnt else 0.0}}

    monkeypatch.setattr(reproduce, "run_job", fake_job)
    entries = {task: task for task in plan.tasks}
    chosen = reproduce.probe(plan, entries, tmp_path, jobs.InlineExecutor(), 1, accept=None)
    assert chosen.budget_label == "e2-lr5e-05"
    assert ran == [(1, "cola", 1), (2, "cola", 1), (2, "cola", 2), (2, "rte", 1), (2, "rte", 2), (2, "wnli", 1),
                   (2, "wnli", 2)]  # cola first; its first miss ends candidate 1
    stored = json.loads((tmp_path / "budget.json").read_text())
    assert stored["chosen"] == 2 and not stored["accepted"] and len(stored["candidates"][1]["verdicts"]) == 6
    one_epoch = dataclasses.replace(plan, budgets=((1, 5e-5),))
    with pytest.raises(budget.BudgetRefused, match="cola seed 1: 0.0 < 5.0"):
        reproduce.probe(one_epoch, entries, tmp_path, jobs.InlineExecutor(), 1, accept=None)
    assert "chosen" not in json.loads((tmp_path / "budget.json").read_text())  # the evidence, no choice
    ran.clear()
    accepted = reproduce.probe(one_epoch, entries, tmp_path, jobs.InlineExecutor(), 1, accept=1)
    assert accepted.epochs == 1 and len(ran) == 1 + 6  # the probe's miss, then the accepted candidate's arm 1
    assert json.loads((tmp_path / "budget.json").read_text())["accepted"]


def test_a_plan_may_add_budgets_to_its_output_directory_but_change_nothing_else(tmp_path):
    reproduce.claim(tmp_path, QUICK)
    reproduce.claim(tmp_path, dataclasses.replace(QUICK, budgets=QUICK.budgets + ((2, 5e-5),)))
    assert json.loads((tmp_path / "plan.json").read_text())["budgets"][-1] == [2, 5e-5]
    with pytest.raises(SystemExit, match="different plan"):
        reproduce.claim(tmp_path, dataclasses.replace(QUICK, budgets=((2, 5e-5),)))
    with pytest.raises(SystemExit, match="different plan"):
        reproduce.claim(tmp_path, dataclasses.replace(QUICK, budgets=QUICK.budgets + ((2, 5e-5),), margin=0.1))


def test_the_budget_table_shows_every_run_of_the_probe():
    plan = FULL.at((3, 5e-5))
    verdicts = [budget.judge(plan, "cola", seed, {"matthews_correlation": mcc}, 0.0)
                for seed, mcc in ((1, 0.2), (2, 0.1))]
    lines = tables.budget_table({"chosen": 1, "accepted": True, "candidates": [budget.candidate(1, plan, verdicts)]})
    assert lines[2] == ("| 1 (chosen) | 3 | 5e-05 | cola | 0.0 | ≥ 5.0, matthews_correlation ≥ 15.0 | "
                        "20.0 (s1), 10.0 (s2) | MISSED |")


def test_a_stage_2_run_counts_once_in_the_job_time():
    rows = [{"seconds": 3600, "shared_run": "runs/mtdnn/seed-1"}, {"seconds": 3600, "shared_run": "runs/mtdnn/seed-1"},
            {"seconds": 1800}]
    assert job_hours(rows) == pytest.approx(1.5)


def _config(run_dir) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_a_tiny_run_trains_every_arm_and_a_rerun_skips_them(tiny_model_dir, task_files, tmp_path, monkeypatch):
    plan = ReproducePlan(name="test", seeds=(1,), budgets=((1, 1e-3),), train_caps={"single": 40},
                         stage2_evals_per_epoch=1,
                         tasks=(task_files["single"], task_files["score"], task_files["pair"]),
                         separate=("pair",), exempt=("pair",), probe_first=("single",), minimums={}, margin=2.0,
                         model=str(tiny_model_dir), max_seq_length=32, bootstrap_resamples=50)
    store = reproduce.run_all(plan, tmp_path, workers=2, accept=1)  # jobs in two spawned processes, one thread each
    rows = store.rows()
    expected = [(arm, task) for arm in ("single", "control", "finetuned") for task in ("single", "score", "pair")]
    assert sorted((row["arm"], row["task"]) for row in rows) == sorted(expected + [("mtdnn", "single"),
                                                                                    ("mtdnn", "score")])
    assert all(row["budget"] == "e1-lr0.001" and len(row["predictions"]) == 24 for row in rows)
    assert {tuple(row["metrics"]) for row in rows if row["task"] == "score"} == {("pearson", "spearmanr")}
    assert json.loads((tmp_path / "budget.json").read_text())["accepted"]  # margin 2.0: nothing learns
    assert not list(tmp_path.rglob("model.safetensors"))  # finished runs keep no checkpoints, arm 1's included
    runs = tmp_path / "runs" / "e1-lr0.001"
    assert [entry["name"] for entry in _config(runs / "mtdnn" / "seed-1")["tasks"]] == ["single", "score"]
    single, control = _config(runs / "single" / "single" / "seed-1"), _config(runs / "control" / "single" / "seed-1")
    stage2, stage3 = _config(runs / "mtdnn" / "seed-1"), _config(runs / "mtdnn" / "seed-1" / "finetune" / "single")
    passes = [config["train"]["epochs"] for config in (single, control, stage2, stage3)]
    assert passes[0] + passes[1] == passes[2] + passes[3]  # the control's passes over the task are arm 3's
    assert single["tasks"] == control["tasks"] == stage3["tasks"] == [stage2["tasks"][0]]  # the same training data
    assert "single-train-n40-s0.jsonl" in str(single["tasks"])
    assert control["model"]["name_or_path"].startswith(str(runs / "single" / "single" / "seed-1"))
    assert _config(runs / "mtdnn" / "seed-1" / "finetune" / "pair")["tasks"] == [task_files["pair"]]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished job was run again")

    monkeypatch.setattr(jobs, "run_stage", no_training)
    assert reproduce.run_all(plan, tmp_path, accept=1).rows() == rows


def test_the_trainer_reference_scores_predictions_against_their_own_labels(task_files, tiny_model_dir, tmp_path,
                                                                           monkeypatch):
    """With group_by_length, transformers 5 orders evaluation batches by length too: each prediction must be scored
    against its own example's label, as a plain forward pass over the dev set in file order pairs them."""
    import torch
    import transformers

    import mtdnn.evaluation
    import mtdnn.metrics
    from mtdnn.config import DataSettings
    from mtdnn.data import load_task_data
    from mtdnn.pretrained import load_tokenizer
    from mtdnn.tasks import resolve_tasks

    plan = ReproducePlan(name="test", seeds=(1,), budgets=((1, 1e-3),), model=str(tiny_model_dir), max_seq_length=32,
                         batch_size=8).at((1, 1e-3))
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
    reproduce_runs.run_trainer(plan, task_files["single"], 1, tmp_path / "trainer")
    task = next(iter(resolve_tasks([task_files["single"]]).values()))
    dev = load_task_data(task, "dev", load_tokenizer(str(tiny_model_dir)), DataSettings(max_seq_length=32))
    model = seen["model"].eval()
    with torch.no_grad():
        logits = [model(input_ids=torch.tensor([ids.tolist()]), token_type_ids=torch.tensor([types.tolist()])).logits[0].numpy()
                  for ids, types in zip(dev.input_ids, dev.token_type_ids)]

    def pairs(all_logits, labels):
        return sorted((tuple(np.round(row, 4)), int(label)) for row, label in zip(all_logits, labels))

    assert pairs(seen["logits"], seen["references"]) == pairs(logits, dev.labels)


def test_stored_dev_labels_must_not_change(tmp_path):
    from scripts.predictions import load_labels, save_labels

    save_labels(tmp_path, "rte", [0, 1, 1])
    save_labels(tmp_path, "rte", [0, 1, 1])
    with pytest.raises(RuntimeError, match="dev labels differ"):
        save_labels(tmp_path, "rte", [1, 1, 1])
    assert load_labels(tmp_path)["rte"].tolist() == [0, 1, 1]


def test_a_rerun_is_compared_arm_by_arm_over_common_seeds_against_seed_noise():
    other = tables.collect(_rows({
        "single": {"rte": [0.61, 0.63, 0.65], "mrpc": [0.70, 0.70, 0.70]},  # rte within its std, mrpc 10 points off
        "control": {"rte": [0.62]},  # a re-run still going: seed 1 of one job
    }))
    lines = rerun_lines(TABLE, other, "runs/again")
    assert lines[0].startswith("The same plan run again from scratch (results in `runs/again`), over the seeds both "
                               "runs have: 1 of 2 ")
    assert lines[0].endswith("over seeds, and 1 of 3 arm/task results are identical seed for seed.")
    rows = [line.split(" | ")[1:] for line in lines if line.startswith("| arm 1") or line.startswith("| control")]
    assert rows == [["rte", "1,2,3", "62.0 ± 2.0", "63.0 ± 2.0", "+1.0", "yes |"],
                    ["mrpc", "1,2,3", "80.0 ± 0.0", "70.0 ± 0.0", "-10.0", "no |"],
                    ["rte", "1", "62.0", "62.0", "+0.0", "one seed: no noise measured |"]]
    assert rerun_lines(TABLE, tables.collect([]), "x") == ["No arm, task and seed of the re-run in `x` is in this run "
                                                           "too."]


def test_the_estimate_counts_every_job_s_tokens_and_the_time_left_at_the_measured_rate(tiny_model_dir, task_files,
                                                                                     tmp_path):
    from scripts import reproduce_estimate
    from scripts.results import ResultStore

    plan = ReproducePlan(name="test", seeds=(1, 2), budgets=((1, 1e-3), (3, 1e-3)),
                         tasks=(task_files["single"], task_files["pair"]), separate=("pair",),
                         model=str(tiny_model_dir), max_seq_length=32)
    entries = reproduce.task_entries(plan, tmp_path / "data")
    tokens = reproduce_estimate.task_tokens(plan, entries)
    assert set(tokens) == {"single", "pair"} and all(count > 64 for count in tokens.values())
    jobs_at_3 = reproduce_estimate.job_tokens(plan.at((3, 1e-3)), tokens)
    both = tokens["single"] + tokens["pair"]
    assert jobs_at_3[("single", "pair", 2)] == jobs_at_3[("control", "pair", 2)] == 3 * tokens["pair"]
    assert jobs_at_3[("chain", None, 1)] == 3 * tokens["single"] + 3 * both  # pair stays out of stage 2
    assert sum(jobs_at_3.values()) == 2 * (3 * both + 3 * both + 3 * tokens["single"] + 3 * both)
    store = ResultStore(tmp_path / "results")
    store.save({"seconds": 0.5}, "e1-lr0.001", "single", "single", "seed-1")  # one finished arm-1 job
    lines = reproduce_estimate.estimate(plan, entries, store, workers=2)
    assert "1 of 10 jobs finished" in lines[1] and "0 of 10 jobs finished" in lines[2]  # 2 seeds x (2 x 2 + 1)
    rate = tokens["single"] / 0.5
    assert f"{rate:,.0f} tokens/s per worker" in lines[-1]
    nothing_finished = reproduce_estimate.estimate(plan, entries, ResultStore(tmp_path / "none"), 2)
    assert "no finished single-task job" in nothing_finished[-1]
