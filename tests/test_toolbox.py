"""The multi-task toolbox end to end through the CLI: every mechanism at once trains, evaluates, reloads and
resumes bitwise after SIGKILL; the continual schedule evaluates after each stage; real GLUE data."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import needs_glue
from mtdnn.cli import main
from mtdnn.heads import SANHead
from mtdnn.model import MTDNNModel
from mtdnn.task_embeddings import table_of
from test_training import KILLER, _rows


def _write(path, config):
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def toolbox_config(tiny_model_dir, task_files, tmp_path_factory):
    pair = {**task_files["pair"], "answer_module": "san", "san_steps": 3}
    config = {"model": {"name_or_path": str(tiny_model_dir), "task_embeddings": True, "sharing": "soft",
                        "encoder_groups": [["single", "pair"]], "sharing_weight": 1e-2},
              "tasks": [task_files["single"], pair, task_files["score"]],  # ranking + SMART: test_adversarial
              "data": {"max_seq_length": 32, "max_train_samples": 16, "max_eval_samples": 8},
              "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "log_every_steps": 2,
                        "save_every_steps": 3, "sampling": {"strategy": "temperature", "temperature": 3.0},
                        "adversarial": {"weight": 1.0, "epsilon": 1e-2, "step_size": 1e-2}}}
    return _write(tmp_path_factory.mktemp("toolbox") / "config.yaml", config)


def test_all_mechanisms_train_evaluate_reload_and_resume_exactly(toolbox_config, tmp_path, capsys):
    uninterrupted = tmp_path / "uninterrupted"
    assert main(["train", str(toolbox_config), "--set", f"output_dir={uninterrupted}"]) == 0
    model = MTDNNModel.from_pretrained(uninterrupted / "last")
    assert isinstance(model.heads["pair"], SANHead)
    assert model.encoder_groups == [["single", "pair"], ["score"]]
    assert set(table_of(model.encoder_for("score")).vectors) == {"single", "pair", "score"}
    assert not torch.equal(model.encoder_for("score").embeddings.word_embeddings.weight,
                           model.encoder.embeddings.word_embeddings.weight)  # soft sharing: encoders differ
    capsys.readouterr()
    assert main(["evaluate", str(uninterrupted / "last")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    logged = _rows(uninterrupted)[-1]["metrics"]
    for task, metrics in evaluated.items():
        for name, value in metrics.items():
            assert value == pytest.approx(logged[task][name], abs=1e-6), (task, name)

    resumed = tmp_path / "resumed"
    child = subprocess.run([sys.executable, "-c", KILLER, "after_log", "10", "train", str(toolbox_config),
                            "--set", f"output_dir={resumed}"], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    assert main(["train", str(toolbox_config), "--set", f"output_dir={resumed}", "--resume"]) == 0
    expected = load_file(uninterrupted / "last" / "model.safetensors")
    actual = load_file(resumed / "last" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:  # SAN step dropout, SMART noise and the sampled schedule all replay exactly
        assert torch.equal(expected[name], actual[name]), name
    assert _rows(resumed) == _rows(uninterrupted)


def test_continual_schedule_runs_stage_by_stage(tiny_model_dir, task_files, tmp_path):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"], task_files["score"]],
              "data": {"max_seq_length": 32, "max_train_samples": 32},
              "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "log_every_steps": 1,
                        "sampling": {"strategy": "continual", "stages": [["score"], ["single"]]}}}
    out = tmp_path / "out"
    assert main(["train", str(_write(tmp_path / "config.yaml", config)), "--set", f"output_dir={out}"]) == 0
    rows = _rows(out)
    evals = [row for row in rows if row["type"] == "eval"]
    assert [row["epoch"] for row in evals] == [1, 2]  # one evaluation after each stage
    first_stage = [row["task"] for row in rows if row["type"] == "train" and row["step"] <= evals[0]["step"]]
    assert set(first_stage) == {"score"}
    assert evals[0]["step"] == 4 and evals[-1]["step"] == 4 + (4 + 8)  # score: 8 batches over 2 stages; single: 8 in 1


@needs_glue("RTE/train.tsv", "RTE/dev.tsv", "STS-B/train.tsv", "STS-B/dev.tsv", "CoLA/train.tsv", "CoLA/dev.tsv")
def test_toolbox_on_real_glue_data(tiny_model_dir, tmp_path, capsys):
    config = {"model": {"name_or_path": str(tiny_model_dir), "task_embeddings": True, "sharing": "soft"},
              "tasks": [{"name": "rte", "answer_module": "san"}, "stsb", "cola"],
              "data": {"max_seq_length": 48, "max_train_samples": 24, "max_eval_samples": 24},
              "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
                        "sampling": {"strategy": "main_task_ratio", "main_task": "rte", "ratio": 1.0},
                        "adversarial": {"weight": 1.0}}}
    out = tmp_path / "out"
    assert main(["train", str(_write(tmp_path / "config.yaml", config)), "--set", f"output_dir={out}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 3 + 3 and set(printed["dev_metrics"]) == {"rte", "stsb", "cola"}
    assert main(["predict", str(out / "best"), "--split", "test", "--tasks", "rte", "--max-samples", "24",
                 "--output-dir", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "rte.tsv").read_text().count("\n") == 24 + 1
