"""Losses as pure functions (task losses, distillation, SMART divergences), against hand-computed values."""

import math

import pytest
import torch

from mtdnn.losses import LOSSES, distillation_loss, output_divergence, symmetric_kl


def test_ranking_loss_is_listwise_softmax_by_hand():
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, float("-inf")]])  # second query: 2 candidates
    labels = torch.tensor([0, 1])
    first = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5) + math.exp(-1.0)))
    second = -math.log(math.exp(1.0) / (math.exp(0.0) + math.exp(1.0)))
    assert LOSSES["ranking"](scores, labels).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_regression_and_classification_losses_by_hand():
    assert LOSSES["regression"](torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 1.0])).item() == pytest.approx(2.5)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert LOSSES["pair_classification"](logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
    assert LOSSES["single_classification"] is LOSSES["pair_classification"]


def test_distillation_loss_at_t1_is_the_kl_to_the_teacher_ensemble():
    torch.manual_seed(0)
    student, teachers = torch.randn(4, 3), torch.randn(2, 4, 3)  # two teachers
    ensemble = torch.softmax(teachers, dim=-1).mean(dim=0)  # (batch, classes)
    kl = torch.nn.functional.kl_div(torch.log_softmax(student, -1), ensemble, reduction="batchmean")
    assert distillation_loss("pair_classification", student, teachers, 1.0).item() == pytest.approx(kl.item(), rel=1e-5)
    hand = (ensemble * (ensemble.log() - torch.log_softmax(student, -1))).sum(-1).mean()
    assert distillation_loss("pair_classification", student, teachers).item() == pytest.approx(hand.item(), rel=1e-5)
    assert distillation_loss("pair_classification", teachers[0], teachers[:1]).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_softens_with_temperature_and_regression_uses_the_teachers_mean():
    student, teachers = torch.tensor([[2.0, 0.0]]), torch.tensor([[[0.0, 1.0]]])
    q, p = torch.softmax(teachers[0] / 2, -1), torch.log_softmax(student / 2, -1)
    expected = 4 * (q * (q.log() - p)).sum()
    assert distillation_loss("single_classification", student, teachers, 2.0).item() == pytest.approx(expected.item())
    teachers = torch.tensor([[[0.0], [2.0]], [[2.0], [4.0]]])  # (teachers, batch, 1)
    values = distillation_loss("regression", torch.tensor([[1.0], [2.0]]), teachers)
    assert values.item() == pytest.approx(((1.0 - 1.0) ** 2 + (2.0 - 3.0) ** 2) / 2)


def test_ranking_padding_is_ignored_by_distillation_and_divergence():
    inf = float("-inf")
    student, teacher = torch.tensor([[1.0, 0.0, inf]], requires_grad=True), torch.tensor([[[0.0, 1.0, inf]]])
    loss = distillation_loss("ranking", student, teacher)
    expected = distillation_loss("ranking", student[:, :2], teacher[:, :, :2])
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert torch.isfinite(student.grad).all()
    padded, real = symmetric_kl(student, teacher[0]), symmetric_kl(student[:, :2], teacher[0, :, :2])
    assert padded.item() == pytest.approx(real.item())


def test_symmetric_kl_and_regression_divergence_by_hand():
    a, b = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])  # p = (1/4, 3/4), q = (1/2, 1/2)
    p, q = [0.25, 0.75], [0.5, 0.5]
    hand = sum(pi * math.log(pi / qi) + qi * math.log(qi / pi) for pi, qi in zip(p, q))
    assert symmetric_kl(a, b).item() == pytest.approx(hand, rel=1e-6)
    assert output_divergence("pair_classification", a, b).item() == pytest.approx(hand, rel=1e-6)
    assert output_divergence("regression", torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).item() == 2.5
