"""Task sampling: MT-DNN's epoch schedule (every batch of every task once per epoch, shuffled, reproducible) and
the toolbox's strategies, each a pure function of (seed, epoch) with the task mix its formula says."""

import math

import numpy as np
import pytest

from mtdnn.config import SamplingSettings
from mtdnn.errors import MTDNNError
from mtdnn.sampling import (ContinualSchedule, MainTaskSchedule, MultiTaskSchedule, SampledSchedule, build_schedule,
                            temperature_probabilities)


def _schedule(seed=1):
    rng = np.random.default_rng(0)
    lengths = {"a": rng.integers(3, 60, 101), "b": rng.integers(3, 60, 40), "c": rng.integers(3, 60, 7)}
    return MultiTaskSchedule(lengths, batch_size=8, seed=seed), lengths


def test_every_example_of_every_task_once_per_epoch():
    schedule, lengths = _schedule()
    steps = schedule.epoch(0)
    assert len(steps) == schedule.batches_per_epoch() == 13 + 5 + 1
    for name, task_lengths in lengths.items():
        seen = np.concatenate([batch for task, batch in steps if task == name])
        assert sorted(seen.tolist()) == list(range(len(task_lengths)))
    assert all(len(batch) <= 8 for _, batch in steps)


def test_tasks_are_interleaved_and_batches_bucketed_by_length():
    schedule, lengths = _schedule()
    tasks = [task for task, _ in schedule.epoch(0)]
    assert tasks != sorted(tasks)  # shuffled across tasks, not task after task
    spreads = [np.ptp(lengths[t][b]) for t, b in schedule.epoch(0) if len(b) == 8]
    random_spread = np.mean([np.ptp(lengths["a"][np.random.default_rng(i).permutation(101)[:8]]) for i in range(50)])
    assert np.mean(spreads) < random_spread / 2


def test_reproducible_by_seed_and_epoch():
    first, _ = _schedule(seed=1)
    again, _ = _schedule(seed=1)
    other, _ = _schedule(seed=2)
    as_lists = lambda steps: [(t, b.tolist()) for t, b in steps]  # noqa: E731
    assert as_lists(first.epoch(3)) == as_lists(again.epoch(3))
    assert as_lists(first.epoch(3)) != as_lists(first.epoch(4))
    assert as_lists(first.epoch(3)) != as_lists(other.epoch(3))

SIZES = {"big": 2000, "mid": 500, "small": 50}


def _lengths(sizes=SIZES):
    rng = np.random.default_rng(0)
    return {name: rng.integers(3, 60, size) for name, size in sizes.items()}


def _frequencies(schedule, epochs):
    tasks = [task for epoch in range(epochs) for task, _ in schedule.epoch(epoch)]
    return np.array([tasks.count(name) / len(tasks) for name in SIZES])


def test_temperature_sampler_frequencies_match_p():
    schedule = SampledSchedule(_lengths(), batch_size=10, seed=3, temperature=2.0)
    expected = np.sqrt([2000, 500, 50]) / np.sqrt([2000, 500, 50]).sum()
    np.testing.assert_allclose(schedule.probabilities(0.0), expected)
    assert len(schedule.epoch(0)) == 200 + 50 + 5  # an epoch is as long as MT-DNN's
    np.testing.assert_allclose(_frequencies(schedule, 20), expected, atol=0.02)


def test_uniform_and_proportional_limits():
    uniform = SampledSchedule(_lengths(), batch_size=10, seed=3, temperature=math.inf)
    np.testing.assert_allclose(_frequencies(uniform, 20), [1 / 3] * 3, atol=0.02)
    np.testing.assert_allclose(temperature_probabilities(SIZES, 1.0), np.array([2000, 500, 50]) / 2550)


def test_annealed_temperature_moves_from_proportional_to_the_final_temperature():
    schedule = SampledSchedule(_lengths(), batch_size=10, seed=3, temperature=1.0, final_temperature=5.0,
                               total_batches=255 * 20)
    np.testing.assert_allclose(schedule.probabilities(0.0), temperature_probabilities(SIZES, 1.0))
    np.testing.assert_allclose(schedule.probabilities(1.0), temperature_probabilities(SIZES, 5.0))
    first, last = _frequencies(schedule, 1), [task for task, _ in schedule.epoch(19)]
    last = np.array([last.count(name) / len(last) for name in SIZES])
    assert first[2] < 0.05 and last[2] > 0.1  # the small task is drawn more and more often
    np.testing.assert_allclose(last, schedule.probabilities(19.5 / 20), atol=0.05)


def test_sampled_batches_cycle_through_each_task_without_repeats_within_a_pass():
    steps = SampledSchedule(_lengths(), batch_size=10, seed=3, temperature=math.inf).epoch(0)
    small = np.concatenate([batch for task, batch in steps if task == "small"])
    first_pass = small[:50]
    assert sorted(first_pass.tolist()) == list(range(50))  # ~85 draws of a 5-batch task: whole passes


def test_main_task_ratio_keeps_every_main_batch_and_caps_the_others():
    lengths = _lengths({"big": 2000, "mid": 500, "small": 50})
    schedule = MainTaskSchedule(lengths, batch_size=10, seed=3, main_task="mid", ratio=0.4)
    steps = schedule.epoch(0)
    main = [batch for task, batch in steps if task == "mid"]
    assert sorted(np.concatenate(main).tolist()) == list(range(500))
    others = [(task, tuple(batch)) for task, batch in steps if task != "mid"]
    assert len(others) == int(0.4 * 50) == schedule.batches_per_epoch() - 50
    assert len(set(others)) == len(others)  # drawn without replacement
    assert {task for task, _ in others} == {"big", "small"}
    assert MainTaskSchedule(lengths, 10, 3, "mid", ratio=100.0).batches_per_epoch() == 50 + 200 + 5


def test_continual_stages_add_tasks_and_keep_each_tasks_total():
    lengths = _lengths({"big": 200, "mid": 90, "small": 30})
    schedule = ContinualSchedule(lengths, batch_size=10, seed=3, stages=[["big"], ["mid"], ["small"]], epochs=2)
    per_stage = [schedule.batches_in_stage(stage) for stage in range(3)]
    assert [set(counts) for counts in per_stage] == [{"big"}, {"big", "mid"}, {"big", "mid", "small"}]
    totals = {name: sum(counts.get(name, 0) for counts in per_stage) for name in lengths}
    assert totals == {"big": 2 * 20, "mid": 2 * 9, "small": 2 * 3}  # fixed, whatever the stages
    assert per_stage[0]["big"] - per_stage[2]["big"] <= 1 and per_stage[1]["mid"] == 9  # spread evenly
    for stage in range(3):
        tasks = [task for task, _ in schedule.epoch(stage)]
        assert {name: tasks.count(name) for name in set(tasks)} == per_stage[stage]
    assert schedule.batches_in_stage(3) == {}


@pytest.mark.parametrize("settings", [
    SamplingSettings(), SamplingSettings(strategy="uniform"), SamplingSettings(strategy="temperature"),
    SamplingSettings(strategy="annealed_temperature", temperature=3.0),
    SamplingSettings(strategy="main_task_ratio", main_task="mid", ratio=0.5),
    SamplingSettings(strategy="continual", stages=[["small"], ["big", "mid"]]),
])
def test_every_strategy_is_a_pure_function_of_seed_and_epoch(settings):
    as_lists = lambda steps: [(t, b.tolist()) for t, b in steps]  # noqa: E731
    first, epochs, total = build_schedule(settings, _lengths(), 10, 7, epochs=2, max_steps=None, accumulation=1)
    again, _, _ = build_schedule(settings, _lengths(), 10, 7, epochs=2, max_steps=None, accumulation=1)
    other, _, _ = build_schedule(settings, _lengths(), 10, 8, epochs=2, max_steps=None, accumulation=1)
    assert as_lists(first.epoch(1)) == as_lists(again.epoch(1))
    assert as_lists(first.epoch(0)) != as_lists(first.epoch(1))
    assert as_lists(first.epoch(1)) != as_lists(other.epoch(1))
    assert total == sum(len(first.epoch(epoch)) for epoch in range(epochs))


def test_proportional_plan_is_mt_dnns():
    schedule, epochs, total = build_schedule(SamplingSettings(), _lengths(), 10, 7, 3, None, 2)
    assert isinstance(schedule, MultiTaskSchedule) and (epochs, total) == (3, 3 * (255 // 2))
    assert build_schedule(SamplingSettings(), _lengths(), 10, 7, 3, 300, 1)[1:] == (2, 300)


def test_sampling_settings_name_unknown_tasks():
    with pytest.raises(MTDNNError, match="main_task.*`nope`"):
        build_schedule(SamplingSettings(strategy="main_task_ratio", main_task="nope"), _lengths(), 10, 7, 1, None, 1)
    with pytest.raises(MTDNNError, match="missing: mid"):
        build_schedule(SamplingSettings(strategy="continual", stages=[["big", "small"]]), _lengths(), 10, 7, 1, None, 1)
    with pytest.raises(MTDNNError, match="needs train.sampling.main_task"):
        SamplingSettings(strategy="main_task_ratio")
