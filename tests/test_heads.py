"""Heads start as transformers' classifiers; the SAN answer module: step dropout keeps at least one step,
training averages the kept steps, inference all."""

from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertModel

from conftest import tiny_bert_config
from mtdnn import heads
from mtdnn.errors import MTDNNError
from mtdnn.heads import LinearHead, SANHead, initializer_range_of, step_keep_mask
from mtdnn.model import MTDNNModel
from mtdnn.tasks import GLUE_TASKS, TaskSpec


def test_every_linear_layer_of_a_head_starts_normal_with_the_encoders_std_and_zero_bias():
    # 0.5: far from PyTorch's default, uniform(+-1/sqrt(fan_in)) (std 0.10 for fan_in 32), so no chance match
    config = BertConfig(**{**tiny_bert_config().to_dict(), "initializer_range": 0.5})
    rte = TaskSpec.from_dict({**GLUE_TASKS["rte"].to_dict(), "answer_module": "san"})
    torch.manual_seed(0)
    model = MTDNNModel(BertModel(config), {"stsb": GLUE_TASKS["stsb"], "cola": GLUE_TASKS["cola"], "rte": rte})
    assert isinstance(model.heads["stsb"], LinearHead) and isinstance(model.heads["rte"], SANHead)
    linears = [(name, module) for name, module in model.heads.named_modules() if isinstance(module, torch.nn.Linear)]
    assert {name for name, _ in linears} == {"stsb.out_proj", "cola.out_proj", "rte.summary", "rte.bilinear",
                                             "rte.classifier"}
    for name, layer in linears:
        assert layer.weight.mean().abs() < 0.35, name  # a 32-value mean of N(0, 0.5) has std 0.09
        assert 0.3 < layer.weight.std() < 0.7, name
        assert layer.bias is None or not layer.bias.any(), name
    bound = 32 ** -0.5  # the GRU cell keeps PyTorch's uniform(+-1/sqrt(hidden))
    assert all(parameter.abs().max() <= bound for parameter in model.heads["rte"].gru.parameters())


def test_initializer_range_falls_back_to_transformers_default():
    assert initializer_range_of(SimpleNamespace(initializer_range=0.1)) == 0.1
    assert initializer_range_of(SimpleNamespace()) == 0.02
    assert initializer_range_of(SimpleNamespace(initializer_range=None)) == 0.02


def test_head_initialisation_is_seeded():
    heads = []
    for _ in range(2):
        torch.manual_seed(3)
        heads.append(SANHead(16, 3))
    for first, second in zip(heads[0].parameters(), heads[1].parameters()):
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def _inputs(batch=3, seq=9, hidden=16):
    torch.manual_seed(0)
    states = torch.randn(batch, seq, hidden)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, 7:] = 0
    types = torch.tensor([[0] * 4 + [1] * 5] * batch)
    return states, mask, types


def test_step_dropout_never_drops_every_step_and_keeps_about_one_minus_p():
    torch.manual_seed(0)
    keep = step_keep_mask(20000, 5, 0.9)
    assert keep.any(dim=1).all()
    assert step_keep_mask(7, 5, 0.0).all()
    torch.manual_seed(1)
    assert step_keep_mask(20000, 5, 0.1).float().mean().item() == pytest.approx(0.9, abs=0.01)


def test_inference_averages_all_steps_and_returns_log_probabilities():
    head = SANHead(16, 3, steps=5).eval()
    states, mask, types = _inputs()
    out = head(states, mask, types)  # (batch, labels)
    expected = head.step_probabilities(states, mask, types).mean(dim=1)
    torch.testing.assert_close(out.exp(), expected)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(3))
    labels = torch.tensor([0, 2, 1])
    assert torch.nn.functional.cross_entropy(out, labels).item() == pytest.approx(
        -expected[torch.arange(3), labels].log().mean().item(), rel=1e-5)


def test_training_averages_only_the_kept_steps(monkeypatch):
    head = SANHead(16, 3, steps=5, step_dropout=0.5, dropout=0.0).train()
    states, mask, types = _inputs()
    keep = torch.tensor([[True, False, False, True, False], [False] * 4 + [True], [True] * 5])
    monkeypatch.setattr(heads, "step_keep_mask", lambda *args, **kwargs: keep)
    out = head(states, mask, types)
    probabilities = head.step_probabilities(states, mask, types)  # (batch, steps, labels)
    for row in range(3):
        torch.testing.assert_close(out[row].exp(), probabilities[row, keep[row]].mean(dim=0))


def test_padding_is_ignored_and_both_segments_matter():
    head = SANHead(16, 2).eval()
    states, mask, types = _inputs()
    changed = states.clone()
    changed[0, 7:] += 5.0  # padded positions of example 0
    torch.testing.assert_close(head(changed, mask, types)[0], head(states, mask, types)[0])
    for positions in (slice(1, 4), slice(4, 9)):  # premise tokens, then hypothesis tokens
        changed = states.clone()
        changed[1, positions] += 1.0
        assert not torch.allclose(head(changed, mask, types)[1], head(states, mask, types)[1])


def test_model_with_san_head_trains_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    rte = TaskSpec.from_dict({**GLUE_TASKS["rte"].to_dict(), "answer_module": "san", "san_steps": 3})
    model = MTDNNModel(BertModel(tiny_bert_config()), {"rte": rte, "cola": GLUE_TASKS["cola"]})
    assert isinstance(model.heads["rte"], SANHead) and model.heads["rte"].steps == 3
    inputs = {"input_ids": torch.randint(5, 99, (4, 10)), "attention_mask": torch.ones(4, 10, dtype=torch.long),
              "token_type_ids": torch.tensor([[0] * 5 + [1] * 5] * 4)}
    out = model("rte", **inputs, labels=torch.tensor([0, 1, 1, 0]))
    assert out.logits.shape == (4, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.heads["rte"].gru.weight_hh.grad.abs().sum() > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = MTDNNModel.from_pretrained(tmp_path).eval()
    assert loaded.tasks["rte"].answer_module == "san"
    torch.testing.assert_close(loaded("rte", **inputs).logits, model.eval()("rte", **inputs).logits)


def test_san_only_on_pair_classification():
    with pytest.raises(MTDNNError, match="needs a pair_classification task"):
        TaskSpec.from_dict({**GLUE_TASKS["stsb"].to_dict(), "answer_module": "san"})
    with pytest.raises(MTDNNError, match="unknown answer_module"):
        TaskSpec.from_dict({**GLUE_TASKS["rte"].to_dict(), "answer_module": "attention"})
