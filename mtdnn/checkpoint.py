"""The checkpoint of a multi-task model: a self-describing directory that `evaluate`, `predict`, `export` and
`finetune` load (model, tokenizer, the run's resolved config and its trainer state), loaded whole or refused, with
the model card (README.md) that describes it on the hub.

How it is written atomically, rotated and resumed is the run's (`mtdnn.run_state`): `last`, `best/` and
`checkpoints/step-N/`. Nothing is ever unpickled on load: weights are safetensors, settings YAML/JSON, optimizer and
RNG state `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from mtdnn.config import Config, load_config, save_config
from mtdnn.errors import MTDNNError
from mtdnn.hub import is_hub_id, local_checkpoint
from mtdnn.manifest import REFUSAL_HINT, read_json, verify_files
from mtdnn.model import TASKS_FILE, WEIGHTS_FILE, MTDNNModel
from mtdnn.model_card import CARD_FILE, checkpoint_card
from mtdnn.run_state import CHECKPOINTS, STATE_FILE, TRAINING_STATE_FILE, first_line, write_checkpoint
from mtdnn.tasks import resolve_tasks

__all__ = ["CARD_FILE", "CHECKPOINTS", "CONFIG_FILE", "STATE_FILE", "base_model_of", "load_checkpoint",
           "save_checkpoint", "shared_files", "write_model_files"]

CONFIG_FILE = "mtdnn_config.yaml"
MODEL_FILES = ("config.json", WEIGHTS_FILE, TASKS_FILE)
"""What `MTDNNModel.from_pretrained` reads (and checks against the manifest itself)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""What every tokenizer saves; a checkpoint without a manifest must hold them (without tokenizer.json, transformers
would quietly build a tokenizer of five special tokens)."""


MAX_STAGES = 4
"""How many checkpoints deep `base_model_of` looks (stage 3 starts from stage 2's checkpoint)."""


def write_model_files(directory: Path, model: MTDNNModel, tokenizer, config: Config, state: dict | None = None) -> None:
    """The model, its tokenizer, the run's resolved config and its model card (with the dev metrics of `state`, the
    trainer state, where it has them), into `directory`."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_config(config, directory / CONFIG_FILE)
    card = checkpoint_card(config, model.tasks, state or {}, model.encoder.config.model_type, base_model_of(config))
    card.save(directory / CARD_FILE)


def save_checkpoint(directory: Path, model: MTDNNModel, tokenizer, config: Config, state: dict) -> None:
    """A loadable checkpoint without optimizer state, written atomically."""
    write_checkpoint(Path(directory), lambda staging: write_model_files(staging, model, tokenizer, config, state),
                     state)


def base_model_of(config: Config) -> str | None:
    """The hub id of the encoder a run started from (for its model card): `model.name_or_path`, or, where that is
    an mtdnn checkpoint (stage 3), the one its run started from; None for an encoder in a local directory."""
    name = config.model.name_or_path
    for _ in range(MAX_STAGES):
        saved = Path(name).expanduser() / CONFIG_FILE
        if not saved.is_file():
            break
        try:
            name = load_config(saved).model.name_or_path
        except MTDNNError:  # the card only loses its base model; loading that checkpoint reports the error
            return None
    return name if is_hub_id(name) and not Path(name).expanduser().exists() else None


def shared_files(directory: Path) -> list[str]:
    """The files of a checkpoint that `mtdnn push` uploads: all but the optimizer state (only `--resume` reads it)
    and hidden files (a run's lock, staging leftovers)."""
    return sorted(path.name for path in Path(directory).iterdir()
                  if path.is_file() and path.name != TRAINING_STATE_FILE and not path.name.startswith("."))


def load_checkpoint(directory: str | Path) -> tuple[MTDNNModel, object, Config, dict]:
    """Model, tokenizer, the run's resolved config and trainer state of a checkpoint directory (or of a hub id, which
    is downloaded to the hub cache), each file checked against the checkpoint's manifest first."""
    directory = local_checkpoint(directory, CONFIG_FILE, skip=(TRAINING_STATE_FILE,))
    if not directory.is_dir():
        raise MTDNNError(f"checkpoint directory {directory} does not exist.")
    if not (directory / CONFIG_FILE).is_file():
        raise MTDNNError(f"{directory} is not an mtdnn checkpoint (no {CONFIG_FILE}); "
                         "point at the `last/` or `best/` directory of a run.")
    # here every file but the model's (which from_pretrained checks as it reads them, and warns where unverified)
    verify_files(directory, (CONFIG_FILE, *TOKENIZER_FILES), listed_too=True,  # a card may be edited, e.g. on the hub
                 skip=(*MODEL_FILES, TRAINING_STATE_FILE, CARD_FILE), warn_unverified=False)
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
