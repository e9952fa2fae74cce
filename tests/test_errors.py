"""Every kind of bad input a user can give ends in one clear message and exit status 2, no traceback."""

import json
import shutil

import pytest
import yaml

from mtdnn.cli import main


def _train(tmp_path, tiny_model_dir, task: dict, model: str | None = None, **extra) -> int:
    config = {"model": {"name_or_path": model or str(tiny_model_dir)}, "tasks": [task],
              "train": {"max_steps": 1}, "output_dir": str(tmp_path / "out"), **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["train", str(path)])


def _task_with(tmp_path, text: str, name="mine", type="pair_classification", suffix="tsv", **extra) -> dict:
    path = tmp_path / f"train.{suffix}"
    path.write_text(text)
    task = {"name": name, "type": type, "text_columns": ["a", "b"], "data_files": {"train": str(path)}, **extra}
    if type == "pair_classification":
        task["label_names"] = ["no", "yes"]
    return task


@pytest.mark.parametrize("text, extra, message", [
    ("a\tb\tlabel\nx\ty\tyes\nx\ty\n", {}, "train.tsv, line 3: 2 tab-separated fields where the header has 3"),
    ("a\tb\tlabel\nx\ty\tyes\nx\ty\tperhaps\n", {}, "train.tsv, line 3: unknown label 'perhaps'"),
    ("a\tb\tlabel\n", {}, "the split is empty"),
    ("a\tc\tlabel\nx\ty\tyes\n", {}, "no column 'b'"),
    ("a\tb\tscore\nx\ty\t1.5\nx\ty\tabc\n", {"type": "regression", "label_column": "score"},
     "train.tsv, line 3: regression target 'abc' of task `mine` is not a finite number"),
    ("a\tb\tscore\nx\ty\tnan\n", {"type": "regression", "label_column": "score"}, "is not a finite number"),
    ("a\tb\tlabel\nq\tx\t1\nq\ty\t1\n", {"type": "ranking"}, "has 2 positive candidates"),
])
def test_bad_data(tmp_path, tiny_model_dir, capsys, text, extra, message):
    assert _train(tmp_path, tiny_model_dir, _task_with(tmp_path, text, **extra)) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_missing_data_file_model_path_and_unreachable_hub(tmp_path, tiny_model_dir, capsys):
    task = {"name": "mine", "type": "regression", "text_columns": ["a", "b"],
            "data_files": {"train": str(tmp_path / "absent.tsv")}}
    assert _train(tmp_path, tiny_model_dir, task) == 2
    assert f"data file {tmp_path / 'absent.tsv'} does not exist" in capsys.readouterr().err
    good = _task_with(tmp_path, "a\tb\tlabel\nx\ty\tyes\n")
    assert _train(tmp_path, tiny_model_dir, good, model=str(tmp_path / "no-such-model")) == 2
    assert "cannot load the tokenizer" in capsys.readouterr().err
    assert _train(tmp_path, tiny_model_dir, good, model="no-such-org/no-such-model") == 2  # hub offline here
    error = capsys.readouterr().err
    assert "no-such-org/no-such-model" in error and "hub could not provide it" in error


def test_config_errors_name_the_key(tmp_path, tiny_model_dir, capsys):
    good = _task_with(tmp_path, "a\tb\tlabel\nx\ty\tyes\n")
    assert _train(tmp_path, tiny_model_dir, good, data={"max_seq_lenght": 64}) == 2
    assert "unknown config key `data.max_seq_lenght`" in capsys.readouterr().err
    assert _train(tmp_path, tiny_model_dir, good, data={"max_seq_length": "long"}) == 2
    assert "`data.max_seq_length` must be of type int" in capsys.readouterr().err
    assert _train(tmp_path, tiny_model_dir, {**good, "dropuot": 0.2}) == 2
    assert "task `mine`: unknown key `dropuot`" in capsys.readouterr().err


def test_incomplete_or_incompatible_checkpoint(tiny_checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    assert main(["evaluate", str(broken)]) == 2
    assert "not a complete mtdnn checkpoint: model.safetensors missing" in capsys.readouterr().err
    future = tmp_path / "future"
    shutil.copytree(tiny_checkpoint, future)
    table = json.loads((future / "mtdnn_tasks.json").read_text())
    (future / "mtdnn_tasks.json").write_text(json.dumps({**table, "format_version": 99}))
    assert main(["evaluate", str(future)]) == 2
    assert "format version 99" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    from mtdnn.errors import MTDNNError

    with pytest.raises(MTDNNError):
        main(["--debug", "train", str(tmp_path / "missing.yaml")])
