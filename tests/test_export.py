"""`mtdnn export`: a standard sequence-classification directory with mtdnn's logits, usable by the pipeline."""

import json
import shutil

import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from transformers import (AutoConfig, AutoModelForSequenceClassification, BertModel, DistilBertConfig,
                          DistilBertModel, RobertaConfig, RobertaModel)

from conftest import make_checkpoint, tiny_bert_config
from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.export import export_all, export_task
from mtdnn.inference import Predictor
from mtdnn.model import MTDNNModel
from mtdnn.pretrained import load_tokenizer
from mtdnn.tasks import GLUE_TASKS, TaskSpec

SENTENCES = ["a good movie", "the plot was very dull and the film was not fun", "great"]
PAIRS = [("the dog", "the cat is fun"), ("a man and a dog", "the man"), ("bad", "good")]


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """The `single` and `score` heads exported through the CLI."""
    root = tmp_path_factory.mktemp("exported")
    for task in ("single", "score"):
        assert main(["export", str(tiny_checkpoint), str(root / task), "--task", task]) == 0
    return root


def _batch(tokenizer, texts):
    first = [t if isinstance(t, str) else t[0] for t in texts]
    second = None if isinstance(texts[0], str) else [t[1] for t in texts]
    return tokenizer(first, second, padding=True, return_tensors="pt")  # padded: the attention mask matters


def test_export_writes_a_standard_directory(exported):
    config = AutoConfig.from_pretrained(exported / "single")
    assert config.architectures == ["BertForSequenceClassification"]
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    regression = AutoConfig.from_pretrained(exported / "score")
    assert regression.problem_type == "regression" and regression.num_labels == 1
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (exported / "single" / name).is_file()


@pytest.mark.parametrize("task, texts", [("single", SENTENCES), ("score", PAIRS)])
def test_exported_model_gives_mtdnn_logits(exported, tiny_checkpoint, task, texts):
    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    model = AutoModelForSequenceClassification.from_pretrained(exported / task).eval()
    with torch.inference_mode():
        logits = model(**_batch(predictor.tokenizer, texts)).logits
    torch.testing.assert_close(logits, torch.from_numpy(predictor.logits(task, texts)), atol=1e-5, rtol=1e-5)


def test_pipeline_predicts_the_same_labels_and_scores(exported, tiny_checkpoint):
    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    classify = transformers.pipeline("text-classification", model=str(exported / "single"), device="cpu")
    assert [row["label"] for row in classify(SENTENCES)] == [p.label for p in predictor.predict("single", SENTENCES)]
    regress = transformers.pipeline("text-classification", model=str(exported / "score"), device="cpu")
    outputs = regress([{"text": a, "text_pair": b} for a, b in PAIRS])
    expected = [p.score for p in predictor.predict("score", PAIRS)]
    assert [row["score"] for row in outputs] == pytest.approx(expected, abs=1e-5)


def test_roberta_style_head_is_mapped(tiny_model_dir, tmp_path):
    """RoBERTa's classifier (dense + tanh + out_proj) is mtdnn's pooler + linear head."""
    config = RobertaConfig(**{k: v for k, v in tiny_bert_config().to_dict().items() if k != "model_type"})
    task = TaskSpec(name="nli", type="pair_classification", text_columns=("a", "b"), label_names=("x", "y", "z"),
                    data_files={})
    torch.manual_seed(0)
    model = MTDNNModel(RobertaModel(config), {"nli": task}).eval()
    difference = export_task(model, load_tokenizer(str(tiny_model_dir)), task, tmp_path / "roberta")
    assert difference < 1e-5
    assert AutoConfig.from_pretrained(tmp_path / "roberta").architectures == ["RobertaForSequenceClassification"]


def test_unmatched_head_layout_is_a_clear_error(tiny_model_dir, tmp_path):
    config = DistilBertConfig(vocab_size=99, dim=32, n_layers=1, n_heads=4, hidden_dim=37)
    task = TaskSpec(name="s", type="single_classification", text_columns=("t",), label_names=("a", "b"),
                    data_files={})
    model = MTDNNModel(DistilBertModel(config), {"s": task})
    with pytest.raises(MTDNNError, match="cannot export task `s`.*DistilBertForSequenceClassification"):
        export_task(model, load_tokenizer(str(tiny_model_dir)), task, tmp_path / "distil")
    assert not (tmp_path / "distil").exists()


def test_export_of_a_missing_head_fails_through_the_cli(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), str(tmp_path / "x"), "--task", "mnli"]) == 2
    assert "no head `mnli`" in capsys.readouterr().err
    assert main(["export", str(tiny_checkpoint), str(tmp_path / "y"), "--task", "single"]) == 0
    assert json.loads(capsys.readouterr().out)["max_logit_difference"] < 1e-5


def test_task_embedding_is_folded_into_the_word_embeddings(tiny_model_dir, tmp_path):
    """ERNIE 2.0 task vectors are added to every word embedding; the exported model has them built in."""
    task = TaskSpec(name="s", type="single_classification", text_columns=("t",), label_names=("a", "b"),
                    data_files={})
    torch.manual_seed(0)
    model = MTDNNModel(BertModel(tiny_bert_config()), {"s": task}, use_task_embeddings=True).eval()
    with torch.no_grad():
        model.encoder.task_embeddings.vectors["s"].normal_()
    assert export_task(model, load_tokenizer(str(tiny_model_dir)), task, tmp_path / "ernie") < 1e-5


def test_san_head_is_a_clear_error(tiny_model_dir, tmp_path):
    task = TaskSpec(name="nli", type="pair_classification", text_columns=("a", "b"), label_names=("x", "y"),
                    data_files={}, answer_module="san")
    model = MTDNNModel(BertModel(tiny_bert_config()), {"nli": task})
    with pytest.raises(MTDNNError, match="its head is a SANHead"):
        export_task(model, load_tokenizer(str(tiny_model_dir)), task, tmp_path / "san")


def test_ranking_head_exports_its_relevance_score(tiny_checkpoint, tmp_path):
    """A ranking head scores one (query, candidate) pair at a time: the exported one-output model's logit is
    mtdnn's relevance score for the pair (the Predictor scores each pair as a group of one)."""
    assert main(["export", str(tiny_checkpoint), str(tmp_path / "rank"), "--task", "rank"]) == 0
    config = AutoConfig.from_pretrained(tmp_path / "rank")
    assert (config.num_labels, config.problem_type, config.id2label) == (1, "regression", {0: "rank"})
    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rank").eval()
    with torch.inference_mode():
        logits = model(**_batch(predictor.tokenizer, PAIRS)).logits  # (pairs, 1)
    torch.testing.assert_close(logits, torch.from_numpy(predictor.logits("rank", PAIRS)), atol=1e-5, rtol=1e-5)
    assert logits[:, 0].unique().numel() == len(PAIRS)  # the pairs get their own scores, not one constant


def test_qnli_ranking_scores_each_candidate_of_a_group(tiny_model_dir, tmp_path):
    """The GLUE `qnli_ranking` row: each candidate's score in a padded group is the exported model's logit."""
    task = GLUE_TASKS["qnli_ranking"]
    torch.manual_seed(0)
    model = MTDNNModel(BertModel(tiny_bert_config()), {task.name: task}).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert export_task(model, tokenizer, task, tmp_path / "qnli") < 1e-5
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "qnli").eval()
    assert exported.config.id2label == {0: "qnli_ranking"}
    pairs = _batch(tokenizer, PAIRS)  # one query's candidates, padded to a common length: (candidates, seq)
    with torch.inference_mode():
        group = model(task.name, **{name: tensor.unsqueeze(0) for name, tensor in pairs.items()}).logits  # (1, 3)
        torch.testing.assert_close(exported(**pairs).logits.T, group, atol=1e-5, rtol=1e-5)


# --- every task at once, and the model card of each export


@pytest.fixture(scope="module")
def exported_all(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported_all") / "all"
    assert main(["export", str(tiny_checkpoint), str(root)]) == 0
    return root


def test_export_without_task_writes_every_task_and_an_index(exported_all, tiny_checkpoint):
    index = json.loads((exported_all / "index.json").read_text())
    assert set(index["tasks"]) == {"single", "pair", "score", "rank"} and index["skipped"] == {}
    assert index["tasks"]["pair"] == {"directory": "pair", "type": "pair_classification", "labels": ["different",
                                      "same"], "max_logit_difference": pytest.approx(0, abs=1e-5)}
    assert index["tasks"]["score"]["labels"] == ["score"] and index["logit_tolerance"] == 1e-4
    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    for name, texts in (("single", SENTENCES), ("pair", PAIRS), ("rank", PAIRS)):
        model = AutoModelForSequenceClassification.from_pretrained(exported_all / name).eval()
        with torch.inference_mode():
            logits = model(**_batch(predictor.tokenizer, texts)).logits
        torch.testing.assert_close(logits, torch.from_numpy(predictor.logits(name, texts)), atol=1e-5, rtol=1e-5)
    assert sorted(path.name for path in exported_all.parent.iterdir()) == ["all"]  # no staging left beside it


@pytest.mark.parametrize("task", ["single", "score"])
def test_each_export_carries_its_card(exported, exported_all, task):
    for root in (exported, exported_all):
        card = ModelCard.load(root / task / "README.md")
        assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
        assert {"mtdnn", "multi-task"} <= set(card.data.tags)
        assert f"| `{task}` |" in card.text and 'pipeline("text-classification"' in card.text


def test_export_of_every_task_keeps_the_overwrite_rules(exported_all, tiny_checkpoint, tmp_path, capsys):
    again = shutil.copytree(exported_all, tmp_path / "again")
    assert main(["export", str(tiny_checkpoint), str(again)]) == 2
    assert "is not empty" in capsys.readouterr().err
    (again / "single" / "stale.txt").write_text("from before")
    assert main(["export", str(tiny_checkpoint), str(again), "--overwrite"]) == 0  # an earlier export of all
    assert not (again / "single" / "stale.txt").exists()
    assert main(["export", str(tiny_checkpoint), str(again), "--task", "single", "--overwrite"]) == 0
    assert (again / "config.json").is_file() and not (again / "index.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["export", str(tiny_checkpoint), str(other), "--overwrite"]) == 2
    assert "holds no exported model" in capsys.readouterr().err and (other / "notes.txt").is_file()


def test_a_head_that_cannot_be_exported_is_listed_with_its_reason(tiny_model_dir, task_files, tmp_path, capsys):
    san = {**task_files["pair"], "answer_module": "san"}
    checkpoint = make_checkpoint(tmp_path / "run", tiny_model_dir, [task_files["single"], san])
    assert main(["export", str(checkpoint), str(tmp_path / "out")]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert set(index["tasks"]) == {"single"} and "its head is a SANHead" in index["skipped"]["pair"]
    assert not (tmp_path / "out" / "pair").exists()
    assert json.loads(capsys.readouterr().out)["skipped"] == index["skipped"]
    only_san = make_checkpoint(tmp_path / "san", tiny_model_dir, [san])
    assert main(["export", str(only_san), str(tmp_path / "none")]) == 2
    assert "no task of the checkpoint can be exported" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_tasks_sharing_a_head_share_its_export(tiny_model_dir, tmp_path):
    """MNLI-mismatched is predicted by the MNLI head: the index sends it to `mnli/`, which is written once."""
    tasks = {name: GLUE_TASKS[name] for name in ("mnli", "mnli_mismatched")}
    torch.manual_seed(0)
    model = MTDNNModel(BertModel(tiny_bert_config()), tasks).eval()
    index = export_all(model, load_tokenizer(str(tiny_model_dir)), tmp_path / "out", card_for=lambda task: None)
    assert {name: entry["directory"] for name, entry in index["tasks"].items()} == {"mnli": "mnli",
                                                                                    "mnli_mismatched": "mnli"}
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["index.json", "mnli"]
    assert not (tmp_path / "out" / "mnli" / "README.md").exists()  # no card asked for, none written
