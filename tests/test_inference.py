"""The Python prediction API and `mtdnn predict --task --input`: labels, scores, file and stdin input."""

import csv
import io
import json

import numpy as np
import pytest

from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.inference import Predictor, read_inputs
from mtdnn.sources import load_split
from mtdnn.tasks import TaskSpec


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return Predictor.from_pretrained(tiny_checkpoint, device="cpu")


def test_predict_returns_labels_scores_and_probabilities(predictor):
    single = predictor.predict("single", ["a good movie", "the plot was dull"])
    assert [p.label in ("neg", "pos") for p in single] == [True, True]
    for prediction in single:
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.score == pytest.approx(prediction.probabilities[prediction.label])
    pair = predictor.predict("pair", [("the dog", "the cat"), ["a man", "a dog"]])
    assert {p.label for p in pair} <= {"different", "same"}
    score = predictor.predict("score", [("the dog is fun", "the dog")])
    assert score[0].label is None and score[0].probabilities is None and np.isfinite(score[0].score)
    rank = predictor.predict("rank", [("the film", "the film was fun"), ("the film", "a cat")])
    assert len(rank) == 2 and rank[0].score != rank[1].score


def test_predict_agrees_with_predict_on_a_split(predictor, tiny_checkpoint, task_files, tmp_path):
    """The API tokenises like the data pipeline: same labels as `mtdnn predict --split dev`."""
    assert main(["predict", str(tiny_checkpoint), "--tasks", "single", "--output-dir", str(tmp_path)]) == 0
    with open(tmp_path / "single.tsv") as handle:
        expected = [row[1] for row in list(csv.reader(handle, delimiter="\t"))[1:]]
    texts = load_split(TaskSpec.from_dict(task_files["single"]), "dev", None)["text_a"]
    assert [p.label for p in predictor.predict("single", texts)] == expected


def test_wrong_inputs_are_clear_errors(predictor):
    with pytest.raises(MTDNNError, match=r"texts\[0\].*takes an \(a, b\) pair"):
        predictor.predict("pair", ["just one sentence"])
    with pytest.raises(MTDNNError, match="takes a string"):
        predictor.predict("single", [("a", "b")])
    with pytest.raises(MTDNNError, match="not a single string"):
        predictor.predict("single", "a good movie")
    with pytest.raises(MTDNNError, match="unknown task `nope`"):
        predictor.predict("nope", ["x"])
    with pytest.raises(MTDNNError, match="no head `mnli`"):
        predictor.predict("ax", [("a", "b")])


def test_cli_predicts_a_tsv_file(tiny_checkpoint, tmp_path, capsys):
    source = tmp_path / "in.tsv"
    source.write_text("idx\ttext\n7\ta good film\n9\tdull plot\n")
    target = tmp_path / "out.tsv"
    assert main(["predict", str(tiny_checkpoint), "--task", "single", "--input", str(source),
                 "--output", str(target)]) == 0
    assert json.loads(capsys.readouterr().out) == {"output": str(target), "rows": 2}
    rows = list(csv.reader(target.open(), delimiter="\t"))
    assert rows[0] == ["index", "label", "score", "neg", "pos"]
    assert [row[0] for row in rows[1:]] == ["7", "9"]
    for row in rows[1:]:
        assert row[1] in ("neg", "pos") and float(row[2]) == pytest.approx(max(float(row[3]), float(row[4])))


def test_cli_predicts_jsonl_from_stdin(tiny_checkpoint, monkeypatch, capsys):
    lines = [{"first": "the dog", "second": "the cat"}, {"first": "a man", "second": "a fun story"}]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(line) + "\n" for line in lines)))
    assert main(["predict", str(tiny_checkpoint), "--task", "score", "--input", "-"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["index"] for row in out] == [0, 1]
    assert all(row["label"] is None and isinstance(row["score"], float) for row in out)


def test_input_file_errors_name_the_line(tiny_checkpoint, task_files, tmp_path, capsys):
    task = TaskSpec.from_dict(task_files["pair"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"first": "a", "second": "b"}\n{"first": "c"}\n')
    with pytest.raises(MTDNNError, match=r"bad.jsonl, line 2: no value for column 'second'"):
        read_inputs(str(bad), task)
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("sentence\nhello\n")
    assert main(["predict", str(tiny_checkpoint), "--task", "pair", "--input", str(wrong)]) == 2
    assert "reads the column(s) first/second" in capsys.readouterr().err
