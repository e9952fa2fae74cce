"""Settings of stage 1, masked-LM pre-training: typed dataclasses read from YAML like the training config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mtdnn.config import EncoderSettings, OptimizationSettings
from mtdnn.errors import MTDNNError
from mtdnn.yaml_settings import build_settings, read_yaml


@dataclass
class TextSettings:
    text_files: list[str] = field(default_factory=list)
    """Plain-text files (glob patterns allowed), one document or sentence per line; blank lines are skipped."""
    text_from_glue_tasks: list[str] = field(default_factory=list)
    """GLUE tasks whose training sentences (both sides of a pair; labels unused) are added to the text."""
    glue_dir: str | None = None
    """GLUE directory for `text_from_glue_tasks`; None: $GLUE_DIR, then the hub."""
    max_seq_length: int = 128
    """Tokens per example ([CLS] and [SEP] included); longer lines are truncated, or cut when packing."""
    pack_lines: bool = False
    """Concatenate tokenised lines and cut them into blocks of `max_seq_length` (for documents)."""
    max_train_lines: int | None = None
    """Keep the first N training lines after the held-out slice is taken (None: all)."""
    eval_lines: int = 1000
    """Lines held out at random (with `train.seed`) to report the MLM loss and perplexity before and after."""

    def __post_init__(self) -> None:
        if self.max_seq_length < 8:
            raise MTDNNError(f"data.max_seq_length must be at least 8, got {self.max_seq_length}.")
        if self.eval_lines < 0:
            raise MTDNNError(f"data.eval_lines must be 0 or more, got {self.eval_lines}.")


@dataclass
class MaskingSettings:
    probability: float = 0.15
    """Fraction of tokens (or of words, with whole-word masking) chosen for prediction."""
    whole_word_mask: bool = False
    """Mask every sub-word token of a chosen word together (all of them become [MASK])."""

    def __post_init__(self) -> None:
        if not 0.0 < self.probability < 1.0:
            raise MTDNNError(f"mlm.probability must be in (0, 1), got {self.probability}.")


@dataclass
class PretrainSettings(OptimizationSettings):
    """Stage 1: the keys of stage 2's `train` that a masked-LM loop reads, with pre-training's defaults."""
    epochs: int = 1
    """Passes over the training text."""
    batch_size: int = 32
    """Lines (or packed blocks) per mini-batch and per process."""
    eval_batch_size: int = 64
    """Examples per batch of the held-out evaluation."""
    warmup_ratio: float = 0.06
    """Fraction of updates spent warming the learning rate up linearly from 0."""
    seed: int = 42
    """Seed of the held-out split, the batch order, the masks and dropout (each a function of seed and step)."""
    log_every_steps: int = 20
    """Write the running MLM loss to metrics.jsonl every N updates."""
    eval_every_steps: int | None = None
    """Also compute the held-out MLM loss every N updates (it is always computed before and after)."""
    save_every_steps: int | None = 500
    """Write a resumable checkpoint `checkpoints/step-N/` every N updates, `last` linking to the newest (None: only
    at the end of each epoch)."""


@dataclass
class PretrainConfig:
    model: EncoderSettings = field(default_factory=EncoderSettings)
    """The encoder to pre-train: weights to continue from, or (`from_scratch: true`) only its config; not an mtdnn
    checkpoint."""
    data: TextSettings = field(default_factory=TextSettings)
    """Where the text comes from and how it is cut into examples."""
    mlm: MaskingSettings = field(default_factory=MaskingSettings)
    """The masked-LM objective."""
    train: PretrainSettings = field(default_factory=PretrainSettings)
    """Optimisation."""
    output_dir: str = "runs/pretrain"
    """The pre-trained encoder and tokenizer (a `model.name_or_path` for `mtdnn train`), metrics, resumable
    checkpoints `checkpoints/step-N/` and the `last` link to the newest."""

    def __post_init__(self) -> None:
        if not self.data.text_files and not self.data.text_from_glue_tasks:
            raise MTDNNError("no text to pre-train on: set `data.text_files` (plain-text files) and/or "
                             "`data.text_from_glue_tasks` (GLUE task names).")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_pretrain_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PretrainConfig:
    """Read a pre-training YAML config, apply `--set` overrides, validate (unknown keys are errors)."""
    return build_settings(PretrainConfig, read_yaml(path) if path is not None else {}, overrides, path)
