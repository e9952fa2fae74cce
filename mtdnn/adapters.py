"""Bigger encoders on smaller memory: a LoRA adapter (peft), frozen embeddings and layers, and gradient
checkpointing (transformers'), set on every encoder of a multi-task model as the `model` settings ask.

The adapter is injected into the encoder in place (`peft.inject_adapter_in_model`), so the encoder stays the
transformers module it was, with the same state-dict names outside the adapted layers; the heads always train.
"""

from __future__ import annotations

import copy
import dataclasses

from peft import LoraConfig, inject_adapter_in_model
from peft.functional import set_requires_grad
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from mtdnn import task_embeddings
from mtdnn.config import LoraSettings, ModelSettings
from mtdnn.errors import MTDNNError

ADAPTER = "default"  # peft's name for a model's one adapter


def lora_of(encoder: nn.Module) -> LoraSettings | None:
    """The settings of the encoder's LoRA adapter; None when it has none."""
    config = getattr(encoder, "peft_config", {}).get(ADAPTER)
    if config is None:
        return None
    return LoraSettings(r=config.r, alpha=float(config.lora_alpha), dropout=float(config.lora_dropout),
                        target_modules=sorted(config.target_modules))


def add_lora(encoder: nn.Module, settings: LoraSettings) -> None:
    """Inject a fresh adapter, W x + (alpha / r) B A x on each target layer (peft's), with B = 0: the encoder still
    computes what it did. Every encoder weight stops training (`prepare_encoder` says which do)."""
    names = [name for name, _ in encoder.named_modules()]
    unmatched = [target for target in settings.target_modules
                 if not any(name == target or name.endswith(f".{target}") for name in names)]
    if unmatched:  # peft ignores a target that matches nothing as long as another one matches: a typo trains less
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in encoder.named_modules()
                         if isinstance(module, nn.Linear)})
        raise MTDNNError(f"config key `model.lora.target_modules` names `{unmatched[0]}`, which is no layer of this "
                         f"{encoder.config.model_type} encoder; its linear layers are named {', '.join(linear)}.")
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules))
    try:
        inject_adapter_in_model(config, encoder, ADAPTER)
    except ValueError as error:  # e.g. a target that is a LayerNorm, which LoRA cannot adapt
        raise MTDNNError(f"config key `model.lora.target_modules`: peft cannot adapt {settings.target_modules} in "
                         f"this {encoder.config.model_type} encoder ({str(error).splitlines()[0]}); name linear "
                         "layers, e.g. [query, value].") from None


def merge_lora(encoder: nn.Module) -> None:
    """Fold the adapter's update into the weights it adapts and put the plain layers back, in place: a standard
    transformers encoder again. (What peft's `merge_and_unload` does for a `PeftModel`; an adapter injected in
    place has only its layers' own `merge` and `get_base_layer`.)"""
    for name, module in list(encoder.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            encoder.set_submodule(name, module.get_base_layer())
    if hasattr(encoder, "peft_config"):
        del encoder.peft_config


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of `num_hidden_layers` blocks (`encoder.layer` in BERT, RoBERTa, ELECTRA, DeBERTa;
    `transformer.layer` in DistilBERT), found by shape, not by model family."""
    count = getattr(encoder.config, "num_hidden_layers", None)
    stacks = [module for name, module in encoder.named_modules() if isinstance(module, nn.ModuleList)
              and len(module) == count and name.rsplit(".", 1)[-1] in ("layer", "layers")]
    if len(stacks) != 1:
        raise MTDNNError(f"config key `model.freeze_layers`: cannot find the transformer layers of this "
                         f"{encoder.config.model_type} encoder (one list of its num_hidden_layers={count} blocks, as "
                         "BERT's `encoder.layer`); set `model.freeze_layers: 0` for it.")
    return stacks[0]


def freeze(encoder: nn.Module, embeddings: bool, layers: int) -> None:
    """Keep the embeddings (token, position, segment and their LayerNorm) and/or the first `layers` blocks as
    loaded: no gradients, so the optimizer never holds them."""
    if embeddings:  # BERT-family encoders' `embeddings` module; else at least the word embeddings
        module = getattr(encoder, "embeddings", None)
        (module if module is not None else encoder.get_input_embeddings()).requires_grad_(False)
    if layers:
        stack = transformer_layers(encoder)
        if layers > len(stack):
            raise MTDNNError(f"config key `model.freeze_layers` is {layers}, but this {encoder.config.model_type} "
                             f"encoder has {len(stack)} transformer layers; set it to at most {len(stack)}.")
        for block in stack[:layers]:
            block.requires_grad_(False)


def set_checkpointing(encoder: nn.Module, enabled: bool) -> None:
    """transformers' gradient checkpointing of the encoder's layers (active in train mode only).

    Non-reentrant (`use_reentrant=False`, PyTorch's recommended form): the reentrant one cannot take SMART's
    `torch.autograd.grad`, and gives a layer's weights gradients only when its input requires one (frozen
    embeddings, LoRA). The recomputation replays the forward's RNG state, so dropout draws the same masks: the same
    loss and gradients as without."""
    if enabled:
        try:
            encoder.activation_checkpointing_enable({"use_reentrant": False})
        except ValueError as error:
            raise MTDNNError(f"config key `model.gradient_checkpointing`: this {encoder.config.model_type} encoder "
                             f"does not support it ({error}); set it to false.") from None
    elif encoder.is_activation_checkpointing:
        encoder.activation_checkpointing_disable()


def prepare_encoder(encoder: nn.Module, settings: ModelSettings) -> None:
    """Set the adapter, the trainable parameters and checkpointing of one encoder, whatever it had before.

    An adapter other than the one asked for (a checkpoint trained with another, or none asked) is merged into the
    weights first; the one asked for is kept if present (resume, stage 3), else a fresh one is added."""
    wanted = _normal(settings.lora) if settings.lora.r else None
    if lora_of(encoder) != wanted:
        merge_lora(encoder)
        if wanted is not None:
            add_lora(encoder, wanted)
    encoder.requires_grad_(wanted is None)  # with an adapter, only the adapter (and task vectors) train
    if wanted is not None:
        set_requires_grad(encoder, ADAPTER, True)
    table = task_embeddings.table_of(encoder)
    if table is not None:  # new per-task parameters, like the heads: always trained
        table.requires_grad_(True)
    freeze(encoder, settings.freeze_embeddings, settings.freeze_layers)
    set_checkpointing(encoder, settings.gradient_checkpointing)


def prepare_encoders(model, settings: ModelSettings):
    """`model` (an MTDNNModel) with every encoder prepared; under soft sharing each encoder has its own adapter,
    and the sharing penalty ties the adapters (the frozen weights, equal in all, add nothing to it)."""
    for encoder in model.encoders():
        prepare_encoder(encoder, settings)
    return model


def merged(model):
    """A copy of `model` (an MTDNNModel) whose encoders have their adapters merged, for export; `model` itself when
    it has none."""
    if all(lora_of(encoder) is None for encoder in model.encoders()):
        return model
    model = copy.deepcopy(model)
    for encoder in model.encoders():
        merge_lora(encoder)
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters that train, all parameters)."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


def _normal(settings: LoraSettings) -> LoraSettings:
    """`settings` as `lora_of` reads them back from peft (sorted targets, float numbers), to compare the two."""
    return dataclasses.replace(settings, alpha=float(settings.alpha), dropout=float(settings.dropout),
                               target_modules=sorted(set(settings.target_modules)))
