"""The multi-label task type: BCE loss, metrics, label parsing, and train -> evaluate -> predict -> export."""

import csv
import json
import math
import random

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification, BertModel

from conftest import WORDS, make_checkpoint, tiny_bert_config
from mtdnn.adversarial import adversarial_loss
from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.inference import Predictor
from mtdnn.losses import LOSSES, distillation_loss, output_divergence
from mtdnn.metrics import compute_metrics
from mtdnn.model import MTDNNModel
from mtdnn.sources import load_split
from mtdnn.tasks import TaskSpec

LABELS = ["animal", "positive", "negative"]
CUES = {"animal": {"dog", "cat"}, "positive": {"good", "great", "fun"}, "negative": {"bad", "awful", "dull"}}
METRICS = {"f1_micro", "f1_macro", "exact_match"}


def _labels_of(text: str) -> list[str]:
    return [name for name in LABELS if CUES[name] & set(text.split())]


def _tags_task(directory, name="tags", **extra) -> dict:
    """A single-sentence multi-label task: train as JSON lines with label lists, dev as CSV with "a,b" cells."""
    rng = random.Random(1)
    for split, size in (("train", 64), ("dev", 24)):
        texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))) for _ in range(size)]
        if split == "train":
            (directory / "tags_train.jsonl").write_text(
                "".join(json.dumps({"text": t, "tags": _labels_of(t)}) + "\n" for t in texts))
        else:
            with open(directory / "tags_dev.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "tags"])
                writer.writerows((t, ",".join(_labels_of(t))) for t in texts)
    return {"name": name, "type": "multi_label_classification", "text_columns": ["text"], "label_column": "tags",
            "label_names": LABELS, "data_files": {"train": str(directory / "tags_train.jsonl"),
                                                  "dev": str(directory / "tags_dev.csv")}, **extra}


def test_loss_is_binary_cross_entropy_by_hand():
    logits, labels = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.0, 3.0]]), torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    terms = [-(y * math.log(sigmoid(x)) + (1 - y) * math.log(1 - sigmoid(x)))
             for row_x, row_y in zip(logits.tolist(), labels.tolist()) for x, y in zip(row_x, row_y)]
    loss = LOSSES["multi_label_classification"](logits, labels)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_metrics_by_hand():
    predictions = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    references = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    metrics = compute_metrics(["f1_micro", "f1_macro", "exact_match"], "multi_label_classification",
                              predictions, references)
    # pooled: 3 true positives, 2 false positives, no false negatives -> F1 = 6 / 8
    # per label: F1 1 (label 0), 2/3 (label 1: 1 TP, 1 FP), 0 (label 2: 1 FP) -> mean 5/9; one row exactly right
    assert metrics == pytest.approx({"f1_micro": 0.75, "f1_macro": 5 / 9, "exact_match": 1 / 3})


def test_parses_lists_and_delimited_strings_in_one_and_two_columns(tmp_path):
    (tmp_path / "list.jsonl").write_text(json.dumps({"a": "x", "b": "y", "label": ["negative", "animal"]}) + "\n"
                                         + json.dumps({"a": "z", "b": "w", "label": []}) + "\n")
    (tmp_path / "text.tsv").write_text("a\tlabel\nx\tanimal | positive\nz\t\ny\tnegative\n")
    pair = TaskSpec.from_dict({"name": "p", "type": "multi_label_classification", "text_columns": ["a", "b"],
                               "label_names": LABELS, "data_files": {"train": str(tmp_path / "list.jsonl")}})
    single = TaskSpec.from_dict({"name": "s", "type": "multi_label_classification", "text_columns": "a",
                                 "label_names": LABELS, "label_delimiter": "|",
                                 "data_files": {"train": str(tmp_path / "text.tsv")}})
    assert pair.metrics == ("f1_micro", "f1_macro", "exact_match") and pair.threshold == 0.5
    columns = load_split(pair, "train", None)
    assert columns["text_b"] == ["y", "w"] and columns["label"] == [[1, 0, 1], [0, 0, 0]]
    assert load_split(single, "train", None)["label"] == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]


def test_unknown_label_names_the_file_and_line(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\na dog\tanimal\nfun\tpositive,funny\n")
    task = {"name": "t", "type": "multi_label_classification", "text_columns": ["text"], "label_names": LABELS,
            "data_files": {"train": str(path)}}
    with pytest.raises(MTDNNError, match=rf"{path}, line 3: unknown label 'funny' for task `t`"):
        load_split(TaskSpec.from_dict(task), "train", None)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task],
                                      "train": {"max_steps": 1}, "output_dir": str(tmp_path / "out")}))
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"{path}, line 3: unknown label 'funny'" in error and "Traceback" not in error


@pytest.mark.parametrize("extra, message", [
    ({"metrics": ["accuracy"]}, "metric 'accuracy' does not apply to type multi_label_classification"),
    ({"threshold": 1.5}, "threshold must be a probability in (0, 1)"),
    ({"label_delimiter": ""}, "label_delimiter must be a non-empty string"),
    ({"text_columns": ["a", "b", "c"]}, "needs 1 or 2 text column(s)"),
    ({"label_names": None}, "needs `label_names`"),
])
def test_task_fields_are_checked(extra, message):
    values = {"name": "t", "type": "multi_label_classification", "text_columns": ["a"], "label_names": LABELS}
    with pytest.raises(MTDNNError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TaskSpec.from_dict({**values, **extra})


def test_smart_and_distillation_use_per_label_bernoulli_distributions():
    a, b = torch.tensor([[1.0, -2.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    p, q = torch.sigmoid(a), torch.sigmoid(b)
    kl = lambda x, y: x * (x / y).log() + (1 - x) * ((1 - x) / (1 - y)).log()  # noqa: E731
    expected = (kl(p, q) + kl(q, p)).mean()
    torch.testing.assert_close(output_divergence("multi_label_classification", a, b), expected)
    teachers = torch.stack([b, b])  # (teachers, batch, labels)
    torch.testing.assert_close(distillation_loss("multi_label_classification", a, teachers), kl(q, p).mean())
    assert distillation_loss("multi_label_classification", b, teachers).item() == pytest.approx(0.0, abs=1e-6)

    torch.manual_seed(0)
    task = TaskSpec(name="tags", type="multi_label_classification", text_columns=("a",), label_names=tuple(LABELS))
    model = MTDNNModel(BertModel(tiny_bert_config()), {"tags": task}).train()
    batch = {"input_ids": torch.randint(5, 99, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long)}
    logits = model("tags", **batch, labels=torch.tensor([[1.0, 0, 1]] * 4)).logits  # (batch, num_labels)
    loss = adversarial_loss(model, "tags", batch, logits, 1e-2, 1e-2, 1e-3, 1)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, task_files, tmp_path_factory):
    """`mtdnn train` on the multi-label task next to a single-sentence classification task."""
    directory = tmp_path_factory.mktemp("multilabel")
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [_tags_task(directory), task_files["single"]],
              "data": {"max_seq_length": 32}, "train": {"epochs": 2, "max_steps": 8, "batch_size": 8,
                                                        "learning_rate": 1e-3, "eval_batch_size": 5},
              "output_dir": str(directory / "out")}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    return directory / "out"


def test_train_evaluate_predict_agree(trained_run, tmp_path, capsys):
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if row["type"] == "eval"][-1]
    assert set(logged["metrics"]) == {"tags", "single"} and set(logged["metrics"]["tags"]) == METRICS
    assert all(0.0 <= value <= 1.0 for value in logged["metrics"]["tags"].values())
    capsys.readouterr()
    assert main(["evaluate", str(trained_run / "last")]) == 0
    printed = json.loads(capsys.readouterr().out)
    for task, metrics in logged["metrics"].items():
        assert printed[task] == pytest.approx(metrics, abs=1e-6), task

    assert main(["predict", str(trained_run / "last"), "--tasks", "tags", "--output-dir", str(tmp_path)]) == 0
    with open(tmp_path / "tags.tsv") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["index", "prediction"]
    task = Predictor.from_pretrained(trained_run / "last", device="cpu").task("tags")
    truth = load_split(task, "dev", None)
    assert [int(row[0]) for row in rows[1:]] == truth["idx"]
    predicted = [[int(name in row[1].split(",")) for name in LABELS] for row in rows[1:]]
    recomputed = compute_metrics(task.metrics, task.type, np.array(predicted), np.array(truth["label"]))
    assert recomputed == pytest.approx(printed["tags"], abs=1e-6)


def test_predictor_and_input_files_threshold_each_label(trained_run, tmp_path, capsys):
    predictor = Predictor.from_pretrained(trained_run / "last", device="cpu")
    texts = ["a good dog", "the bad cat was dull", "the plot"]
    probabilities = torch.sigmoid(torch.from_numpy(predictor.logits("tags", texts))).numpy()  # (3, 3)
    for prediction, row in zip(predictor.predict("tags", texts), probabilities):
        assert prediction.labels == [name for name, p in zip(LABELS, row) if p >= 0.5]
        assert prediction.label == ",".join(prediction.labels)
        assert prediction.probabilities == pytest.approx(dict(zip(LABELS, row.tolist())), abs=1e-6)
        assert prediction.score == pytest.approx(float(np.prod(np.where(row >= 0.5, row, 1 - row))), abs=1e-6)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"idx": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    assert main(["predict", str(trained_run / "last"), "--task", "tags", "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["labels"] for row in written] == [p.labels for p in predictor.predict("tags", texts)]


def test_export_gives_a_multi_label_model_with_the_same_logits(trained_run, tmp_path):
    assert main(["export", str(trained_run / "last"), str(tmp_path / "tags"), "--task", "tags"]) == 0
    config = AutoConfig.from_pretrained(tmp_path / "tags")
    assert config.problem_type == "multi_label_classification"
    assert config.id2label == dict(enumerate(LABELS)) and config.label2id == {n: i for i, n in enumerate(LABELS)}
    predictor = Predictor.from_pretrained(trained_run / "last", device="cpu")
    texts = ["a good movie", "the plot was very dull and the dog was not fun", "cat"]
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "tags").eval()
    with torch.inference_mode():
        logits = exported(**predictor.tokenizer(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(logits, torch.from_numpy(predictor.logits("tags", texts)), atol=1e-5, rtol=1e-5)


def test_pair_inputs_predict_and_export(tiny_model_dir, tmp_path):
    task = {"name": "pairs", "type": "multi_label_classification", "text_columns": ["a", "b"], "label_names": LABELS,
            "threshold": 0.3}
    checkpoint = make_checkpoint(tmp_path / "run", tiny_model_dir, [task])
    predictor = Predictor.from_pretrained(checkpoint, device="cpu")
    pairs = [("a dog", "a good cat"), ("the plot", "was dull")]
    probabilities = torch.sigmoid(torch.from_numpy(predictor.logits("pairs", pairs))).numpy()
    assert [p.labels for p in predictor.predict("pairs", pairs)] == [
        [name for name, p in zip(LABELS, row) if p >= 0.3] for row in probabilities]
    with pytest.raises(MTDNNError, match="takes an \\(a, b\\) pair"):
        predictor.predict("pairs", ["a dog"])
    assert main(["export", str(checkpoint), str(tmp_path / "exported"), "--task", "pairs"]) == 0


def test_a_label_list_that_repeats_a_label_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"  # a 0/1 vector read as ids would silently give the wrong labels
    path.write_text('{"text": "a dog", "label": [0, 1, 0]}\n')
    task = {"name": "t", "type": "multi_label_classification", "text_columns": ["text"], "label_names": LABELS,
            "data_files": {"train": str(path)}}
    with pytest.raises(MTDNNError, match=rf"{path}, line 1: .* repeats a label"):
        load_split(TaskSpec.from_dict(task), "train", None)


def test_a_label_name_holding_the_delimiter_is_refused():
    with pytest.raises(MTDNNError, match="contains the label_delimiter ','"):
        TaskSpec.from_dict({"name": "t", "type": "multi_label_classification", "text_columns": ["text"],
                            "label_names": ["a,b", "c"]})
