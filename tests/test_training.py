"""The training loop's guarantees: exact resume after SIGKILL, clean SIGTERM, atomic checkpoints,
rotation, and a clear stop on a non-finite loss."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_train_config
from mtdnn.cli import main
from mtdnn.config import load_config
from mtdnn.errors import MTDNNError
from mtdnn.losses import LOSSES
from mtdnn.model import MTDNNModel
from mtdnn.training import train

# Runs `mtdnn train` in a child process that kills itself at a chosen moment.
KILLER = """
import os, signal, sys
import mtdnn.checkpoint as checkpoint, mtdnn.run_loop as run_loop
moment, number = sys.argv[1], int(sys.argv[2])
sig = signal.SIGTERM if moment == "sigterm_at_step" else signal.SIGKILL
original_write, original_save = run_loop.RunLog.write, checkpoint.save_config
def write(self, row):
    original_write(self, row)
    if moment in ("after_log", "sigterm_at_step") and row.get("type") == "train" and row["step"] == number:
        os.kill(os.getpid(), sig)
def save_config(config, path):
    original_save(config, path)
    if moment == "during_save" and path.parent.name == f".step-{number}.saving":
        os.kill(os.getpid(), signal.SIGKILL)
run_loop.RunLog.write, checkpoint.save_config = write, save_config
from mtdnn.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def config_path(tiny_model_dir, task_files, tmp_path_factory):
    return write_train_config(tmp_path_factory.mktemp("config"), tiny_model_dir,
                              [task_files["single"], task_files["score"]], epochs=2, learning_rate=1e-3,
                              log_every_steps=2, save_every_steps=3, keep_checkpoints=2)


@pytest.fixture(scope="module")
def uninterrupted(config_path, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    assert main(["train", str(config_path), "--set", f"output_dir={output_dir}", "--overwrite"]) == 0
    return output_dir


def _rows(output_dir):
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("examples_per_second", None)  # wall-clock speed is the one thing allowed to differ
    return rows


@pytest.mark.parametrize("moment, number, exit_code", [
    ("after_log", 10, -signal.SIGKILL),  # killed mid-epoch, rows logged after the newest checkpoint
    ("during_save", 9, -signal.SIGKILL),  # killed while a checkpoint is half written
    ("sigterm_at_step", 6, 128 + signal.SIGTERM),  # asked to stop: finishes the step, saves, exits
])
def test_killed_run_resumes_to_identical_weights_and_metrics(config_path, uninterrupted, tmp_path, moment, number,
                                                             exit_code):
    output_dir = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", KILLER, moment, str(number), "train", str(config_path),
                            "--set", f"output_dir={output_dir}"], capture_output=True, text=True)
    assert child.returncode == exit_code, child.stderr[-2000:]
    assert not (output_dir / "best").exists() or MTDNNModel.from_pretrained(output_dir / "best")
    MTDNNModel.from_pretrained(output_dir / "last")  # whatever the moment, `last` is a whole checkpoint
    if moment == "sigterm_at_step":
        assert "continue with --resume" in child.stderr
        assert os.readlink(output_dir / "last") == "checkpoints/step-6"
    assert main(["train", str(config_path), "--set", f"output_dir={output_dir}", "--resume"]) == 0
    expected, resumed = load_file(uninterrupted / "last" / "model.safetensors"), load_file(output_dir / "last" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name  # bitwise: same data order, RNG and optimizer
    assert _rows(output_dir) == _rows(uninterrupted)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(config_path, uninterrupted, tmp_path):
    output_dir = tmp_path / "run"  # killed at step 2, checkpoints every 3: metrics rows but nothing to resume from
    child = subprocess.run([sys.executable, "-c", KILLER, "after_log", "2", "train", str(config_path),
                            "--set", f"output_dir={output_dir}"], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert (output_dir / "metrics.jsonl").exists() and not (output_dir / "checkpoints").exists()
    assert main(["train", str(config_path), "--set", f"output_dir={output_dir}", "--resume"]) == 0
    assert _rows(output_dir) == _rows(uninterrupted)  # the dead run's rows are not kept twice


def test_sigterm_at_the_last_step_lets_the_run_finish(config_path, uninterrupted, tmp_path):
    output_dir = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", KILLER, "sigterm_at_step", "32", "train", str(config_path),
                            "--set", f"output_dir={output_dir}", "--set", "train.log_every_steps=1"],
                           capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-2000:]  # nothing left to stop: final evaluation, best/, exit 0
    assert json.loads((output_dir / "last" / "trainer_state.json").read_text())["dev_metrics"]
    assert [row for row in _rows(output_dir) if row["type"] == "eval"] == \
        [row for row in _rows(uninterrupted) if row["type"] == "eval"]


def test_resume_from_an_epoch_end_is_exact_with_gradient_accumulation(config_path, tmp_path):
    """16 batches an epoch, windows of 3: an epoch-end checkpoint must not leave a window's gradients behind."""
    sets = ["--set", "train.gradient_accumulation_steps=3", "--set", "train.save_every_steps=null",
            "--set", "train.log_every_steps=1"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert main(["train", str(config_path), *sets, "--set", f"output_dir={whole}"]) == 0
    child = subprocess.run([sys.executable, "-c", KILLER, "after_log", "7", "train", str(config_path), *sets,
                            "--set", f"output_dir={run}"], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert os.readlink(run / "last") == "checkpoints/step-5"  # 5 updates an epoch: resumed from the epoch's end
    assert main(["train", str(config_path), *sets, "--set", f"output_dir={run}", "--resume"]) == 0
    expected, resumed = (load_file(path / "last" / "model.safetensors") for path in (whole, run))
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert _rows(run) == _rows(whole)


def test_checkpoints_rotate_and_best_survives(uninterrupted):
    steps = sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())
    assert steps == ["step-30", "step-32"]  # keep_checkpoints: 2; 32 updates in all
    assert os.readlink(uninterrupted / "last") == "checkpoints/step-32"
    best = json.loads((uninterrupted / "best" / "trainer_state.json").read_text())
    evals = [row for row in _rows(uninterrupted) if row["type"] == "eval"]
    assert best["dev_score"] == max(row["score"] for row in evals)
    assert not (uninterrupted / "best" / "training_state.pt").exists()
    MTDNNModel.from_pretrained(uninterrupted / "best")


def test_non_finite_loss_stops_with_task_and_step(config_path, tmp_path, monkeypatch):
    monkeypatch.setitem(LOSSES, "regression", lambda logits, labels: logits.sum() * float("nan"))
    config = load_config(config_path, [f"output_dir={tmp_path}"])
    with pytest.raises(MTDNNError, match=r"loss of task `score` is nan at step \d+"):
        train(config)
    config = load_config(config_path, [f"output_dir={tmp_path / 'skip'}", "train.skip_nonfinite_batches=true"])
    train(config)
    weights = load_file(tmp_path / "skip" / "last" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_early_stopping_ends_the_run_at_its_last_evaluation_and_resume_keeps_it_ended(config_path, tmp_path,
                                                                                       capsys):
    """A learning rate too small to change a dev score: the first evaluation is the best, the next two are no
    better, and patience 2 ends the run there (of 32 updates), with that evaluation's checkpoint as `last`."""
    out = tmp_path / "out"
    settings = ["--set", f"output_dir={out}", "--set", "train.learning_rate=1e-12", "--set", "train.eval_every_steps=2",
                "--set", "train.early_stopping_patience=2"]
    assert main(["train", str(config_path), *settings]) == 0
    rows = _rows(out)
    assert [row["step"] for row in rows if row["type"] == "eval"] == [2, 4, 6]
    assert rows[-1] == {"type": "early_stop", "epoch": 0, "step": 6, "best_score": rows[-2]["score"], "patience": 2}
    assert os.readlink(out / "last") == "checkpoints/step-6"
    assert json.loads((out / "best" / "trainer_state.json").read_text())["step"] == 2
    capsys.readouterr()
    assert main(["train", str(config_path), *settings, "--resume"]) == 0  # nothing left to do
    assert json.loads(capsys.readouterr().out)["step"] == 6 and _rows(out) == rows
    with pytest.raises(MTDNNError, match="early_stopping_patience must be at least 1"):
        load_config(config_path, ["train.early_stopping_patience=0"])
