"""SMART-style adversarial regularisation (Jiang et al. 2020): smoothness-inducing adversarial training.

The word embeddings x of a batch are perturbed by x~ = x + delta, with delta started at N(0, sigma^2) and moved
by normalised gradient-ascent steps on the divergence between the model's clean and perturbed outputs, each
step projected back into the max-norm ball ||delta||_inf <= epsilon. The regulariser is that divergence at
the final delta (symmetric KL; of each label's Bernoulli for multi-label tasks; MSE for regression), added to
the task loss with weight alpha.
"""

from __future__ import annotations

import torch

from mtdnn.losses import output_divergence


def ascent_step(noise: torch.Tensor, gradient: torch.Tensor, step_size: float, epsilon: float) -> torch.Tensor:
    """One projected ascent step: along the gradient normalised per token (max-norm), then clamped into the ball."""
    direction = gradient / (gradient.abs().amax(dim=-1, keepdim=True) + 1e-12)
    return (noise + step_size * direction).clamp(-epsilon, epsilon)


def adversarial_loss(model, task_name: str, batch: dict[str, torch.Tensor], logits: torch.Tensor, epsilon: float,
                     step_size: float, noise_std: float, steps: int) -> torch.Tensor:
    """SMART's smoothness loss for one batch; `model` is an MTDNNModel, `logits` its clean output on `batch`.

    Its random start uses torch's global RNG, which checkpoints save, so a resumed run draws the same noise.
    """
    task = model.head_task(model.tasks[task_name].head_name)
    inputs = {key: value for key, value in batch.items() if key not in ("input_ids", "labels")}
    embeddings = model.embed(task.name, batch["input_ids"])  # (batch, [group,] seq, hidden)
    noise = (torch.randn_like(embeddings) * noise_std).clamp(-epsilon, epsilon)
    for _ in range(steps):
        noise.requires_grad_()
        perturbed = model(task_name, inputs_embeds=embeddings.detach() + noise, **inputs).logits
        divergence = output_divergence(task.type, perturbed, logits.detach())
        (gradient,) = torch.autograd.grad(divergence, noise)
        noise = ascent_step(noise.detach(), gradient, step_size, epsilon)
    perturbed = model(task_name, inputs_embeds=embeddings + noise, **inputs).logits
    return output_divergence(task.type, perturbed, logits)
