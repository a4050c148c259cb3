"""Knowledge-distillation losses: response KD (sparse-KD paper) and the virtual teacher.

KD variants (``kd.mode``; ``--set kd=MODE`` is shorthand for ``--set kd.mode=MODE``):

- ``sparse`` (default): the genome's masked teacher teaches with ``KDLoss`` (Eq. 3-5 of
  the sparse-KD paper). The student sees the sparse teacher's logits.
- ``self``: the unpruned dense teacher teaches with ``KDLoss`` (prune ratio 0 in the paper).
- ``default``: the teacher-default virtual teacher, ``VirtualTeacherLoss`` (Eq. 6-7 of the
  teacher-default-KD paper); no teacher forward pass is run. The student sees only labels.
- ``ann``: an ANN of the same topology (ReLU in place of spiking neurons) is trained
  first, then teaches with ``KDLoss`` (response-based ANN-teacher KD, Xu et al. 2023,
  arXiv 2304.05627). The student sees the ANN's logits.
- ``none``: plain fine-tuning with cross-entropy only, the control for every KD gain.

Defaults (``KDConfig``, overridable per search space): alpha = 0.9, tau = 4,
correct-class probability a = 0.95 for the virtual teacher; the same training
budget (``kd.epochs``) for every mode, so gains are measured at equal cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import KD_MODES  # noqa: F401  (re-exported)

TEACHER_MODES = ("sparse", "self", "ann")  # modes that run a teacher network


def _check(alpha: float, temperature: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


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
        _check(alpha, temperature)
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tau = self.temperature
        kl = F.kl_div(F.log_softmax(z_s / tau, dim=1), F.softmax(z_t.detach() / tau, dim=1), reduction="batchmean")
        return self.alpha * tau * tau * kl + (1.0 - self.alpha) * F.cross_entropy(z_s, y)


def virtual_teacher_probs(y: torch.Tensor, num_classes: int, correct_prob: float, temperature: float) -> torch.Tensor:
    """Softened teacher-default distribution Q_v: [N, num_classes] float32, rows sum to 1.

    p(c) = correct_prob for the true class, (1 - correct_prob)/(C - 1) otherwise (Eq. 6),
    softened by temperature tau as softmax(log p / tau) (Eq. 7).
    """
    if not 0.0 < correct_prob < 1.0 or num_classes < 2:
        raise ValueError(f"need 0 < correct_prob < 1 and >= 2 classes, got {correct_prob}, {num_classes}")
    other = math.log((1.0 - correct_prob) / (num_classes - 1))
    log_p = torch.full((y.shape[0], num_classes), other, device=y.device)
    log_p.scatter_(1, y.view(-1, 1), math.log(correct_prob))
    return F.softmax(log_p / temperature, dim=1)


class VirtualTeacherLoss(nn.Module):
    """L = alpha * tau^2 * KL(Q_v || softmax(z_s/tau)) + (1 - alpha) * CE(z_s, y).

    The teacher-default-KD paper's virtual teacher (Eq. 6-7): Q_v from
    ``virtual_teacher_probs`` with correct-class probability ``correct_prob`` (a > 0.9 in
    the paper). No teacher network runs. forward(z_s, y): [N, C] logits, [N] labels.
    """

    def __init__(self, alpha: float, temperature: float, correct_prob: float):
        super().__init__()
        _check(alpha, temperature)
        if not 0.0 < correct_prob < 1.0:
            raise ValueError(f"correct_prob must be in (0, 1), got {correct_prob}")
        self.alpha, self.temperature, self.correct_prob = alpha, temperature, correct_prob

    def forward(self, z_s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tau = self.temperature
        q_v = virtual_teacher_probs(y, z_s.shape[1], self.correct_prob, tau)
        kl = F.kl_div(F.log_softmax(z_s / tau, dim=1), q_v, reduction="batchmean")
        return self.alpha * tau * tau * kl + (1.0 - self.alpha) * F.cross_entropy(z_s, y)


def teacher_for(mode: str, *, sparse: nn.Module | None, dense: nn.Module | None, ann: nn.Module | None) -> nn.Module | None:
    """The network that teaches in ``mode``: the sparse (masked) teacher for 'sparse', the
    dense teacher for 'self', the ANN twin for 'ann'; None for 'default' and 'none'."""
    return {"sparse": sparse, "self": dense, "ann": ann}.get(mode)


def student_loss(kd_cfg, num_classes: int, teacher: nn.Module | None):
    """The training loss of a student under ``kd_cfg.mode``, as ``loss_fn(z_s, y, x_seq)``.

    teacher: the network that teaches in modes 'sparse', 'self' and 'ann' (frozen, eval
    mode; it runs on the same x_seq [T, N, C, H, W] and is reset after every batch);
    ignored (may be None) in modes 'default' and 'none'. raises ValueError.
    """
    from spikingjelly.activation_based import functional

    mode = kd_cfg.mode
    if mode in TEACHER_MODES:
        if teacher is None:
            raise ValueError(f"kd mode {mode!r} needs a teacher network")
        kd = KDLoss(kd_cfg.alpha, kd_cfg.temperature)

        def loss_fn(z_s, y, x_seq):
            with torch.no_grad():
                z_t = teacher(x_seq)
                functional.reset_net(teacher)
            return kd(z_s, z_t, y)

        return loss_fn
    if mode == "default":
        vt = VirtualTeacherLoss(kd_cfg.alpha, kd_cfg.temperature, kd_cfg.default_prob)
        return lambda z_s, y, _x_seq: vt(z_s, y)
    if mode == "none":
        return lambda z_s, y, _x_seq: F.cross_entropy(z_s, y)
    raise ValueError(f"unknown kd mode {mode!r}; known: {list(KD_MODES)}")
