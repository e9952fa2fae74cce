"""Model cards: hub metadata that huggingface_hub reads back (base model, tags, datasets, the dev metrics as
`model-index`) and a body with the tasks, their metrics, the training settings and how to load the model."""

import math
import shutil

import yaml
from huggingface_hub import ModelCard

from mtdnn.checkpoint import CARD_FILE, CONFIG_FILE, base_model_of, load_checkpoint
from mtdnn.config import Config, build_settings
from mtdnn.manifest import MANIFEST_FILE
from mtdnn.model_card import checkpoint_card, export_card
from mtdnn.tasks import resolve_tasks

STATE = {"epoch": 2, "step": 40, "dev_score": 0.61,
         "dev_metrics": {"mrpc": {"accuracy": 0.75, "f1": 0.83}, "stsb": {"pearson": 0.5, "spearmanr": math.nan}}}


def _config(tmp_path, name_or_path="sentence-transformers/all-MiniLM-L6-v2", tasks=("mrpc", "stsb", "mnli")):
    return build_settings(Config, {"model": {"name_or_path": name_or_path}, "tasks": list(tasks),
                                   "train": {"learning_rate": 3e-5, "epochs": 2},
                                   "output_dir": str(tmp_path / "runs" / "glue")})


def _saved(card, tmp_path):
    """The card as the hub reads it: written as README.md and parsed again by huggingface_hub."""
    card.save(tmp_path / CARD_FILE)
    return ModelCard.load(tmp_path / CARD_FILE)


def test_checkpoint_card_metadata_reads_back_with_the_dev_metrics(tmp_path):
    config = _config(tmp_path)
    card = _saved(checkpoint_card(config, resolve_tasks(config.tasks), STATE, "bert", base_model_of(config)), tmp_path)
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.library_name == "mtdnn"
    assert {"mtdnn", "multi-task", "text-classification"} <= set(data.tags)
    assert data.datasets == ["nyu-mll/glue"]
    assert data.model_name == "glue"
    results = {(r.dataset_config, r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    # the NaN Spearman is left out of the model-index (the hub takes no NaN); mnli was not evaluated
    assert results == {("mrpc", "validation", "accuracy"): 0.75, ("mrpc", "validation", "f1"): 0.83,
                       ("stsb", "validation", "pearson"): 0.5}
    assert {r.dataset_name for r in data.eval_results} == {"GLUE MRPC", "GLUE STS-B"}


def test_checkpoint_card_body_says_what_how_and_with_which_settings(tmp_path):
    config = _config(tmp_path)
    text = checkpoint_card(config, resolve_tasks(config.tasks), STATE, "bert", None).text
    assert "| `mrpc` | pair_classification | not_equivalent, equivalent | accuracy 0.7500, f1 0.8300 |" in text
    assert "spearmanr n/a" in text and "| `mnli` | pair_classification" in text and "no dev evaluation" in text
    assert "step 40, epoch 2" in text and "dev score of 0.6100" in text
    settings = yaml.safe_load(text.split("```yaml\n")[1].split("```")[0])
    assert settings["train"]["learning_rate"] == 3e-5 and settings["model"]["name_or_path"].endswith("MiniLM-L6-v2")
    assert "glue_dir" not in settings["data"]  # where this machine keeps data is not a training setting
    assert 'MTDNNModel.from_pretrained("REPO_ID")' in text and "mtdnn predict REPO_ID --task mrpc" in text


def test_card_without_evaluation_has_no_model_index(tmp_path):
    config = _config(tmp_path)
    card = _saved(checkpoint_card(config, resolve_tasks(config.tasks), {"step": 5}, "bert", None), tmp_path)
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "model_name" not in card.data.to_dict()
    assert "Saved at step 5 without a dev evaluation" in card.text


def test_export_card_is_a_transformers_model_with_its_heads_metrics(tmp_path):
    config = _config(tmp_path, tasks=("mnli", "mnli_mismatched", "stsb"))
    tasks = resolve_tasks(config.tasks)
    state = {"step": 9, "dev_metrics": {"mnli": {"accuracy": 0.6}, "mnli_mismatched": {"accuracy": 0.62},
                                        "stsb": {"pearson": 0.4, "spearmanr": 0.41}}}
    card = _saved(export_card(config, tasks["mnli"], tasks, state, "bert", None), tmp_path)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert {(r.dataset_split, r.metric_value) for r in card.data.eval_results} == {
        ("validation_matched", 0.6), ("validation_mismatched", 0.62)}  # its head's tasks, not STS-B's
    assert 'pipeline("text-classification", model="REPO_ID")' in card.text and '"text_pair"' in card.text
    assert "trained together with `stsb`" in card.text
    regression = export_card(config, tasks["stsb"], tasks, state, "bert", None).text
    assert "`score` is the predicted value" in regression and "pearson 0.4000" in regression


def test_base_model_follows_a_stage_3_run_back_to_the_hub_id(tmp_path, tiny_model_dir):
    stage2 = tmp_path / "stage2" / "best"
    stage2.mkdir(parents=True)
    (stage2 / CONFIG_FILE).write_text(yaml.safe_dump(_config(tmp_path).to_dict()))
    assert base_model_of(_config(tmp_path, name_or_path=str(stage2))) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_of(_config(tmp_path, name_or_path=str(tiny_model_dir))) is None  # a local encoder
    assert base_model_of(_config(tmp_path, name_or_path="bert-base-uncased")) == "bert-base-uncased"


def test_every_checkpoint_carries_its_card_in_the_manifest(tiny_checkpoint):
    card = ModelCard.load(tiny_checkpoint / CARD_FILE)
    assert card.data.library_name == "mtdnn" and card.data.base_model is None  # the tiny encoder is local
    assert {"`single`", "`pair`", "`score`", "`rank`"} <= set(card.text.split())
    assert CARD_FILE in (tiny_checkpoint / MANIFEST_FILE).read_text()


def test_an_edited_card_does_not_stop_the_checkpoint_loading(tiny_checkpoint, tmp_path):
    """The card is for people (it is edited on the hub); the manifest still guards every file that is loaded."""
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    (checkpoint / CARD_FILE).write_text((checkpoint / CARD_FILE).read_text().replace("# ", "# Edited ", 1))
    model, _, _, _ = load_checkpoint(checkpoint)
    assert set(model.tasks) == {"single", "pair", "score", "rank"}
