"""A checkpoint is loaded whole or refused: missing, truncated, altered or malformed files end in a clear error
(exit 2, the file named, no traceback) and nothing is predicted or trained from them."""

import json
import logging
import shutil

import pytest
import yaml

from mtdnn.checkpoint import load_checkpoint
from mtdnn.cli import main
from mtdnn.errors import MTDNNError
from mtdnn.manifest import MANIFEST_FILE


def delete(path):
    path.unlink()


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_last_byte(path):
    """Same size, so only the hash can tell (the end of a safetensors file is tensor data, not its header)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def malformed_json(path):
    path.write_text('{"unfinished": [1, 2')


def malformed_yaml(path):
    path.write_text("model: {name_or_path: [unclosed\n")


def _predict(checkpoint, tmp_path):
    return ["predict", str(checkpoint), "--tasks", "single", "--output-dir", str(tmp_path / "predictions")]


COMMANDS = {
    "evaluate": lambda checkpoint, tmp_path: ["evaluate", str(checkpoint), "--tasks", "single"],
    "predict": _predict,
    "export": lambda checkpoint, tmp_path: ["export", str(checkpoint), str(tmp_path / "predictions"), "--task",
                                            "single"],
}

# (file, tampering, command); every file a checkpoint holds is read by every command, so each case picks one
CASES = [
    ("tokenizer.json", delete, "evaluate"),
    ("tokenizer.json", delete, "predict"),
    ("tokenizer.json", malformed_json, "predict"),
    ("tokenizer_config.json", malformed_json, "evaluate"),
    ("tokenizer_config.json", delete, "export"),
    ("model.safetensors", truncate, "evaluate"),
    ("model.safetensors", flip_last_byte, "predict"),
    ("model.safetensors", delete, "export"),
    ("mtdnn_tasks.json", malformed_json, "evaluate"),
    ("config.json", malformed_json, "export"),
    ("config.json", delete, "predict"),
    ("trainer_state.json", malformed_json, "evaluate"),
    ("mtdnn_config.yaml", malformed_yaml, "predict"),
    (MANIFEST_FILE, malformed_json, "evaluate"),
]


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    """A copy of the session's checkpoint, to tamper with."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")


def _refused(arguments, capsys, name):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert name in error and "Traceback" not in error
    return error


@pytest.mark.parametrize("name, tamper, command", CASES, ids=lambda value: getattr(value, "__name__", value))
def test_tampered_checkpoint_is_refused(checkpoint, tmp_path, capsys, name, tamper, command):
    tamper(checkpoint / name)
    _refused(COMMANDS[command](checkpoint, tmp_path), capsys, name)
    assert not (tmp_path / "predictions").exists()


@pytest.mark.parametrize("name, tamper", [
    ("tokenizer.json", delete), ("tokenizer_config.json", delete), ("config.json", delete),
    ("mtdnn_tasks.json", delete), ("tokenizer.json", malformed_json), ("model.safetensors", truncate),
    ("mtdnn_tasks.json", malformed_json), ("trainer_state.json", malformed_json),
], ids=lambda value: getattr(value, "__name__", value))
def test_checkpoint_without_a_manifest_must_still_be_complete_and_readable(checkpoint, tmp_path, capsys, name,
                                                                           tamper):
    (checkpoint / MANIFEST_FILE).unlink()  # as an older mtdnn wrote it
    tamper(checkpoint / name)
    _refused(_predict(checkpoint, tmp_path), capsys, name)
    assert not (tmp_path / "predictions").exists()


def test_checkpoint_without_a_manifest_loads_with_a_warning(checkpoint, caplog):
    (checkpoint / MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        model, tokenizer, _, state = load_checkpoint(checkpoint)
    assert "cannot be verified" in caplog.text and str(checkpoint) in caplog.text
    assert set(model.tasks) == {"single", "pair", "score", "rank"} and state == {"step": 0}
    assert tokenizer.convert_tokens_to_ids("movie") != tokenizer.unk_token_id  # the checkpoint's own vocabulary


def test_manifest_lists_every_file_with_size_and_hash(tiny_checkpoint):
    manifest = json.loads((tiny_checkpoint / MANIFEST_FILE).read_text())
    files = {path.name for path in tiny_checkpoint.iterdir() if path.name != MANIFEST_FILE}
    assert set(manifest["files"]) == files >= {"config.json", "model.safetensors", "mtdnn_tasks.json",
                                               "mtdnn_config.yaml", "tokenizer.json", "tokenizer_config.json"}
    weights = manifest["files"]["model.safetensors"]
    assert weights["size"] == (tiny_checkpoint / "model.safetensors").stat().st_size and len(weights["sha256"]) == 64


def test_a_file_the_manifest_lists_but_the_model_does_not_read_is_still_checked(checkpoint):
    (checkpoint / "tokenizer_config.json").write_text((checkpoint / "tokenizer_config.json").read_text() + " ")
    with pytest.raises(MTDNNError, match="tokenizer_config.json"):
        load_checkpoint(checkpoint)


def unknown_position_key(path):
    state = json.loads(path.read_text())
    state["position"]["stage"] = 2
    path.write_text(json.dumps(state))


# --- resuming: training_state.pt is listed in the step checkpoint's manifest and checked by `--resume`


@pytest.fixture(scope="module")
def stopped_run(tiny_model_dir, task_files, tmp_path_factory):
    """A run of 3 steps with a resumable checkpoint at step 2, and its config."""
    directory = tmp_path_factory.mktemp("stopped")
    config = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": [task_files["single"]],
              "data": {"max_seq_length": 32},
              "train": {"max_steps": 3, "batch_size": 8, "save_every_steps": 2, "keep_checkpoints": 3}}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--set", f"output_dir={directory / 'run'}"]) == 0
    return directory / "run", path


@pytest.mark.parametrize("with_manifest, name, tamper", [
    (True, "training_state.pt", truncate), (True, "training_state.pt", flip_last_byte),
    (True, "trainer_state.json", malformed_json),
    # without a manifest, a flipped byte in the optimizer state cannot be told; a file that does not parse can
    (False, "training_state.pt", truncate), (False, "trainer_state.json", malformed_json),
    (False, "trainer_state.json", unknown_position_key),
], ids=lambda value: getattr(value, "__name__", {True: "manifest", False: "no-manifest"}.get(value, value)))
def test_resume_from_a_tampered_training_state_is_refused(stopped_run, tmp_path, capsys, with_manifest, name,
                                                          tamper):
    run, config = stopped_run
    copy = shutil.copytree(run, tmp_path / "run", symlinks=True)
    step = copy / "checkpoints" / "step-2"
    if not with_manifest:
        (step / MANIFEST_FILE).unlink()
    shutil.rmtree(copy / "checkpoints" / "step-3")  # resume from step 2
    tamper(step / name)
    before = (copy / "metrics.jsonl").read_text()
    _refused(["train", str(config), "--set", f"output_dir={copy}", "--resume"], capsys, name)
    assert not (copy / "checkpoints" / "step-3").exists() and (copy / "metrics.jsonl").read_text() == before


def test_best_checkpoint_loads_without_the_training_state_its_manifest_lists(stopped_run):
    run, _ = stopped_run
    assert not (run / "best" / "training_state.pt").exists()
    assert "training_state.pt" in json.loads((run / "best" / MANIFEST_FILE).read_text())["files"]
    load_checkpoint(run / "best")
