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
from mtdnn.config import Config, load_config, save_config
from mtdnn.errors import MTDNNError
from mtdnn.model import MTDNNModel
from mtdnn.tasks import TaskSpec, path_for
from mtdnn.yaml_settings import build_settings, read_yaml


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
    assert finetuning.single_task_model(model, tasks["score"], 0).encoder is model.group_encoders["score"]
    assert finetuning.single_task_model(model, tasks["single"], 0).encoder is model.encoder


def dict_edited_config(checkpoint, task_name, config_path=None, overrides=None) -> Config:
    """The reference: stage 3's config as it was built before the typed rewrite, by editing the YAML mapping."""
    checkpoint_values = read_yaml(checkpoint / finetuning.CONFIG_FILE)
    values = read_yaml(config_path) if config_path is not None else dict(checkpoint_values)
    entry = finetuning._task_entry(task_name, values.get("tasks") if config_path is not None else None,
                                   checkpoint_values.get("tasks"))
    if config_path is None or "output_dir" not in values:
        values["output_dir"] = str(path_for(finetuning.stage2_run(checkpoint) / "finetune", task_name))
    values["tasks"] = [entry]
    data = dict(values.get("data") or {})
    if config_path is None:
        data.pop("cache_dir", None)
        values["data"] = data
    if isinstance(data.get("max_train_samples"), dict):
        data["max_train_samples"] = data["max_train_samples"].get(task_name)
        values["data"] = data
    if config_path is None:
        values["train"] = {key: value for key, value in (values.get("train") or {}).items()
                           if key not in ("sampling", "distillation")}
    model = {**(values.get("model") or {}), "name_or_path": str(checkpoint), "tokenizer": str(checkpoint),
             "from_scratch": False}
    if model.get("sharing") == "soft":
        model.update(sharing="hard", encoder_groups=None)
    values["model"] = model
    return build_settings(Config, values, overrides, config_path or checkpoint / finetuning.CONFIG_FILE)


MINE = {"name": "mine", "type": "single_classification", "text_columns": ["text"], "label_names": ["a", "b"],
        "data_files": {"train": "mine.tsv"}}
STAGE_2 = ["tasks=[rte, stsb, {name: mine, type: single_classification, text_columns: [text], label_names: [a, b]}]",
           "data.cache_dir=/elsewhere/cache", "data.max_train_samples={rte: 40, mine: 30}", "train.epochs=4",
           "train.sampling={strategy: main_task_ratio, main_task: rte, ratio: 0.5}", "output_dir=/elsewhere/run",
           "train.distillation={soft_targets: /elsewhere/targets, weight: 0.7}", "train.learning_rate=3e-5"]


@pytest.mark.parametrize("stage_2, task_name, stage_3, overrides", [
    ([], "rte", None, []),
    ([], "mine", None, ["train.learning_rate=2e-5", "data.max_train_samples=5", "train.sampling.ratio=2"]),
    (["model.sharing=soft", "model.encoder_groups=[[rte], [stsb, mine]]"], "stsb", None, ["output_dir=/here"]),
    (["data.max_train_samples=12", "model.task_embeddings=true"], "mnli", None, ["model.from_scratch=true"]),
    ([], "mine", {"tasks": [{**MINE, "label_names": ["x", "y"]}], "train": {"epochs": 5}}, ["train.batch_size=4"]),
    ([], "rte", {"output_dir": "/chosen", "data": {"cache_dir": "/mine", "max_train_samples": {"rte": 9, "x": 1}}},
     []),
    ([], "stsb", {"tasks": ["cola"], "model": {"sharing": "soft", "encoder_groups": [["cola"]]}}, ["data.glue_dir=/g"]),
])
def test_the_typed_stage_3_config_is_the_dict_edited_one(tmp_path, stage_2, task_name, stage_3, overrides):
    """`finetune_config` builds on the Config with `dataclasses.replace`; it resolves to the config that editing
    the YAML mapping gave, for the checkpoint's config and for a stage-3 file, with and without overrides."""
    checkpoint = tmp_path / "run" / "checkpoints" / "step-8"
    checkpoint.mkdir(parents=True)
    save_config(load_config(None, STAGE_2 + stage_2), checkpoint / finetuning.CONFIG_FILE)
    config_path = None
    if stage_3 is not None:
        config_path = tmp_path / "stage3.yaml"
        config_path.write_text(yaml.safe_dump(stage_3))
    expected = dict_edited_config(checkpoint, task_name, config_path, overrides).to_dict()
    assert finetuning.finetune_config(checkpoint, task_name, config_path, overrides).to_dict() == expected
    assert expected["model"]["name_or_path"] == str(checkpoint)  # the cases reach what stage 3 changes


@pytest.mark.parametrize("overrides", [["train.lr=1"], ["data.max_train_samples.rte.x=1"], ["train.epochs=0"],
                                       ["model.sharing=medium"], ["tasks=[]"]])
def test_stage_3_overrides_are_checked_as_before(tmp_path, overrides):
    """A wrong `--set` on finetune is refused with the message the dict-edited config gave (unknown keys named)."""
    checkpoint = tmp_path / "best"
    checkpoint.mkdir()
    save_config(load_config(None, STAGE_2), checkpoint / finetuning.CONFIG_FILE)
    with pytest.raises(MTDNNError) as expected:
        dict_edited_config(checkpoint, "rte", None, overrides)
    with pytest.raises(MTDNNError) as error:
        finetuning.finetune_config(checkpoint, "rte", None, overrides)
    assert str(error.value) == str(expected.value)


def test_a_task_without_a_head_in_the_checkpoint_gets_a_new_head_seeded_by_the_run(stage2, task_files, tmp_path):
    """Stage 3 on a task stage 2 left out (as WNLI in the paper's recipe): the checkpoint's encoder, a new head."""
    model, _, _, _ = load_checkpoint(stage2)
    task = TaskSpec.from_dict(task_files["pair"])
    heads = [finetuning.single_task_model(model, task, seed).heads["pair"].state_dict() for seed in (3, 3, 4)]
    for name, tensor in heads[0].items():
        assert torch.equal(tensor, heads[1][name])  # the run's seed decides the new head, nothing before it
    assert not torch.equal(heads[0]["out_proj.weight"], heads[2]["out_proj.weight"])
    assert finetuning.single_task_model(model, task, 3).encoder is model.encoder
    path = tmp_path / "stage3.yaml"
    path.write_text(yaml.safe_dump({"tasks": [task_files["pair"]], "data": {"max_seq_length": 32},
                                    "train": {"epochs": 1, "batch_size": 16}}))
    run = finetuning.finetune(stage2, "pair", path, [f"output_dir={tmp_path / 'out'}"])
    assert set(json.loads((run / "best" / "trainer_state.json").read_text())["dev_metrics"]) == {"pair"}
