"""Soft parameter sharing: the penalty by hand, groups, one encoder per group, save/load and evaluation."""

import pytest
import torch
from torch import nn
from transformers import BertModel

from conftest import tiny_bert_config
from mtdnn.errors import MTDNNError
from mtdnn.model import MTDNNModel
from mtdnn.sharing import resolve_groups, soft_sharing_penalty
from mtdnn.tasks import GLUE_TASKS


def test_penalty_equals_a_hand_computed_value():
    encoders = [nn.Linear(2, 1), nn.Linear(2, 1), nn.Linear(2, 1)]
    weights, biases = [[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]], [0.0, 3.0, 3.0]
    for encoder, weight, bias in zip(encoders, weights, biases):
        encoder.weight.data = torch.tensor([weight])
        encoder.bias.data = torch.tensor([bias])
    # means: weight (2, 3), bias 2; squared distances: (1+1) + (1+1) + (0+4) for weights, 4 + 1 + 1 for biases
    assert soft_sharing_penalty(encoders).item() == pytest.approx(8.0 + 6.0)
    assert soft_sharing_penalty(encoders[:1]).item() == 0.0
    penalty = soft_sharing_penalty(encoders[:2])
    penalty.backward()
    torch.testing.assert_close(encoders[0].weight.grad, 2 * (encoders[0].weight.data - torch.tensor([[2.0, 2.0]])))


def test_groups_default_to_one_encoder_per_task_and_name_mistakes():
    tasks = {name: GLUE_TASKS[name] for name in ("mnli", "mnli_mismatched", "rte", "stsb", "cola")}
    assert resolve_groups(tasks, None) == [["mnli"], ["rte"], ["stsb"], ["cola"]]
    assert resolve_groups(tasks, [["rte", "mnli"], "cola"]) == [["rte", "mnli"], ["cola"], ["stsb"]]
    with pytest.raises(MTDNNError, match="names `mnli_mismatched`"):
        resolve_groups(tasks, [["mnli_mismatched"]])
    with pytest.raises(MTDNNError, match="`rte` is in two groups"):
        resolve_groups(tasks, [["rte"], ["rte", "cola"]])


def test_soft_shared_model_routes_tasks_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    tasks = {name: GLUE_TASKS[name] for name in ("mnli", "mnli_mismatched", "rte", "stsb")}
    model = MTDNNModel(BertModel(tiny_bert_config()), tasks, encoder_groups=[["mnli", "rte"], ["stsb"]])
    assert model.encoder_for("rte") is model.encoder and model.encoder_for("stsb") is model.group_encoders["stsb"]
    assert model.sharing_penalty().item() == 0.0  # the copies start equal
    delta = 0.1 * torch.randn(99, 32)
    with torch.no_grad():
        model.group_encoders["stsb"].embeddings.word_embeddings.weight.add_(delta)
    assert model.sharing_penalty().item() == pytest.approx(2 * (delta / 2).pow(2).sum().item(), rel=1e-4)
    inputs = {"input_ids": torch.randint(5, 99, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long)}
    model.eval()
    shared = model.encode(**inputs)
    assert torch.equal(model("mnli", **inputs).logits, model.heads["mnli"](shared))
    assert not torch.allclose(model("stsb", **inputs).logits, model.heads["stsb"](shared))
    model.save_pretrained(tmp_path)
    loaded = MTDNNModel.from_pretrained(tmp_path).eval()
    assert loaded.encoder_groups == [["mnli", "rte"], ["stsb"]]
    for task in ("mnli", "stsb"):
        torch.testing.assert_close(loaded(task, **inputs).logits, model(task, **inputs).logits)
