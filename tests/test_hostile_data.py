"""Hostile data files (issue #16): each ends in one MTDNNError paragraph naming the file and the line, key or
column, and exit status 2 from the CLI; never a traceback, never silently read."""

import codecs
import json

import pytest
import yaml

from mtdnn.cli import main

PAIR = {"type": "pair_classification", "text_columns": ["a", "b"], "label_names": ["no", "yes"]}
SCORE = {"type": "regression", "text_columns": ["a", "b"], "label_column": "score"}
GOOD_TSV = "a\tb\tlabel\nx\ty\tyes\nx\tz\tno\n"


def _lines(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


ROW = {"a": "x", "b": "y", "label": "yes"}

# (file name, file bytes, task fields, message fragments); the file is the task's `train` split unless the task
# fields say `split: dev` (then a good train file comes with it).
CASES = [
    # not UTF-8
    ("utf16.tsv", GOOD_TSV.encode("utf-16"), PAIR, ["utf16.tsv: the file is UTF-16", "must be UTF-8"]),
    ("latin1.tsv", "a\tb\tlabel\nx\ty\tyes\ncafé\ty\tno\n".encode("latin-1"), PAIR,
     ["latin1.tsv, line 3 (byte 21): byte 0xe9 is not UTF-8"]),
    ("nul.tsv", b"a\tb\tlabel\nx\ty\x00\tyes\n", PAIR, ["nul.tsv, line 2 (byte 13): a NUL byte"]),
    ("utf16.csv", "a,b,label\nx,y,yes\n".encode("utf-16"), PAIR, ["utf16.csv: the file is UTF-16"]),
    ("latin1.csv", "a,b,label\nx,ü,yes\n".encode("latin-1"), PAIR, ["latin1.csv, line 2 (byte 12)", "not UTF-8"]),
    ("utf16.jsonl", _lines(ROW).decode().encode("utf-16"), PAIR, ["utf16.jsonl: the file is UTF-16"]),
    ("utf32.jsonl", codecs.BOM_UTF32_LE + _lines(ROW).decode().encode("utf-32-le"), PAIR,
     ["utf32.jsonl: the file is UTF-32"]),
    ("latin1.jsonl", _lines(ROW, '{"a": "caf\xe9", "b": "y", "label": "no"}').decode().encode("latin-1"), PAIR,
     ["latin1.jsonl, line 2", "not UTF-8"]),
    # JSON lines that are not one object each
    ("list.jsonl", _lines(ROW, ["x", "y", "yes"]), PAIR, ["list.jsonl, line 2: a JSON array, not an object",
                                                         "JSON lines"]),
    ("string.jsonl", _lines("\"x y\""), PAIR, ["string.jsonl, line 1: a JSON string, not an object"]),
    ("array.json", _lines([ROW, ROW]), PAIR, ["array.json, line 1: a JSON array", "read as JSON lines"]),
    ("pretty.json", json.dumps([ROW], indent=2).encode(), PAIR,
     ["pretty.json, line 1: not valid JSON", "read as JSON lines"]),
    ("twice.jsonl", _lines('{"a": "x", "a": "z", "b": "y", "label": "yes"}'), PAIR,
     ["twice.jsonl, line 1: the key 'a' appears twice"]),
    # missing keys, wrong values
    ("text_key.jsonl", _lines(ROW, {"a": "x", "label": "no"}), PAIR, ["text_key.jsonl, line 2: no key 'b'"]),
    ("label_key.jsonl", _lines(ROW, {"a": "x", "b": "y"}), PAIR, ["label_key.jsonl, line 2: no key 'label'"]),
    ("first_label.jsonl", _lines({"a": "x", "b": "y"}, ROW), PAIR, ["first_label.jsonl, line 1: no key 'label'"]),
    ("null_text.jsonl", _lines(ROW, {"a": "x", "b": None, "label": "no"}), PAIR,
     ["null_text.jsonl, line 2: the text column 'b' holds null"]),
    ("idx_word.tsv", b"idx\ta\tb\tlabel\n0\tx\ty\tyes\nabc\tx\tz\tno\n", PAIR,
     ["idx_word.tsv, line 3: the index column 'idx' holds 'abc', not a whole number"]),
    ("idx_frac.csv", b"idx,a,b,label\n1.5,x,y,yes\n", PAIR,
     ["idx_frac.csv, line 2: the index column 'idx' holds '1.5'"]),
    ("idx_frac.jsonl", _lines({**ROW, "idx": 1.5}), PAIR,
     ["idx_frac.jsonl, line 1: the index column 'idx' holds 1.5"]),
    # splits without labels
    ("no_scores.tsv", b"a\tb\tscore\nx\ty\t\nx\tz\t\n", SCORE,
     ["no_scores.tsv: every 'score' value is empty", "`train` split of task `mine` has no labels"]),
    ("no_label.tsv", b"a\tb\nx\ty\n", PAIR, ["no_label.tsv: no label column 'label'", "columns are ['a', 'b']"]),
    ("dev_no_label.csv", b"a,b\nx,y\n", {**PAIR, "split": "dev"},
     ["dev_no_label.csv: no label column 'label'", "`dev` split"]),
    # rows that do not fit the header
    ("more.csv", b"a,b,label\nx,y,yes\nx,y,yes,extra\n", PAIR,
     ["more.csv, line 3: 4 comma-separated fields where the header has 3"]),
    ("fewer.csv", b"a,b,label\nx,y,yes\nx,yes\n", PAIR, ["fewer.csv, line 3: 2 comma-separated fields"]),
    ("quoted.csv", b'a,b,label\n"x\nstill x",y,yes\nx,y,yes,extra\n', PAIR,
     ["quoted.csv, line 4: 4 comma-separated"]),  # a quoted field spans lines 2-3
    ("twice.tsv", b"a\tb\ta\tlabel\nx\ty\tz\tyes\n", PAIR,
     ["twice.tsv, line 1: the header names the column 'a' twice"]),
    ("twice.csv", b"a,b,label,b\nx,y,yes,z\n", PAIR, ["twice.csv, line 1: the header names the column 'b' twice"]),
    # nothing to read
    ("header_only.csv", b"a,b,label\n", PAIR, ["header_only.csv: the split is empty"]),
    ("empty.jsonl", b"", PAIR, ["empty.jsonl: the split is empty"]),
]


def _train(tmp_path, model_dir, name: str, content: bytes, fields: dict) -> int:
    fields = dict(fields)
    split = fields.pop("split", "train")
    (tmp_path / name).write_bytes(content)
    files = {split: str(tmp_path / name)}
    if split != "train":
        (tmp_path / "good.tsv").write_text(GOOD_TSV)
        files["train"] = str(tmp_path / "good.tsv")
    config = {"model": {"name_or_path": str(model_dir)}, "tasks": [{"name": "mine", **fields, "data_files": files}],
              "train": {"max_steps": 1}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return main(["train", str(tmp_path / "config.yaml")])


@pytest.mark.parametrize("name, content, fields, fragments", CASES, ids=[case[0] for case in CASES])
def test_hostile_file_is_refused_with_file_and_place(tmp_path, tiny_model_dir, capsys, name, content, fields,
                                                     fragments):
    assert _train(tmp_path, tiny_model_dir, name, content, fields) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    for fragment in fragments:
        assert fragment in error


def _pretrain(tmp_path, model_dir, name: str, content: bytes) -> int:
    (tmp_path / name).write_bytes(content)
    config = {"model": {"name_or_path": str(model_dir)},
              "data": {"text_files": [str(tmp_path / name)], "max_seq_length": 16, "eval_lines": 0},
              "train": {"max_steps": 1, "batch_size": 2}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(config))
    return main(["pretrain", str(tmp_path / "pretrain.yaml")])


@pytest.mark.parametrize("name, content, fragment", [
    ("corpus.bin", b"the film\n" + bytes(range(256)) * 4, "corpus.bin, line 2 (byte 9): a NUL byte"),
    ("latin1.txt", "the film\nthe café\n".encode("latin-1"), "latin1.txt, line 2 (byte 16): byte 0xe9 is not UTF-8"),
    ("utf16.txt", "the film\n".encode("utf-16"), "utf16.txt: the file is UTF-16"),
    ("blank.txt", b"\n  \n", "blank.txt: no text"),
])
def test_pretrain_refuses_a_text_file_that_is_not_utf8_text(tmp_path, tiny_model_dir, capsys, name, content,
                                                            fragment):
    assert _pretrain(tmp_path, tiny_model_dir, name, content) == 2
    error = capsys.readouterr().err
    assert fragment in error and "Traceback" not in error


def test_pretrain_refuses_a_directory_among_text_files(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "corpus").mkdir()
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "data": {"text_files": [str(tmp_path / "corp*")]},
              "output_dir": str(tmp_path / "out")}
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(config))
    assert main(["pretrain", str(tmp_path / "pretrain.yaml")]) == 2
    assert f"{tmp_path / 'corpus'} is a directory" in capsys.readouterr().err


def test_pretrain_text_drops_a_utf8_byte_order_mark(tmp_path):
    from mtdnn.mlm_data import read_text
    from mtdnn.pretrain_config import TextSettings

    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfthe film\nthe dog\n")
    text, _ = read_text(TextSettings(text_files=[str(tmp_path / "bom.txt")], eval_lines=0), seed=0)
    assert list(text["text"]) == ["the film", "the dog"]


@pytest.mark.parametrize("content, message", [
    ("text\n".encode("utf-16"), "the file is UTF-16"),
    ("text\ncaf\xe9\n".encode("latin-1"), "line 2 (byte 8): byte 0xe9 is not UTF-8"),
])
def test_predict_input_files_must_be_utf8(tiny_checkpoint, tmp_path, capsys, content, message):
    path = tmp_path / "inputs.tsv"
    path.write_bytes(content)
    assert main(["predict", str(tiny_checkpoint), "--task", "single", "--input", str(path)]) == 2
    error = capsys.readouterr().err
    assert message in error and "inputs.tsv" in error and "Traceback" not in error
