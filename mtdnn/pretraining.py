"""Stage 1: masked-LM pre-training of the encoder, from scratch or continued, on the run loop every stage shares.

The output directory is an ordinary transformers model directory with its tokenizer, usable as
`model.name_or_path` for `mtdnn train`. It holds the masked-LM weights plus the encoder weights a masked-LM
model leaves out (BERT's pooler), so that `AutoModel` loads every weight of the encoder from it.
While it runs, `checkpoints/step-N/` (and `last`) hold that model directory with the state `--resume` needs, as in
every stage; they are removed once the run is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForMaskedLM, get_linear_schedule_with_warmup

from mtdnn.errors import MTDNNError
from mtdnn.manifest import verify_files
from mtdnn.mlm_data import MaskedText, read_text, tokenize_text
from mtdnn.model import shared_encoder
from mtdnn.optimization import build_optimizer
from mtdnn.pretrain_config import PretrainConfig
from mtdnn.pretrained import check_sequence_length, load_tokenizer, resolve
from mtdnn.run_loop import Position, RunLog, StepLoss, process_share, restore, run_loop, save_step, start_run
from mtdnn.run_state import remove_checkpoints
from mtdnn.sampling import task_batches

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
KEEP_CHECKPOINTS = 1
"""Stage 1 keeps its newest checkpoint only: the run's product is the model directory written at its end."""


def load_masked_lm(name_or_path: str, from_scratch: bool, attn_implementation: str | None):
    """A masked-LM model: pre-trained weights (a missing MLM head starts random), or random from the config.

    Every encoder weight must be found: a directory whose weights are named otherwise (an mtdnn multi-task
    checkpoint, say) would otherwise give a silently random encoder.
    """
    source = resolve(name_or_path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        if from_scratch:
            return AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(source), **kwargs)
        model, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as error:
        raise MTDNNError(f"cannot load `{name_or_path}` as a masked-LM model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); `model.name_or_path` must be a local "
                         "directory or hub id of an encoder with a masked-LM class (BERT, RoBERTa, ...).") from None
    missing = [key for key in info["missing_keys"] if key.startswith(f"{model.base_model_prefix}.")]
    if missing:
        raise MTDNNError(f"`{name_or_path}` lacks {len(missing)} encoder weights ({', '.join(missing[:3])}, ...); "
                         "give a transformers model directory (an mtdnn checkpoint is not one), or set "
                         "`model.from_scratch: true` to start from random weights.")
    if info["missing_keys"]:
        logger.info("the masked-LM head of %s starts random (%s)", name_or_path,
                    ", ".join(sorted(info["missing_keys"])))
    return model


def encoder_extras(model, encoder) -> dict[str, torch.Tensor]:
    """Weights of the plain encoder that the masked-LM model lacks (BERT's pooler), under its prefix."""
    base = model.base_model.state_dict()
    return {f"{model.base_model_prefix}.{name}": tensor.detach().cpu().contiguous()
            for name, tensor in encoder.state_dict().items() if name not in base}


def save_model_dir(directory: Path, model, tokenizer, extras: dict[str, torch.Tensor]) -> None:
    """`save_pretrained` of the masked-LM model and tokenizer, with `extras` added to the weights file."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    weights = directory / WEIGHTS_FILE
    if extras and weights.is_file():
        save_file({**load_file(weights), **extras}, weights, metadata={"format": "pt"})
    elif extras:
        logger.warning("%s is sharded; the encoder's %s were not added", directory, ", ".join(extras))


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The torch seed of one mini-batch (its masks and dropout): a resumed run repeats them exactly."""
    return int(np.random.SeedSequence([seed, epoch, batch]).generate_state(1)[0])


@torch.inference_mode()
def mlm_loss(model, batches: list[dict], accelerator: Accelerator) -> dict[str, float]:
    """Mean loss per masked token over `batches` (shared out across processes) and its perplexity."""
    # Not through DDP's wrapper, whose forward broadcasts the buffers: a collective the process with fewer batches
    # never joins (a hang at the first evaluation when the batches do not divide evenly among the processes).
    model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=accelerator.device)  # (summed loss, masked tokens)
    for batch in batches[accelerator.process_index :: accelerator.num_processes]:
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        masked = (batch["labels"] != -100).sum()
        totals += torch.stack([model(**batch).loss.float() * masked, masked.float()])
    model.train(was_training)
    loss_sum, tokens = accelerator.reduce(totals, reduction="sum").tolist()
    loss = loss_sum / max(tokens, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "masked_tokens": int(tokens)}


def load_data(config: PretrainConfig, tokenizer) -> tuple[MaskedText, list[dict], int]:
    """Training examples; the held-out lines masked once (the same masks before and after); their number."""
    train_text, held_out = read_text(config.data, config.train.seed)
    whole_word = config.mlm.whole_word_mask
    train_data = MaskedText(tokenize_text(train_text, tokenizer, config.data, whole_word), tokenizer, config.mlm)
    if held_out is None:
        return train_data, [], 0
    eval_data = MaskedText(tokenize_text(held_out, tokenizer, config.data, whole_word), tokenizer, config.mlm)
    return train_data, eval_data.fixed_batches(config.train.eval_batch_size, config.train.seed), len(held_out)


def masked_token_weight(masked: int, accelerator: Accelerator) -> float:
    """The weight of this process's mean loss (over its `masked` tokens; 0 for a process with no example of the
    batch) that makes the processes' average gradient the whole batch's mean over every masked token, as one
    process would compute it: masked tokens here x processes / masked tokens in the batch. Each process masks its
    own share, so the counts differ even where the examples are shared evenly."""
    total = int(accelerator.reduce(torch.tensor([masked], device=accelerator.device), reduction="sum").item())
    return masked * accelerator.num_processes / total if total else 0.0


def epoch_batches(data: MaskedText, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Example indices of each mini-batch of an epoch: similar lengths together, batches in random order."""
    rng = np.random.default_rng([seed, epoch])
    batches = task_batches(data.lengths(), batch_size, rng)
    return [batches[i] for i in rng.permutation(len(batches))]


def pretrain(config: PretrainConfig, overwrite: bool = False, resume: bool = False) -> dict:
    """Masked-LM training on `config.data`'s text; returns the held-out MLM loss before and after."""
    settings, output_dir = config.train, Path(config.output_dir)
    started = start_run(settings, output_dir, config.to_dict(), "pretrain_config.yaml", overwrite, resume)
    accelerator, resume_from = started.accelerator, started.resume_from
    tokenizer = load_tokenizer(str(resume_from or config.model.tokenizer or config.model.name_or_path))
    if tokenizer.mask_token is None:
        raise MTDNNError(f"the tokenizer of `{config.model.name_or_path}` has no mask token; it cannot be used for "
                         "masked-LM pre-training.")
    if resume_from is not None:
        verify_files(resume_from, (WEIGHTS_FILE,), listed_too=True)
    source, from_scratch = str(resume_from or config.model.name_or_path), config.model.from_scratch and not resume_from
    with contextlib.suppress(OSError, ValueError):  # before tokenising; an unreadable model is reported below
        check_sequence_length(config.data.max_seq_length, AutoConfig.from_pretrained(resolve(source)))
    train_data, eval_batches, held_out_lines = load_data(config, tokenizer)
    model = load_masked_lm(source, from_scratch, config.model.attn_implementation)
    extras = encoder_extras(model, shared_encoder(source, from_scratch))

    global_batch = settings.batch_size * accelerator.num_processes
    updates_per_epoch = max(1, -(-len(train_data) // global_batch) // settings.gradient_accumulation_steps)
    total_updates = settings.max_steps or updates_per_epoch * settings.epochs
    epochs = math.ceil(total_updates / updates_per_epoch)
    optimizer = build_optimizer(model, settings)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_updates), total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)
    log = RunLog(output_dir / "metrics.jsonl", accelerator)
    at, before = Position(), None
    if resume_from is not None:
        at, state = restore(resume_from, optimizer, scheduler, log)
        before = state["before"]
    if before is None and eval_batches:
        before = mlm_loss(model, eval_batches, accelerator)
        log.write({"type": "eval", "step": 0, **before})
        logger.info("held-out MLM loss before: %.4f (perplexity %.2f)", before["loss"], before["perplexity"])
    stage = MaskedLMStage(accelerator, model, optimizer, scheduler, config, tokenizer, extras, train_data,
                          eval_batches, log, before)
    run_loop(accelerator, model, optimizer, scheduler, stage, at, settings, log, (total_updates, epochs), "pretrain")

    after = mlm_loss(model, eval_batches, accelerator) if eval_batches else None
    result = {"output_dir": str(output_dir), "step": at.step, "held_out_lines": held_out_lines,
              "before": before, "after": after}
    if accelerator.is_main_process:
        save_model_dir(output_dir, accelerator.unwrap_model(model), tokenizer, extras)
        log.write({"type": "eval", "step": at.step, **(after or {})})
        (output_dir / "mlm_eval.json").write_text(json.dumps(result, indent=2))
        remove_checkpoints(output_dir)  # the run is complete: nothing to resume
    log.close()
    accelerator.wait_for_everyone()
    return result


class MaskedLMStage:
    """Stage 1 for the run loop: batches of similar lengths, each with its own masks, and the held-out loss."""

    def __init__(self, accelerator, model, optimizer, scheduler, config: PretrainConfig, tokenizer, extras: dict,
                 train_data: MaskedText, eval_batches: list[dict], log: RunLog, before: dict | None):
        self.accelerator, self.model, self.optimizer, self.scheduler = accelerator, model, optimizer, scheduler
        self.config, self.settings, self.tokenizer, self.extras = config, config.train, tokenizer, extras
        self.train_data, self.eval_batches, self.log, self.before = train_data, eval_batches, log, before

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(self.train_data, self.settings.batch_size * self.accelerator.num_processes,
                             self.settings.seed, epoch)

    def loss(self, batch: np.ndarray, epoch: int, index: int) -> StepLoss:
        accelerator = self.accelerator
        indices, weight = process_share(batch, accelerator.process_index, accelerator.num_processes)
        torch.manual_seed(batch_seed(self.settings.seed, epoch, index * accelerator.num_processes
                                     + accelerator.process_index))
        inputs = {key: value.to(accelerator.device) for key, value in self.train_data.collate(indices).items()}
        masked = int((inputs["labels"] != -100).sum()) if weight > 0 else 0
        if accelerator.num_processes > 1:
            weight = masked_token_weight(masked, accelerator)
        output = self.model(**inputs)
        if not masked:
            # transformers' mean over no token is NaN: this share adds no gradient (its loss is logged as 0; where no
            # process has a masked token the update still decays the weights and advances the schedule)
            return StepLoss(output.logits.sum() * 0.0, 0.0, len(batch), {})
        return StepLoss(output.loss, weight, len(batch), {})

    def after_update(self, at: Position, total_updates: int) -> bool:
        if self.settings.eval_every_steps and at.step % self.settings.eval_every_steps == 0 and self.eval_batches:
            self.log.write({"type": "eval", "step": at.step, **mlm_loss(self.model, self.eval_batches,
                                                                         self.accelerator)})
        if self.settings.save_every_steps and at.step % self.settings.save_every_steps == 0:
            self.save(at)
        return False

    def after_epoch(self, at: Position, total_updates: int) -> bool:
        if at.step < total_updates:  # the last one is the model directory `pretrain` writes
            self.save(at)
        return False

    def save(self, at: Position) -> Path:
        model = self.accelerator.unwrap_model(self.model)
        return save_step(self.accelerator, Path(self.config.output_dir), at,
                         lambda staging: save_model_dir(staging, model, self.tokenizer, self.extras),
                         {"before": self.before}, self.optimizer, self.scheduler, KEEP_CHECKPOINTS)
