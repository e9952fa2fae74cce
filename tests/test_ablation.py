"""scripts/ablation.py: every arm's config is a valid mtdnn config, and the report's deltas are paired by seed."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import ablation  # noqa: E402
import experiment  # noqa: E402
from mtdnn.config import Config, build_settings  # noqa: E402


@pytest.mark.parametrize("arm", list(ablation.ARMS))
def test_every_arm_is_a_valid_config_that_differs_from_the_baseline_only_by_its_mechanism(arm, tmp_path):
    entries = {name: {"name": name} for name in ablation.TASKS}
    values = ablation.arm_config(arm, 3, entries, tmp_path)
    config = build_settings(Config, values)
    baseline = build_settings(Config, ablation.arm_config("baseline", 3, entries, tmp_path))
    assert config.train.seed == 3 and config.data == baseline.data
    assert (config == baseline) == (arm in ("baseline", "distillation"))  # distill: `mtdnn distill` turns it on
    if arm == "san":
        assert [entry.get("answer_module") for entry in values["tasks"]] == ["san", "san", None, None]


def test_report_pairs_deltas_by_seed(tmp_path):
    store = experiment.ResultStore(tmp_path)
    for arm, seed, rte in (("baseline", 1, 0.5), ("baseline", 2, 0.6), ("smart", 1, 0.55), ("smart", 2, 0.75)):
        metrics = {"rte": {"accuracy": rte}, "mrpc": {"accuracy": 0.7, "f1": 0.8}, "stsb": {"pearson": 0.1,
                   "spearmanr": 0.1}, "cola": {"matthews_correlation": 0.0}}
        store.save({"arm": arm, "seed": seed, "metrics": metrics, "reload_reproduces_metrics": True, "updates": 95,
                    "seconds": 60.0}, arm, f"seed-{seed}")
    text = ablation.report(store, [1, 2], "python scripts/ablation.py")
    smart, per_task = [line.split(" | ") for line in text.splitlines() if line.startswith("| smart |")]
    assert smart[2] == "65.0 ± 14.1" and smart[-3:-1] == ["95/95", "ok"]  # rte: 55 and 75
    assert smart[7] == "+2.5 ± 1.8"  # the 4-task average: rte deltas +5 and +15 (paired by seed), over 4 tasks
    assert per_task[1] == "+10.0 ± 7.1" and per_task[2] == "+0.0 ± 0.0"
