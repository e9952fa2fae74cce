"""Hostile input to runs: configs, command-line values, the file system, run directories and export targets.

Each case ends in one paragraph on stderr and exit status 2 (no traceback), and never damages what an earlier
run or export wrote.
"""

import errno
import fcntl
import json
import shutil

import pytest
import yaml
from safetensors.torch import load_file

from mtdnn.cli import main
from mtdnn.run_dir import LOCK_FILE


@pytest.fixture
def config_path(tiny_model_dir, task_files, tmp_path):
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"]],
              "data": {"max_seq_length": 32, "max_eval_samples": 8},
              "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3, "save_every_steps": 1,
                        "keep_checkpoints": 5},
              "output_dir": str(tmp_path / "run")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def refused(capsys, *fragments: str) -> str:
    error = capsys.readouterr().err
    assert "Traceback" not in error
    for fragment in fragments:
        assert fragment in error, error
    return error


@pytest.mark.parametrize("override, message", [
    ("train.seed=-1", "train.seed must be in 0 .. 2**32 - 1"),
    ("train.learning_rate=.nan", "config key `train.learning_rate` must be a finite number"),
    ("train.max_grad_norm=.inf", "config key `train.max_grad_norm` must be a finite number"),
    ("data.max_seq_length=4096", "config key `data.max_seq_length` is 4096, but the encoder (bert) has positions for 128"),
    ("data.max_eval_samples=0", "config key `data.max_eval_samples` must be a positive integer"),
    ("data.max_eval_samples=-5", "config key `data.max_eval_samples` must be a positive integer"),
    ("tasks=[rte", "--set tasks: the value '[rte' is not valid YAML"),
    ("train.epochs=three", "config key `train.epochs` must be of type int"),
])
def test_bad_config_values(config_path, capsys, override, message):
    assert main(["train", str(config_path), "--set", override]) == 2
    refused(capsys, message)


def test_output_dir_that_is_a_file(config_path, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(["train", str(config_path), "--set", f"output_dir={tmp_path / 'file'}"]) == 2
    refused(capsys, "is a file, not a directory")
    assert (tmp_path / "file").read_text() == "mine"


def test_output_dir_that_holds_something_else(config_path, tmp_path, capsys):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    for flag in ([], ["--overwrite"], ["--resume"]):
        assert main(["train", str(config_path), "--set", f"output_dir={tmp_path / 'home'}", *flag]) == 2
        refused(capsys, "is not empty and holds no mtdnn run")
    assert (tmp_path / "home" / "notes.txt").read_text() == "mine"


@pytest.fixture
def run(config_path, tmp_path):
    assert main(["train", str(config_path)]) == 0
    return tmp_path / "run"


@pytest.mark.parametrize("arguments, message", [
    (["evaluate", "{ck}", "--split", "validation"], "has a `validation` split"),
    (["evaluate", "{ck}", "--batch-size", "-3"], None),
    (["evaluate", "{ck}", "--max-samples", "0"], None),
    (["evaluate", "{ck}", "--device", "cuda"], "no CUDA GPU is available"),
    (["predict", "{ck}", "--task", "single", "--input", "{inputs}", "--output", "{tmp}/missing/out.tsv"],
     "No such file or directory"),
])
def test_bad_command_line_values(run, tmp_path, capsys, arguments, message):
    inputs = tmp_path / "inputs.tsv"
    inputs.write_text("text\nthe good film\n")
    arguments = [a.format(ck=run / "last", inputs=inputs, tmp=tmp_path) for a in arguments]
    if message is None:  # argparse's own refusal: usage and exit 2
        with pytest.raises(SystemExit) as stopped:
            main(arguments)
        assert stopped.value.code == 2
        refused(capsys, "must be a whole number of at least 1")
    else:
        assert main(arguments) == 2
        refused(capsys, message)


@pytest.mark.parametrize("number, text", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_disk_during_a_save_keeps_the_last_checkpoint(config_path, tmp_path, capsys,
                                                                          monkeypatch, number, text):
    import mtdnn.checkpoint as checkpoint

    original = checkpoint.save_config

    def failing(config, path):
        if path.parent.name == ".step-2.saving":
            raise OSError(number, text, str(path))
        original(config, path)

    monkeypatch.setattr(checkpoint, "save_config", failing)
    assert main(["train", str(config_path)]) == 2
    refused(capsys, text, ".step-2.saving", "files written before this point are intact")
    run = tmp_path / "run"
    assert (run / "last").resolve().name == "step-1"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1"]  # no half-written step-2
    monkeypatch.setattr(checkpoint, "save_config", original)
    assert main(["evaluate", str(run / "last")]) == 0


def test_what_a_run_killed_before_its_first_log_row_left_is_cleared_not_joined(config_path, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("{}")  # the lock and settings are all such a run writes
    (run / "config.yaml").write_text("tasks: [someone-elses]\n")
    (run / "notes.txt").write_text("theirs")
    assert main(["train", str(config_path)]) == 0
    assert not (run / "notes.txt").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 2


def test_a_run_refused_for_bad_input_leaves_the_directory_usable(config_path, tmp_path, capsys):
    assert main(["train", str(config_path), "--set", "data.max_seq_length=4096"]) == 2
    refused(capsys, "max_seq_length")
    assert main(["train", str(config_path)]) == 0


def test_a_second_run_into_a_directory_in_use_is_refused(config_path, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / LOCK_FILE, "a+") as held:  # a run in progress holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        for flag in ([], ["--resume"], ["--overwrite"]):
            assert main(["train", str(config_path), *flag]) == 2
            refused(capsys, "is in use by a running mtdnn run")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_overwrite_clears_the_old_run_wholly(config_path, tmp_path):
    assert main(["train", str(config_path), "--set", "train.max_steps=4"]) == 0
    run = tmp_path / "run"
    assert len(list((run / "checkpoints").iterdir())) == 4
    assert main(["train", str(config_path), "--overwrite"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert (run / "last").resolve().name == "step-2"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(row["step"] for row in rows) == 2  # no row of the old 4-step run
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 2
    assert main(["train", str(config_path), "--resume"]) == 0  # continues the new run, which is complete
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 2


@pytest.mark.parametrize("override, key", [("train.batch_size=4", "train.batch_size"),
                                           ("train.learning_rate=0.5", "train.learning_rate"),
                                           ("tasks=[{name: other, type: regression, text_columns: [a, b], "
                                            "data_files: {train: x.csv}}]", "tasks")])
def test_a_resume_that_would_change_the_run_is_refused_before_anything_is_written(run, config_path, capsys,
                                                                                  override, key):
    before = {path: path.read_bytes() for path in (run / "config.yaml", run / "metrics.jsonl")}
    assert main(["train", str(config_path), "--resume", "--set", override]) == 2
    refused(capsys, f"--resume would change the run in {run}: config key `{key}`")
    assert {path: path.read_bytes() for path in before} == before


def test_a_resume_may_change_how_the_run_is_logged(run, config_path):
    assert main(["train", str(config_path), "--resume", "--set", "train.log_every_steps=7"]) == 0


def test_export_never_writes_into_a_checkpoint_or_over_other_files(run, tmp_path, capsys):
    checkpoint = run / "best"
    weights = load_file(checkpoint / "model.safetensors")
    for target, message in ((checkpoint, "holds an mtdnn checkpoint or run"),
                            (checkpoint / "exported", "is inside the mtdnn checkpoint"),
                            (run, "holds an mtdnn checkpoint or run")):
        assert main(["export", str(checkpoint), "--task", "single", str(target), "--overwrite"]) == 2
        refused(capsys, message)
    assert not (checkpoint / "exported").exists()
    assert load_file(checkpoint / "model.safetensors").keys() == weights.keys()
    (tmp_path / "file").write_text("mine")
    assert main(["export", str(checkpoint), "--task", "single", str(tmp_path / "file")]) == 2
    refused(capsys, "is a file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["export", str(checkpoint), "--task", "single", str(other)]) == 2
    refused(capsys, "is not empty")
    assert main(["export", str(checkpoint), "--task", "single", str(other), "--overwrite"]) == 2
    refused(capsys, "holds no exported model")
    assert (other / "notes.txt").read_text() == "mine"
    exported = tmp_path / "exported"
    assert main(["export", str(checkpoint), "--task", "single", str(exported)]) == 0
    assert main(["export", str(checkpoint), "--task", "single", str(exported)]) == 2
    refused(capsys, "pass --overwrite")
    assert main(["export", str(checkpoint), "--task", "single", str(exported), "--overwrite"]) == 0


def test_a_checkpoints_config_chooses_neither_the_cache_nor_where_finetune_writes(config_path, tmp_path,
                                                                                   monkeypatch):
    """A checkpoint moved (or received) from elsewhere: its config names paths of the machine it came from."""
    theirs = tmp_path / "their-cache"
    assert main(["train", str(config_path), "--set", f"data.cache_dir={theirs}"]) == 0
    cached = sorted(path.name for path in theirs.iterdir())
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "run", moved, symlinks=True)
    shutil.rmtree(tmp_path / "run")
    monkeypatch.setenv("MTDNN_CACHE", str(tmp_path / "our-cache"))
    assert main(["evaluate", str(moved / "best")]) == 0
    assert main(["finetune", str(moved / "best"), "--task", "single", "--set", "train.max_steps=1"]) == 0
    assert (moved / "finetune" / "single" / "last").is_symlink()
    assert not (tmp_path / "run").exists()
    assert sorted(path.name for path in theirs.iterdir()) == cached
    assert any((tmp_path / "our-cache").iterdir())
