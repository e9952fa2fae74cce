"""The checkpoint of a multi-task model: a self-describing directory that `evaluate`, `predict`, `export` and
`finetune` load (model, tokenizer, the run's resolved config and its trainer state), loaded whole or refused.

How it is written atomically, rotated and resumed is the run's (`mtdnn.run_state`): `last`, `best/` and
`checkpoints/step-N/`. Nothing is ever unpickled on load: weights are safetensors, settings YAML/JSON, optimizer and
RNG state `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from mtdnn.config import Config, load_config, save_config
from mtdnn.errors import MTDNNError
from mtdnn.manifest import REFUSAL_HINT, read_json, verify_files
from mtdnn.model import TASKS_FILE, WEIGHTS_FILE, MTDNNModel
from mtdnn.run_state import CHECKPOINTS, STATE_FILE, TRAINING_STATE_FILE, first_line, write_checkpoint
from mtdnn.tasks import resolve_tasks

__all__ = ["CHECKPOINTS", "CONFIG_FILE", "STATE_FILE", "load_checkpoint", "save_checkpoint", "write_model_files"]

CONFIG_FILE = "mtdnn_config.yaml"
MODEL_FILES = ("config.json", WEIGHTS_FILE, TASKS_FILE)
"""What `MTDNNModel.from_pretrained` reads (and checks against the manifest itself)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""What every tokenizer saves; a checkpoint without a manifest must hold them (without tokenizer.json, transformers
would quietly build a tokenizer of five special tokens)."""


def write_model_files(directory: Path, model: MTDNNModel, tokenizer, config: Config) -> None:
    """The model, its tokenizer and the run's resolved config, into `directory`."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_config(config, directory / CONFIG_FILE)


def save_checkpoint(directory: Path, model: MTDNNModel, tokenizer, config: Config, state: dict) -> None:
    """A loadable checkpoint without optimizer state, written atomically."""
    write_checkpoint(Path(directory), lambda staging: write_model_files(staging, model, tokenizer, config), state)


def load_checkpoint(directory: str | Path) -> tuple[MTDNNModel, object, Config, dict]:
    """Model, tokenizer, the run's resolved config and trainer state of a checkpoint directory, each file checked
    against the checkpoint's manifest first."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MTDNNError(f"checkpoint directory {directory} does not exist.")
    if not (directory / CONFIG_FILE).is_file():
        raise MTDNNError(f"{directory} is not an mtdnn checkpoint (no {CONFIG_FILE}); "
                         "point at the `last/` or `best/` directory of a run.")
    # here every file but the model's (which from_pretrained checks as it reads them, and warns where unverified)
    verify_files(directory, (CONFIG_FILE, *TOKENIZER_FILES), listed_too=True,
                 skip=(*MODEL_FILES, TRAINING_STATE_FILE), warn_unverified=False)
    config = load_config(directory / CONFIG_FILE)
    try:  # its task names become paths too (`finetune --task` names the stage-3 run directory after one)
        resolve_tasks(config.tasks)
    except MTDNNError as error:
        raise MTDNNError(f"{directory / CONFIG_FILE}: {error} {REFUSAL_HINT}") from None
    state = read_json(directory / STATE_FILE) if (directory / STATE_FILE).is_file() else {}
    model = MTDNNModel.from_pretrained(directory)  # before the tokenizer, which reads config.json too
    return model, _load_tokenizer(directory), config, state


def _load_tokenizer(directory: Path):
    """The checkpoint's own tokenizer; files the tokenizer library cannot read are named, not a traceback."""
    for name in (*TOKENIZER_FILES, "special_tokens_map.json", "added_tokens.json"):
        if (directory / name).is_file():
            read_json(directory / name)
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:  # noqa: BLE001 - the library raises KeyError, TypeError... for a damaged file
        raise MTDNNError(f"the tokenizer files of {directory} ({', '.join(TOKENIZER_FILES)}) cannot be read as a "
                         f"tokenizer ({type(error).__name__}: {first_line(error)}). {REFUSAL_HINT}") from error
