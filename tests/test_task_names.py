"""Task names become file names (caches, prediction files, runs): a name that is not one plain path component is
refused where tasks are defined, in a config and in a checkpoint's task table, before anything is written."""

import json
import shutil

import pytest
import yaml
from safetensors.torch import load_file, save_file

from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.manifest import write_manifest
from mtdnn.tasks import GLUE_TASKS, TASK_NAME, TaskSpec, path_for, resolve_tasks

BAD_NAMES = {
    "absolute": None,  # an absolute path under tmp_path, filled in by the tests
    "parent": "../escape",
    "slash": "a/b",
    "backslash": "a\\b",
    "space": "two words",
    "tab": "tab\there",
    "newline": "name\n",
    "empty": "",
    "dot": ".hidden",
    "dots": "a..b",
    "dotted": "my.task",  # a head is an nn.ModuleDict key, which refuses dots
    "too long": "x" * 65,
    "not text": 7,
}


def _bad(kind, tmp_path):
    return str(tmp_path / "outside" / "X") if kind == "absolute" else BAD_NAMES[kind]


def test_glue_and_fixture_names_are_valid(task_files):
    names = [*GLUE_TASKS, *(task["name"] for task in task_files.values()), "my-task_2", "A1", "x" * 64]
    assert all(TASK_NAME.fullmatch(name) for name in names)
    assert set(resolve_tasks(list(GLUE_TASKS))) == set(GLUE_TASKS)


@pytest.mark.parametrize("kind", BAD_NAMES)
def test_bad_task_name_in_a_config_is_refused_before_anything_is_written(kind, tiny_model_dir, task_files, tmp_path,
                                                                         capsys):
    name = _bad(kind, tmp_path)
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [{**task_files["single"], "name": name}],
              "data": {"max_seq_length": 32}, "train": {"max_steps": 1, "batch_size": 8}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--set", f"output_dir={tmp_path / 'run'}"]) == 2
    error = capsys.readouterr().err
    assert "`tasks[0].name`" in error and TASK_NAME.pattern in error and "Traceback" not in error
    assert not (tmp_path / "outside").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("kind", ["absolute", "parent", "slash"])
def test_bad_head_in_a_config_is_refused(kind, tiny_model_dir, task_files, tmp_path, capsys):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": ["mnli", {"name": "mnli_mismatched",
                                                                               "head": _bad(kind, tmp_path)}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--set", f"output_dir={tmp_path / 'run'}"]) == 2
    assert "`tasks[1].head`" in capsys.readouterr().err
    assert not (tmp_path / "outside").exists()


def _rename_in_checkpoint(checkpoint, key, name):
    """Rename task `single` in the checkpoint's task table (its key and its `name`) and its head's weights, with
    a manifest that matches: a checkpoint made that way (which today's predict follows), not a damaged one."""
    path = checkpoint / "mtdnn_tasks.json"
    table = json.loads(path.read_text())
    table["tasks"] = {(key if old == "single" else old): ({**task, "name": name} if old == "single" else task)
                      for old, task in table["tasks"].items()}
    path.write_text(json.dumps(table))
    weights = load_file(checkpoint / "model.safetensors")
    renamed = {tensor_name.replace("heads.single.", f"heads.{key}."): tensor for tensor_name, tensor in weights.items()}
    save_file(renamed, checkpoint / "model.safetensors", metadata={"format": "pt"})
    write_manifest(checkpoint)


@pytest.mark.parametrize("kind", ["absolute", "parent", "slash", "empty", "dotted"])
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bad_task_name_in_a_checkpoint_is_refused(kind, command, tiny_checkpoint, tmp_path, capsys):
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    name = _bad(kind, tmp_path)
    _rename_in_checkpoint(checkpoint, name, name)
    arguments = [command, str(checkpoint)] + (["--output-dir", str(tmp_path / "predictions")]
                                              if command == "predict" else [])
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "mtdnn_tasks.json" in error and TASK_NAME.pattern in error and "Traceback" not in error
    assert not (tmp_path / "outside").exists() and not (tmp_path / "predictions").exists()


def test_task_table_key_must_be_the_task_name(tiny_checkpoint, tmp_path, capsys):
    """The key is what predict names its files by: a good `name` must not hide a bad key."""
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    _rename_in_checkpoint(checkpoint, str(tmp_path / "outside" / "X"), "single")
    assert main(["predict", str(checkpoint), "--output-dir", str(tmp_path / "predictions")]) == 2
    assert "mtdnn_tasks.json" in capsys.readouterr().err
    assert not (tmp_path / "outside").exists() and not (tmp_path / "predictions").exists()


def test_task_spec_checks_its_name_and_head():
    with pytest.raises(MTDNNError, match="not a valid task name"):
        TaskSpec(name="../x", type="single_classification", text_columns=("text",), label_names=("a", "b"))
    with pytest.raises(MTDNNError, match="`head`"):
        TaskSpec(name="x", type="single_classification", text_columns=("text",), label_names=("a", "b"), head="/h")


def test_path_for_joins_a_single_file_name_inside_the_directory(tmp_path):
    assert path_for(tmp_path, "mnli_mismatched", ".tsv") == tmp_path / "mnli_mismatched.tsv"
    assert path_for(tmp_path, "a..b") == tmp_path / "a..b"  # a file name, not the parent
    for name in ("", ".", "..", "/etc/passwd", "../x", "a/b", "a\\b", "nul\0"):
        with pytest.raises(MTDNNError, match="cannot name a file inside"):
            path_for(tmp_path, name)


def test_bad_task_name_in_a_checkpoint_config_is_refused(tiny_checkpoint, tmp_path, capsys):
    """`finetune --task NAME` names its run directory after a task of the checkpoint's config."""
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    path = checkpoint / "mtdnn_config.yaml"
    config = yaml.safe_load(path.read_text())
    config["tasks"][0]["name"] = str(tmp_path / "outside" / "X")
    path.write_text(yaml.safe_dump(config))
    write_manifest(checkpoint)
    assert main(["finetune", str(checkpoint), "--task", str(tmp_path / "outside" / "X")]) == 2
    error = capsys.readouterr().err
    assert "mtdnn_config.yaml" in error and "`tasks[0].name`" in error
    assert not (tmp_path / "outside").exists()
