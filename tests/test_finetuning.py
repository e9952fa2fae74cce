"""Stage 3: a one-task model from a multi-task checkpoint, trained by the same loop as stage 2."""

import json

import pytest
import torch
import yaml
from transformers import BertModel

import mtdnn.finetuning as finetuning
from conftest import tiny_bert_config
from mtdnn.checkpoint import load_checkpoint
from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.model import MTDNNModel
from mtdnn.tasks import TaskSpec


@pytest.fixture(scope="module")
def stage2(tiny_model_dir, task_files, tmp_path_factory):
    """A short multi-task run on a classification and a regression task: its `best/` checkpoint."""
    directory = tmp_path_factory.mktemp("stage2")
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"], task_files["score"]],
              "data": {"max_seq_length": 32}, "output_dir": str(directory / "run"),
              "train": {"epochs": 1, "max_steps": 4, "batch_size": 16, "learning_rate": 1e-3}}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(directory / "config.yaml")]) == 0
    return directory / "run" / "best"


def test_finetune_starts_from_the_checkpoint_encoder_and_head(stage2, monkeypatch):
    captured = {}
    monkeypatch.setattr(finetuning, "train", lambda config, **kwargs: captured.update(config=config, **kwargs))
    finetuning.finetune(stage2, "single", overrides=["train.learning_rate=2e-5"])
    config, model = captured["config"], captured["model"]
    assert [entry["name"] for entry in config.tasks] == ["single"] and config.train.learning_rate == 2e-5
    assert config.output_dir.endswith("run/finetune/single") and config.model.tokenizer == str(stage2)
    assert set(model.heads) == {"single"} and set(model.tasks) == {"single"}
    trained, _, _, _ = load_checkpoint(stage2)
    for name, tensor in trained.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], tensor)
    torch.testing.assert_close(model.heads["single"].out_proj.weight, trained.heads["single"].out_proj.weight)


def test_finetune_cli_trains_one_task_and_evaluates(stage2, tmp_path, capsys):
    output_dir = tmp_path / "ft"
    assert main(["finetune", str(stage2), "--task", "score", "--set", "train.max_steps=3",
                 "--set", f"output_dir={output_dir}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 3 and set(printed["dev_metrics"]) == {"score"}
    assert main(["evaluate", str(output_dir / "best")]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"score"}
    config = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert [task["name"] for task in config["tasks"]] == ["score"] and config["train"]["max_steps"] == 3


def test_finetune_config_file_sets_stage_3_hyper_parameters(stage2, task_files, tmp_path):
    path = tmp_path / "stage3.yaml"
    path.write_text(yaml.safe_dump({"tasks": [task_files["single"]], "train": {"epochs": 5, "learning_rate": 1e-5},
                                    "data": {"max_seq_length": 24}}))
    config = finetuning.finetune_config(stage2, "single", path, ["train.batch_size=4"])
    assert (config.train.epochs, config.train.learning_rate, config.train.batch_size) == (5, 1e-5, 4)
    assert config.data.max_seq_length == 24 and config.model.name_or_path == str(stage2)


def test_stage_3_keeps_its_task_cap_and_leaves_multi_task_settings_behind(stage2, tmp_path):
    values = yaml.safe_load((stage2 / finetuning.CONFIG_FILE).read_text())
    values["data"]["max_train_samples"] = {"single": 40, "score": 30}
    values["train"]["sampling"] = {"strategy": "main_task_ratio", "main_task": "score", "ratio": 0.5}
    values["train"]["distillation"] = {"soft_targets": str(tmp_path / "targets"), "weight": 0.7}
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / finetuning.CONFIG_FILE).write_text(yaml.safe_dump(values))
    config = finetuning.finetune_config(checkpoint, "single")
    assert config.data.train_cap("single") == 40 and config.data.max_train_samples == 40
    assert config.train.sampling.strategy == "proportional" and config.train.distillation.soft_targets is None


def test_finetune_errors(stage2, task_files, tmp_path, capsys):
    assert main(["finetune", str(stage2), "--task", "pair", "--set", f"output_dir={tmp_path}"]) == 2
    assert "task `pair` is not one the checkpoint was trained on (single, score)" in capsys.readouterr().err
    assert main(["finetune", str(stage2), "--task", "rte", "--set", f"output_dir={tmp_path}"]) == 2
    assert "no head `rte`" in capsys.readouterr().err
    changed = {**task_files["single"], "label_names": ["a", "b", "c"]}
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump({"tasks": [changed]}))
    with pytest.raises(MTDNNError, match="3 output.*trained as single_classification with 2"):
        finetuning.finetune(stage2, "single", path)
    with pytest.raises(MTDNNError, match="unknown config key `train.lr`"):
        finetuning.finetune_config(stage2, "single", None, ["train.lr=1"])


def test_soft_sharing_gives_the_task_its_own_encoder(task_files):
    tasks = {name: TaskSpec.from_dict(task_files[name]) for name in ("single", "score")}
    model = MTDNNModel(BertModel(tiny_bert_config()), tasks, encoder_groups=[["single"], ["score"]])
    assert finetuning.single_task_model(model, tasks["score"]).encoder is model.group_encoders["score"]
    assert finetuning.single_task_model(model, tasks["single"]).encoder is model.encoder
