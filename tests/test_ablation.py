"""scripts.ablation: every arm's config is a valid mtdnn config, and the report's deltas are paired by seed."""

import pytest
import yaml

from conftest import GLUE_DIR, needs_glue
from mtdnn.config import Config, build_settings
from mtdnn.sources import load_split
from mtdnn.tasks import resolve_tasks
from scripts import ablation, ablation_report, jobs
from scripts import ablation_plan as plan
from scripts.results import ResultStore


@pytest.mark.parametrize("arm", list(plan.ARMS))
def test_every_arm_is_a_valid_config_that_differs_from_the_baseline_only_by_its_mechanism(arm, tmp_path):
    entries = {name: {"name": name} for name in plan.TASKS}
    entries[plan.RANKING_TASK] = {"name": plan.RANKING_TASK}
    values = ablation.arm_config(arm, 3, plan.FULL, entries, tmp_path)
    config = build_settings(Config, values)
    baseline = build_settings(Config, ablation.arm_config("baseline", 3, plan.FULL, entries, tmp_path))
    assert config.train.seed == 3 and config.data == baseline.data
    assert (config == baseline) == (arm in ("baseline", "distillation"))  # distill: `mtdnn distill` turns it on
    if arm == "san":
        assert [entry.get("answer_module") for entry in values["tasks"]] == ["san", "san", None, None, None]
    names = [entry["name"] for entry in values["tasks"]]
    assert names[len(plan.TASKS):] == ([plan.RANKING_TASK] if arm == "ranking" else [])


@needs_glue("QNLI/dev.tsv")
def test_ranking_arm_splits_qnli_dev_questions_into_a_generic_ranking_task(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(GLUE_DIR))
    entry = ablation.ranking_entry(tmp_path, 700)
    task = resolve_tasks([entry])[plan.RANKING_TASK]
    train, dev = (load_split(task, split, None) for split in ("train", "dev"))
    assert len(train["idx"]) == 700 and len(dev["idx"]) == 1362 - 700
    assert not set(train["text_a"]) & set(dev["text_a"])  # no question in both
    assert all(0 <= label < len(candidates) and len(candidates) >= 2
               for label, candidates in zip(dev["label"], dev["candidates"]))


def test_report_pairs_deltas_by_seed(tmp_path):
    store = ResultStore(tmp_path)
    for arm, seed, rte in (("baseline", 1, 0.5), ("baseline", 2, 0.6), ("smart", 1, 0.55), ("smart", 2, 0.75)):
        metrics = {"rte": {"accuracy": rte}, "mrpc": {"accuracy": 0.7, "f1": 0.8}, "stsb": {"pearson": 0.1,
                   "spearmanr": 0.1}, "cola": {"matthews_correlation": 0.0}, "sst2": {"accuracy": 0.8}}
        store.save({"arm": arm, "seed": seed, "metrics": metrics, "reload_reproduces_metrics": True, "updates": 95,
                    "seconds": 60.0}, arm, f"seed-{seed}")
    text = ablation_report.report(plan.FULL, store, [1, 2], "python -m scripts.ablation")
    smart, per_task = [line.split(" | ") for line in text.splitlines() if line.startswith("| smart |")]
    assert smart[3] == "65.0 ± 14.1" and smart[-3:-1] == ["95", "ok"]  # rte: 55 and 75
    assert smart[8] == "+2.0 ± 1.4"  # the 5-task average: rte deltas +5 and +15 (paired by seed), over 5 tasks
    assert per_task[2] == "+10.0 ± 7.1" and per_task[1] == "+0.0 ± 0.0"
    assert "not run here" in text  # no ranking arm among the results
    assert "at least twice their std: none." in text  # rte +5, +15: the same sign, but 10 < 2 x 7.1


def test_consistent_deltas_need_the_same_sign_on_every_seed_and_twice_their_std():
    def runs(*rte):
        return {seed: {"metrics": {"rte": {"accuracy": value}}} for seed, value in enumerate(rte, 1)}

    baseline = runs(0.50, 0.50, 0.50)
    assert ablation_report.consistent(runs(0.53, 0.52, 0.54), baseline, "rte") == pytest.approx(0.03)
    assert ablation_report.consistent(runs(0.45, 0.47, 0.46), baseline, "rte") == pytest.approx(-0.04)
    assert ablation_report.consistent(runs(0.56, 0.49, 0.57), baseline, "rte") is None  # one seed the other way
    assert ablation_report.consistent(runs(0.51, 0.60, 0.51), baseline, "rte") is None  # mean 4 < 2 x std 5.2
    assert ablation_report.consistent(runs(0.505, 0.505, 0.506), baseline, "rte") is None  # under 1 point
    assert ablation_report.consistent(runs(0.60), baseline, "rte") is None  # one seed: no std


def test_report_gives_the_ranking_arms_own_task_against_chance(tmp_path):
    store = ResultStore(tmp_path)
    for arm, extra in (("baseline", {}), ("ranking", {plan.RANKING_TASK: {"accuracy": 0.764}})):
        metrics = {"rte": {"accuracy": 0.5}, "mrpc": {"accuracy": 0.7, "f1": 0.8}, "stsb": {"pearson": 0.1,
                   "spearmanr": 0.1}, "cola": {"matthews_correlation": 0.0}, "sst2": {"accuracy": 0.8}, **extra}
        store.save({"arm": arm, "seed": 1, "metrics": metrics, "reload_reproduces_metrics": True, "updates": 95,
                    "seconds": 60.0, **({"ranking_chance": 0.4, "ranking_questions": 662, "ranking_train_questions": 700}
                       if extra else {})},
                   arm, "seed-1")
    text = ablation_report.report(plan.FULL, store, [1], "python -m scripts.ablation")
    assert "700 training questions and 662 scored ones" in text
    assert "Accuracy (the positive ranked first): 76.4, where ranking at random scores 40.0" in text


def test_a_tiny_ablation_runs_side_by_side_distils_from_its_teachers_and_a_rerun_skips_it(tiny_model_dir, task_files,
                                                                                         tmp_path, monkeypatch):
    tiny_plan = plan.AblationPlan(name="test", epochs=1, batch_size=16, learning_rate=1e-3, max_seq_length=32,
                                  model=str(tiny_model_dir), tasks=(task_files["pair"], task_files["score"]))
    arms = ["baseline", "san", "temperature", "continual", "distillation"]
    store = ablation.run_all(tiny_plan, [1], arms, tmp_path, workers=2)  # two spawned processes, one thread each
    rows = {row["arm"]: row for row in store.rows()}
    assert set(rows) == set(arms) and all(row["reload_reproduces_metrics"] for row in rows.values())
    assert all(set(row["metrics"]) == {"pair", "score"} and row["side_by_side"] == 2 for row in rows.values())
    assert not list(tmp_path.rglob("model.safetensors"))  # the teachers' checkpoints went after distillation
    config = {arm: yaml.safe_load((tmp_path / "configs" / f"{arm}-seed1.yaml").read_text()) for arm in arms}
    assert [task.get("answer_module") for task in config["san"]["tasks"]] == ["san", None]  # the pair task only
    assert config["continual"]["train"]["sampling"]["stages"] == [["score"], ["pair"]]
    assert (tmp_path / "runs" / "distillation-seed1" / "metrics.jsonl").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError(f"a finished arm was run again: {args}")

    monkeypatch.setattr(jobs, "run_stage", no_training)
    monkeypatch.setattr(ablation, "evaluate_command", no_training)
    assert ablation.run_all(tiny_plan, [1], arms, tmp_path).rows() == store.rows()
    text = ablation_report.report(tiny_plan, store, [1], "python -m scripts.ablation")
    assert "| san | SAN answer module (K=5) on the pair classification tasks (pair) |" in text
    assert "ERNIE 2.0 continual stages: score → +pair" in text
