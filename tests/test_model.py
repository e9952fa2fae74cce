"""MTDNNModel: head shapes and losses per task type, parity with transformers, save/load (with a LoRA adapter too)."""

import json

import pytest
import torch
from transformers import BertForSequenceClassification, BertModel

from conftest import tiny_bert_config
from mtdnn.adapters import lora_of, prepare_encoders
from mtdnn.config import LoraSettings, ModelSettings
from mtdnn.errors import MTDNNError
from mtdnn.manifest import write_manifest
from mtdnn.model import MTDNNModel
from mtdnn.tasks import GLUE_TASKS, TaskSpec

RANK = TaskSpec(name="rank", type="ranking", text_columns=("q", "c"), data_files={})


def _model(tasks=("cola", "mnli", "stsb")):
    torch.manual_seed(0)
    table = {name: GLUE_TASKS[name] for name in tasks}
    table["rank"] = RANK
    return MTDNNModel(BertModel(tiny_bert_config()), table).eval()


def _inputs(batch=3, seq=7):
    return {"input_ids": torch.randint(5, 99, (batch, seq)), "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def test_head_shapes_and_losses():
    model = _model()
    out = model("mnli", **_inputs(), labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3) and out.loss.ndim == 0 and out.loss > 0
    out = model("cola", **_inputs(), labels=torch.tensor([0, 1, 1]))
    assert out.logits.shape == (3, 2)
    out = model("stsb", **_inputs(), labels=torch.tensor([0.5, 4.0, 2.0]))
    assert out.logits.shape == (3, 1)
    assert out.loss.item() == pytest.approx(((out.logits[:, 0] - torch.tensor([0.5, 4.0, 2.0])) ** 2).mean().item())


def test_ranking_head_scores_each_candidate_and_masks_padding():
    model = _model()
    inputs = {k: v.view(2, 3, 7) for k, v in _inputs(batch=6).items()}
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out = model("rank", **inputs, candidate_mask=mask, labels=torch.tensor([2, 0]))
    assert out.logits.shape == (2, 3) and out.logits[1, 2] == float("-inf")
    single = model("rank", **{k: v[1:2, 1:2] for k, v in inputs.items()}).logits
    assert single[0, 0].item() == pytest.approx(out.logits[1, 1].item(), abs=1e-5)
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([2, 0]))
    assert out.loss.item() == pytest.approx(expected.item())


def test_parity_with_bert_for_sequence_classification():
    torch.manual_seed(0)
    reference = BertForSequenceClassification(tiny_bert_config().__class__(**{**tiny_bert_config().to_dict(), "num_labels": 3})).eval()
    model = _model(tasks=("mnli",))
    model.encoder.load_state_dict(reference.bert.state_dict())
    model.heads["mnli"].out_proj.load_state_dict(reference.classifier.state_dict())
    inputs = _inputs()
    inputs["token_type_ids"] = torch.tensor([[0, 0, 0, 1, 1, 1, 1]] * 3)
    inputs["attention_mask"][0, 5:] = 0
    torch.testing.assert_close(model("mnli", **inputs).logits, reference(**inputs).logits)


@pytest.mark.parametrize("seed", [1, 2])
def test_head_starts_as_bert_for_sequence_classification_classifier_after_the_same_seed(tmp_path, seed):
    """The Trainer arm of scripts/reproduce.py seeds, then loads `AutoModelForSequenceClassification`; mtdnn
    seeds, then loads the encoder and builds its heads: the same seed gives the same head, draw for draw."""
    torch.manual_seed(0)
    BertModel(tiny_bert_config().__class__(**{**tiny_bert_config().to_dict(), "initializer_range": 0.5})
              ).save_pretrained(tmp_path)
    torch.manual_seed(seed)
    reference = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=1).eval()
    torch.manual_seed(seed)
    model = MTDNNModel.from_encoder(str(tmp_path), {"stsb": GLUE_TASKS["stsb"]}).eval()
    head = model.heads["stsb"].out_proj
    assert 0.3 < reference.classifier.weight.std() < 0.7  # transformers drew it from N(0, 0.5)
    torch.testing.assert_close(head.weight, reference.classifier.weight, rtol=0, atol=0)
    torch.testing.assert_close(head.bias, reference.classifier.bias, rtol=0, atol=0)
    inputs = _inputs()
    torch.testing.assert_close(model("stsb", **inputs).logits, reference(**inputs).logits)


def test_save_and_load_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    loaded = MTDNNModel.from_pretrained(tmp_path).eval()
    inputs = _inputs()
    torch.testing.assert_close(loaded("mnli", **inputs).logits, model("mnli", **inputs).logits)
    assert loaded.tasks["rank"] == RANK and set(loaded.heads) == {"cola", "mnli", "stsb", "rank"}
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))


def test_incomplete_checkpoint_and_missing_head(tmp_path):
    with pytest.raises(MTDNNError, match="not a complete mtdnn checkpoint"):
        MTDNNModel.from_pretrained(tmp_path)
    with pytest.raises(MTDNNError, match="no head `rte`"):
        _model()("rte", **_inputs())
    with pytest.raises(MTDNNError, match="list `mnli` in `tasks` too"):
        MTDNNModel(BertModel(tiny_bert_config()), {"ax": GLUE_TASKS["ax"]})


def _lora_model():
    model = prepare_encoders(_model(), ModelSettings(lora=LoraSettings(r=2, alpha=4, target_modules=["key", "query"])))
    for name, parameter in model.named_parameters():
        if ".lora_B." in name:  # B starts at 0; a trained adapter changes the logits
            torch.nn.init.normal_(parameter)
    return model.eval()


def test_lora_checkpoint_records_its_adapter_and_loads_the_same_module(tmp_path):
    model = _lora_model()
    model.save_pretrained(tmp_path)
    table = json.loads((tmp_path / "mtdnn_tasks.json").read_text())
    assert table["lora"] == {"r": 2, "alpha": 4.0, "dropout": 0.1, "target_modules": ["key", "query"]}
    loaded = MTDNNModel.from_pretrained(tmp_path).eval()
    assert lora_of(loaded.encoder) == lora_of(model.encoder) and loaded.state_dict().keys() == model.state_dict().keys()
    inputs = _inputs()
    torch.testing.assert_close(loaded("mnli", **inputs).logits, model("mnli", **inputs).logits, rtol=0, atol=0)
    assert not torch.equal(_model()("mnli", **inputs).logits, model("mnli", **inputs).logits)


@pytest.mark.parametrize("lora, message", [
    ({"r": "eight"}, "`lora` must hold a LoRA adapter's settings"),
    ([2, 16], "`lora` must hold a LoRA adapter's settings"),
    (None, "does not match its task table"),  # the record removed: the adapter's weights have no module
])
def test_a_damaged_lora_record_is_refused(tmp_path, lora, message):
    _lora_model().save_pretrained(tmp_path)
    table = json.loads((tmp_path / "mtdnn_tasks.json").read_text())
    if lora is None:
        del table["lora"]
    else:
        table["lora"] = lora
    (tmp_path / "mtdnn_tasks.json").write_text(json.dumps(table))
    write_manifest(tmp_path)  # as if saved so: the table itself is refused, not its hash
    with pytest.raises(MTDNNError, match=message):
        MTDNNModel.from_pretrained(tmp_path)
