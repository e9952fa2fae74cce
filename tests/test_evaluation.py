"""Evaluation and prediction on the accelerator's device, with a progress bar, and complete test predictions."""

import csv
import shutil
import sys

import pytest
import torch
from accelerate import PartialState

from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.evaluation import inference_device
from conftest import make_checkpoint


@pytest.fixture
def fake_gpu(monkeypatch):
    """A machine that says it has one CUDA GPU, as accelerate sees it (its device is chosen afresh)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    PartialState._reset_state()
    yield
    PartialState._reset_state()


def test_the_default_device_is_accelerates_choice(fake_gpu):
    assert inference_device() == torch.device("cuda")
    assert inference_device("cpu") == torch.device("cpu")


def test_a_device_that_is_not_there_is_a_clear_error():
    PartialState._reset_state()
    assert inference_device() == torch.device("cpu")  # no GPU on this machine
    with pytest.raises(MTDNNError, match="no CUDA GPU is available"):
        inference_device("cuda")
    with pytest.raises(MTDNNError, match="is not a device"):
        inference_device("gpu0")
    with pytest.raises(MTDNNError, match="no mps device is available"):
        inference_device("mps")


def test_evaluate_and_predict_run_on_the_accelerator_by_default(fake_gpu, tiny_checkpoint, tmp_path):
    """With a GPU, both move the model there (on this CPU-only build, moving it is what fails)."""
    for command in (["evaluate", str(tiny_checkpoint), "--tasks", "single"],
                    ["predict", str(tiny_checkpoint), "--tasks", "single", "--output-dir", str(tmp_path)]):
        with pytest.raises((AssertionError, RuntimeError), match="(?i)cuda"):
            main(["--debug", *command])
        assert main([*command, "--device", "cpu"]) == 0


def test_evaluate_shows_a_progress_bar_and_gives_the_same_metrics_on_any_device_choice(tiny_checkpoint, capsys,
                                                                                     monkeypatch):
    PartialState._reset_state()
    assert main(["evaluate", str(tiny_checkpoint), "--tasks", "single,score"]) == 0
    default = capsys.readouterr()
    assert "batch" not in default.err  # stderr is no terminal here (a log file, a pipe): no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["evaluate", str(tiny_checkpoint), "--tasks", "single,score", "--device", "cpu"]) == 0
    on_a_terminal = capsys.readouterr()
    assert on_a_terminal.out == default.out
    assert "single dev" in on_a_terminal.err and "batch" in on_a_terminal.err  # tqdm's bar over each task's batches


@pytest.fixture
def capped_checkpoint(tiny_model_dir, task_files, tmp_path):
    """A checkpoint whose config caps dev/test sets at 3 examples; its task has a 24-example test split."""
    files = task_files["single"]["data_files"]
    task = {**task_files["single"], "data_files": {**files, "test": files["dev"]}}
    return make_checkpoint(tmp_path / "run", tiny_model_dir, [task], data={"max_eval_samples": 3})


def rows(path) -> int:
    with open(path, newline="") as handle:
        return len(list(csv.reader(handle, delimiter="\t"))) - 1


def test_test_predictions_are_complete_unless_asked_for_fewer(capped_checkpoint, tmp_path):
    out = tmp_path / "predictions"
    assert main(["predict", str(capped_checkpoint), "--split", "test", "--output-dir", str(out)]) == 0
    assert rows(out / "single.tsv") == 24  # data.max_eval_samples (3) does not cut predictions short
    shutil.rmtree(out)
    assert main(["predict", str(capped_checkpoint), "--split", "test", "--output-dir", str(out),
                 "--max-samples", "5"]) == 0
    assert rows(out / "single.tsv") == 5


def test_evaluate_follows_the_checkpoints_cap_unless_told(capped_checkpoint, capsys):
    import json

    assert main(["evaluate", str(capped_checkpoint)]) == 0
    capped = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(capped_checkpoint), "--max-samples", "24"]) == 0
    assert json.loads(capsys.readouterr().out) != capped
    with pytest.raises(SystemExit):
        main(["evaluate", str(capped_checkpoint), "--max-samples", "0"])
