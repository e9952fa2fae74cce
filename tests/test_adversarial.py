"""SMART: the perturbation stays in its epsilon-ball, ascent raises the divergence, the loss reaches the weights."""

import torch
from transformers import BertModel

from conftest import tiny_bert_config
from mtdnn.adversarial import adversarial_loss, ascent_step
from mtdnn.losses import output_divergence
from mtdnn.model import MTDNNModel
from mtdnn.tasks import GLUE_TASKS, TaskSpec

RANK = TaskSpec(name="rank", type="ranking", text_columns=("q", "c"), data_files={})


def _model():
    torch.manual_seed(0)
    tasks = {name: GLUE_TASKS[name] for name in ("mnli", "stsb")}
    return MTDNNModel(BertModel(tiny_bert_config()), {**tasks, "rank": RANK}).eval()


def _batch(shape=(4, 8)):
    return {"input_ids": torch.randint(5, 99, shape), "attention_mask": torch.ones(shape, dtype=torch.long)}


def test_ascent_step_moves_along_the_gradient_and_stays_in_the_ball():
    noise, gradient = torch.zeros(2, 3, 5), torch.randn(2, 3, 5)
    moved = ascent_step(noise, gradient, step_size=1.0, epsilon=0.1)
    assert moved.abs().max() <= 0.1 + 1e-7
    assert (torch.sign(moved) == torch.sign(gradient)).all()
    small = ascent_step(noise, gradient, step_size=1e-3, epsilon=1.0)  # inside the ball: the normalised step
    torch.testing.assert_close(small.abs().amax(dim=-1), torch.full((2, 3), 1e-3))


def test_inputs_embeds_path_equals_input_ids_path():
    model, batch = _model(), _batch()
    embeddings = model.embed("mnli", batch["input_ids"])
    torch.testing.assert_close(model("mnli", inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits,
                               model("mnli", **batch).logits)


def test_zero_ball_gives_zero_loss_and_ascent_raises_the_divergence():
    model, batch = _model(), _batch()
    logits = model("mnli", **batch).logits
    assert adversarial_loss(model, "mnli", batch, logits, 0.0, 1e-3, 1e-5, 1).item() < 1e-10
    torch.manual_seed(1)
    random_start = adversarial_loss(model, "mnli", batch, logits, 0.05, 0.0, 0.05, 1)  # no ascent: random noise
    torch.manual_seed(1)
    ascended = adversarial_loss(model, "mnli", batch, logits, 0.05, 0.05, 0.05, 2)
    assert ascended.item() > random_start.item() > 0


def test_loss_reaches_the_encoder_for_every_task_type():
    model = _model().train()
    for task, batch in (("mnli", _batch()), ("stsb", _batch()),
                        ("rank", {**{k: v.view(2, 2, 8) for k, v in _batch().items()},
                                  "candidate_mask": torch.tensor([[True, True], [True, False]])})):
        model.zero_grad()
        logits = model(task, **batch).logits
        loss = adversarial_loss(model, task, batch, logits, 1e-2, 1e-2, 1e-3, 1)
        assert torch.isfinite(loss) and loss > 0
        loss.backward()
        assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0, task
    clean = torch.tensor([[1.0], [2.0]])
    assert output_divergence("regression", clean, clean + 0.5).item() == 0.25
