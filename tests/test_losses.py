"""Losses as pure functions, against hand-computed values."""

import math

import pytest
import torch

from mtdnn.losses import LOSSES


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
