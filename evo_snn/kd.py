"""Knowledge-distillation loss of the sparse-KD paper (Eq. 4-5)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class KDLoss(nn.Module):
    """L = alpha * tau^2 * KL(softmax(z_t/tau) || softmax(z_s/tau)) + (1 - alpha) * CE(z_s, y).

    Eq. (4)-(5) of the sparse-KD paper (Hinton-style response KD). KL is summed over
    classes and averaged over the batch ('batchmean'); CE is averaged over the batch.

    alpha: weight of the KD term in [0, 1]; temperature: tau > 0.
    forward(z_s, z_t, y): student logits [N, C], teacher logits [N, C] (no gradient
    flows into them), labels [N] int64 -> scalar loss.
    """

    def __init__(self, alpha: float, temperature: float):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tau = self.temperature
        kl = F.kl_div(F.log_softmax(z_s / tau, dim=1), F.softmax(z_t.detach() / tau, dim=1), reduction="batchmean")
        return self.alpha * tau * tau * kl + (1.0 - self.alpha) * F.cross_entropy(z_s, y)
