"""Experiment tracking through accelerate's trackers: TensorBoard event files hold metrics.jsonl's rows."""

from __future__ import annotations

import json

import pytest
import yaml

from mtdnn.cli import main
from mtdnn.tracking import tracker_values

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the TensorBoard run in `log_dir`, read with TensorBoard's own reader."""
    reader = event_accumulator.EventAccumulator(str(log_dir))
    reader.Reload()
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def test_train_writes_metrics_jsonl_rows_to_tensorboard(tiny_model_dir, task_files, tmp_path, capsys):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"], task_files["score"]],
              "data": {"max_seq_length": 32},
              "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "log_every_steps": 2,
                        "report_to": ["tensorboard"]},
              "output_dir": str(tmp_path / "out")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(tmp_path / "out" / "logs" / "mtdnn")
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for tag, value in tracker_values(row).items():
            expected.setdefault(tag, []).append((row["step"], value))
    assert {"train/loss", "train/learning_rate", "train/examples_per_second", "dev/score", "dev/single/accuracy",
            "dev/score/pearson"} <= expected.keys()
    assert scalars.keys() == expected.keys()
    for tag, series in expected.items():  # every row, at its step, with its value (TensorBoard keeps float32)
        assert [step for step, _ in scalars[tag]] == [step for step, _ in series], tag
        assert [value for _, value in scalars[tag]] == pytest.approx([value for _, value in series], rel=1e-6), tag
    assert len([row for row in rows if row["type"] == "eval"]) == 2 == len(scalars["dev/score"])


def test_pretrain_reports_held_out_loss(tiny_model_dir, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"the good movie {word} was fun\n" for word in ("a", "dog", "cat", "plot") * 20))
    config = {"model": {"name_or_path": str(tiny_model_dir)},
              "data": {"text_files": [str(text)], "max_seq_length": 16, "eval_lines": 16},
              "train": {"max_steps": 4, "batch_size": 16, "log_every_steps": 1, "report_to": ["tensorboard"]},
              "output_dir": str(tmp_path / "out")}
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["pretrain", str(path)]) == 0
    scalars = _scalars(tmp_path / "out" / "logs" / "mtdnn")
    assert [step for step, _ in scalars["held_out/loss"]] == [0, 4]  # before and after
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4]


def test_unknown_or_missing_trackers_are_clear_errors(tiny_model_dir, task_files, tmp_path, capsys):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"]],
              "output_dir": str(tmp_path / "out")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--set", "train.report_to=[tensorbord]"]) == 2
    err = capsys.readouterr().err
    assert "`train.report_to` lists 'tensorbord', which is not a tracker accelerate supports" in err
    assert "Traceback" not in err
    pytest.importorskip("accelerate.tracking")
    from accelerate.utils import is_wandb_available

    if is_wandb_available():
        pytest.skip("wandb is installed here")
    assert main(["train", str(path), "--set", "train.report_to=[wandb]"]) == 2
    err = capsys.readouterr().err
    assert "`pip install wandb`" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before the run directory is touched
