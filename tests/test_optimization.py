"""The optimizers: decoupled weight decay for AdamW and the paper's Adamax."""

import pytest
import torch

from mtdnn.config import OptimizationSettings
from mtdnn.optimization import AdamaxW, build_optimizer


class Embedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(10, 8)  # decayed (2-D)
        self.bias = torch.nn.Parameter(torch.ones(8))  # never decayed (1-D)

    def forward(self, ids):
        return (self.table(ids) + self.bias).pow(2).sum()


@pytest.mark.parametrize("optimizer", ["adamax", "adamw"])
def test_a_row_the_data_never_touches_only_shrinks_by_the_decoupled_decay(optimizer):
    model = Embedding()
    untouched = model.table.weight[9].detach().clone()
    lr, weight_decay, steps = 5e-5, 0.01, 1000
    settings = OptimizationSettings(learning_rate=lr, weight_decay=weight_decay, optimizer=optimizer)
    step = build_optimizer(model, settings)
    for _ in range(steps):
        model(torch.tensor([0, 1, 2])).backward()  # row 9 gets a zero gradient every step
        step.step()
        step.zero_grad()
    row = model.table.weight[9].detach()
    # Decoupled: shrunk by (1 - lr * weight_decay) per step, lr * weight_decay * steps = 5e-4 relative (float32
    # rounding of each tiny multiplication adds up to ~20% of that). Coupled (L2) decay in Adamax moves such a row
    # by ~lr per step instead: 0.05 here, ~5% of a unit-sized weight.
    relative = (row / untouched - 1).abs()
    assert relative.max() <= 1.25 * lr * weight_decay * steps
    assert relative.min() >= 0.75 * lr * weight_decay * steps
    assert not torch.equal(model.table.weight[0].detach(), row)  # the trained rows did move


def test_adamax_without_decay_is_torch_adamax():
    ours, theirs = Embedding(), Embedding()
    settings = OptimizationSettings(learning_rate=1e-2, weight_decay=0.0, optimizer="adamax")
    optimizers = [build_optimizer(ours, settings), torch.optim.Adamax(theirs.parameters(), lr=1e-2)]
    for _ in range(5):
        for model, optimizer in zip((ours, theirs), optimizers):
            model(torch.tensor([0, 3])).backward()
            optimizer.step()
            optimizer.zero_grad()
    assert torch.equal(ours.table.weight, theirs.table.weight)


def test_biases_are_not_decayed_and_the_decay_survives_a_state_dict_round_trip():
    model = Embedding()
    optimizer = AdamaxW([{"params": [model.table.weight], "weight_decay": 0.1},
                         {"params": [model.bias], "weight_decay": 0.0}], lr=1e-3)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.0]  # nothing coupled
    assert [group["decoupled_weight_decay"] for group in optimizer.param_groups] == [0.1, 0.0]
    restored = AdamaxW([{"params": [model.table.weight]}, {"params": [model.bias]}], lr=1e-3, weight_decay=0.5)
    restored.load_state_dict(optimizer.state_dict())
    assert [group["decoupled_weight_decay"] for group in restored.param_groups] == [0.1, 0.0]
