"""ERNIE 2.0 task embeddings: added to the input embeddings, per task, saved, and kept when fine-tuning."""

import torch
from transformers import BertModel

from conftest import tiny_bert_config
from mtdnn.finetuning import single_task_model
from mtdnn.model import MTDNNModel
from mtdnn.task_embeddings import table_of
from mtdnn.tasks import GLUE_TASKS


def _model(use=True):
    torch.manual_seed(0)
    tasks = {name: GLUE_TASKS[name] for name in ("mnli", "mnli_mismatched", "rte", "stsb")}
    return MTDNNModel(BertModel(tiny_bert_config()), tasks, use_task_embeddings=use).eval()


INPUTS = {"input_ids": torch.randint(5, 99, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long),
          "token_type_ids": torch.tensor([[0, 0, 0, 1, 1, 1, 1]] * 3)}


def test_a_new_vector_is_zero_and_a_learned_one_adds_to_the_embedding_sum():
    model, plain = _model(), _model(use=False)
    assert sorted(table_of(model.encoder).vectors) == ["mnli", "rte", "stsb"]  # tasks with their own head
    torch.testing.assert_close(model("rte", **INPUTS).logits, plain("rte", **INPUTS).logits)  # starts at the encoder
    with torch.no_grad():
        table_of(model.encoder).vectors["rte"].normal_()
    vector = table_of(model.encoder).vectors["rte"]
    words = model.encoder.embeddings.word_embeddings(INPUTS["input_ids"])
    expected = plain.encoder(inputs_embeds=words + vector, attention_mask=INPUTS["attention_mask"],
                             token_type_ids=INPUTS["token_type_ids"]).pooler_output
    torch.testing.assert_close(model.encode(**INPUTS, head_name="rte"), expected)
    torch.testing.assert_close(model("mnli", **INPUTS).logits, plain("mnli", **INPUTS).logits)  # its own (zero) one


def test_vectors_are_saved_and_kept_for_fine_tuning(tmp_path):
    model = _model()
    with torch.no_grad():
        for vector in table_of(model.encoder).vectors.values():
            vector.normal_()
    model.save_pretrained(tmp_path)
    loaded = MTDNNModel.from_pretrained(tmp_path).eval()
    for task in ("rte", "mnli", "stsb"):
        torch.testing.assert_close(loaded(task, **INPUTS).logits, model(task, **INPUTS).logits)
    single = single_task_model(loaded, GLUE_TASKS["rte"], 0).eval()  # stage 3 builds a new model around the encoder
    torch.testing.assert_close(single("rte", **INPUTS).logits, model("rte", **INPUTS).logits)
    assert "encoder.task_embeddings.vectors.rte" in single.state_dict()
