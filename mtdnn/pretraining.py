"""Stage 1: masked-LM pre-training of the encoder, from scratch or continued, as one explicit accelerate loop.

The output directory is an ordinary transformers model directory with its tokenizer, usable as
`model.name_or_path` for `mtdnn train`. It holds the masked-LM weights plus the encoder weights a masked-LM
model leaves out (BERT's pooler), so that `AutoModel` loads every weight of the encoder from it.
Resumable checkpoints hold only safetensors and JSON: nothing is unpickled on `--resume`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForMaskedLM, get_linear_schedule_with_warmup

from mtdnn.errors import MTDNNError, StoppedBySignal
from mtdnn.mlm_data import MaskedText, read_text, tokenize_text
from mtdnn.model import shared_encoder
from mtdnn.optimization import build_optimizer
from mtdnn.pretrain_config import PretrainConfig
from mtdnn.pretrained import check_sequence_length, load_tokenizer, resolve
from mtdnn.run_dir import RunDirectory
from mtdnn.sampling import task_batches
from mtdnn.training import SignalCatcher, apply_gradients, check_distribution, process_share, whole_windows

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class Position:
    epoch: int = 0
    batch_in_epoch: int = 0  # mini-batches of this epoch already consumed
    step: int = 0  # optimizer updates so far


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


def save_checkpoint(directory: Path, model, tokenizer, extras, optimizer, scheduler, state: dict) -> None:
    """A resumable checkpoint, written beside its place and renamed in (a crash never leaves half of one)."""
    staging = directory.parent / f".{directory.name}.saving"
    shutil.rmtree(staging, ignore_errors=True)
    save_model_dir(staging, model, tokenizer, extras)
    optimizer_state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value.detach().cpu().contiguous()
               for index, values in optimizer_state["state"].items() for name, value in values.items()}
    save_file(tensors, staging / OPTIMIZER_FILE)
    state = {**state, "param_groups": optimizer_state["param_groups"], "scheduler": scheduler.state_dict()}
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)


def load_optimizer_state(directory: Path, optimizer, scheduler) -> dict:
    """Restore optimizer and scheduler from safetensors + JSON; returns the saved trainer state."""
    state = json.loads((directory / STATE_FILE).read_text())
    per_parameter: dict[int, dict] = {}
    for key, tensor in load_file(directory / OPTIMIZER_FILE).items():
        index, name = key.split(".", 1)
        per_parameter.setdefault(int(index), {})[name] = tensor
    groups = [{key: tuple(value) if key == "betas" else value for key, value in group.items()}
              for group in state.pop("param_groups")]
    optimizer.load_state_dict({"state": per_parameter, "param_groups": groups})
    scheduler.load_state_dict(state.pop("scheduler"))
    return state


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The torch seed of one mini-batch (its masks and dropout): a resumed run repeats them exactly."""
    return int(np.random.SeedSequence([seed, epoch, batch]).generate_state(1)[0])


@torch.inference_mode()
def mlm_loss(model, batches: list[dict], accelerator: Accelerator) -> dict[str, float]:
    """Mean loss per masked token over `batches` (shared out across processes) and its perplexity."""
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


def truncate_log(output_dir: Path) -> None:
    """On resume: drop the log rows after the checkpoint's step, which the resumed run writes again."""
    log = output_dir / "metrics.jsonl"
    if log.exists():
        step = json.loads((output_dir / CHECKPOINT / STATE_FILE).read_text())["position"]["step"]
        rows = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
        log.write_text("".join(row + "\n" for row in rows))


def load_data(config: PretrainConfig, tokenizer) -> tuple[MaskedText, list[dict], int]:
    """Training examples; the held-out lines masked once (the same masks before and after); their number."""
    train_text, held_out = read_text(config.data, config.train.seed)
    whole_word = config.mlm.whole_word_mask
    train_data = MaskedText(tokenize_text(train_text, tokenizer, config.data, whole_word), tokenizer, config.mlm)
    if held_out is None:
        return train_data, [], 0
    eval_data = MaskedText(tokenize_text(held_out, tokenizer, config.data, whole_word), tokenizer, config.mlm)
    return train_data, eval_data.fixed_batches(config.train.eval_batch_size, config.train.seed), len(held_out)


def epoch_batches(data: MaskedText, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Example indices of each mini-batch of an epoch: similar lengths together, batches in random order."""
    rng = np.random.default_rng([seed, epoch])
    batches = task_batches(data.lengths(), batch_size, rng)
    return [batches[i] for i in rng.permutation(len(batches))]


def pretrain(config: PretrainConfig, overwrite: bool = False, resume: bool = False) -> dict:
    """Masked-LM training on `config.data`'s text; returns the held-out MLM loss before and after."""
    settings = config.train
    accelerator = Accelerator(mixed_precision=settings.mixed_precision,
                              gradient_accumulation_steps=settings.gradient_accumulation_steps)
    check_distribution(accelerator.distributed_type)
    output_dir = Path(config.output_dir)
    resume_from = output_dir / CHECKPOINT if resume and (output_dir / CHECKPOINT / STATE_FILE).is_file() else None
    run = RunDirectory(output_dir, "pretrain_config.yaml")
    if accelerator.is_main_process:  # --resume without a checkpoint yet (stopped before the first save) starts again
        if run.claim(config.to_dict(), overwrite, resume, resume_from is not None):
            truncate_log(output_dir)
    accelerator.wait_for_everyone()
    set_seed(settings.seed)
    tokenizer = load_tokenizer(str(resume_from or config.model.tokenizer or config.model.name_or_path))
    if tokenizer.mask_token is None:
        raise MTDNNError(f"the tokenizer of `{config.model.name_or_path}` has no mask token; it cannot be used for "
                         "masked-LM pre-training.")
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
    at, before = Position(), None
    if resume_from is not None:
        saved = load_optimizer_state(resume_from, optimizer, scheduler)
        at, before = Position(**saved["position"]), saved["before"]
        logger.info("resuming from %s (step %d)", resume_from, at.step)
    log = MetricsLog(output_dir / "metrics.jsonl", accelerator.is_main_process)
    if before is None and eval_batches:
        before = mlm_loss(model, eval_batches, accelerator)
        log.write({"type": "eval", "step": 0, **before})
        logger.info("held-out MLM loss before: %.4f (perplexity %.2f)", before["loss"], before["perplexity"])

    def save() -> Path:
        if accelerator.is_main_process:
            save_checkpoint(output_dir / CHECKPOINT, accelerator.unwrap_model(model), tokenizer, extras, optimizer,
                            scheduler, {"position": asdict(at), "before": before})
        accelerator.wait_for_everyone()
        return output_dir / CHECKPOINT

    progress = tqdm(total=total_updates, initial=at.step, desc="pretrain",
                    disable=not accelerator.is_local_main_process)
    started, examples, signals = time.perf_counter(), 0, SignalCatcher()
    model.train()
    try:
        while at.step < total_updates and at.epoch < epochs:
            batches = epoch_batches(train_data, global_batch, settings.seed, at.epoch)
            usable = whole_windows(len(batches), settings.gradient_accumulation_steps)
            while at.batch_in_epoch < usable and at.step < total_updates:
                indices, weight = process_share(batches[at.batch_in_epoch], accelerator.process_index,
                                                accelerator.num_processes)
                torch.manual_seed(batch_seed(settings.seed, at.epoch, at.batch_in_epoch * accelerator.num_processes
                                             + accelerator.process_index))
                at.batch_in_epoch += 1
                batch = {key: value.to(accelerator.device) for key, value in train_data.collate(indices).items()}
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    apply_gradients(accelerator, model, optimizer, loss * weight, settings.max_grad_norm)
                examples += len(indices) if weight else 0
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                at.step += 1
                progress.update(1)
                speed = examples / (time.perf_counter() - started)
                progress.set_postfix(loss=f"{loss.item():.4f}", ex_per_s=f"{speed:.0f}")
                if at.step % settings.log_every_steps == 0:
                    log.write({"type": "train", "epoch": at.epoch, "step": at.step, "loss": loss.item(),
                               "learning_rate": scheduler.get_last_lr()[0]})
                if settings.eval_every_steps and at.step % settings.eval_every_steps == 0 and eval_batches:
                    log.write({"type": "eval", "step": at.step, **mlm_loss(model, eval_batches, accelerator)})
                if settings.save_every_steps and at.step % settings.save_every_steps == 0 and at.step < total_updates:
                    save()
                if signals.stop_now(accelerator) and at.step < total_updates:
                    raise StoppedBySignal(signals.received or signal.SIGTERM, save())
            if at.batch_in_epoch == usable:
                at.epoch, at.batch_in_epoch = at.epoch + 1, 0
                if at.step < total_updates:
                    save()
    finally:
        signals.restore()
        progress.close()

    after = mlm_loss(model, eval_batches, accelerator) if eval_batches else None
    result = {"output_dir": str(output_dir), "step": at.step, "held_out_lines": held_out_lines,
              "before": before, "after": after}
    if accelerator.is_main_process:
        save_model_dir(output_dir, accelerator.unwrap_model(model), tokenizer, extras)
        log.write({"type": "eval", "step": at.step, **(after or {})})
        (output_dir / "mlm_eval.json").write_text(json.dumps(result, indent=2))
        shutil.rmtree(output_dir / CHECKPOINT, ignore_errors=True)  # the run is complete: nothing to resume
    accelerator.wait_for_everyone()
    return result


class MetricsLog:
    """One JSON object per line in `metrics.jsonl` (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
