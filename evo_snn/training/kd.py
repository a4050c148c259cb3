"""Knowledge-distillation losses: response KD (sparse-KD paper) and the virtual teacher.

KD variants (``kd.mode``; ``--set kd=MODE`` is shorthand for ``--set kd.mode=MODE``):

- ``sparse`` (default): the genome's masked teacher teaches with ``KDLoss`` (Eq. 3-5 of
  the sparse-KD paper). The student sees the sparse teacher's logits.
- ``self``: the unpruned dense teacher teaches with ``KDLoss`` (prune ratio 0 in the paper).
- ``default``: the teacher-default virtual teacher, ``VirtualTeacherLoss`` (Eq. 6-7 of the
  teacher-default-KD paper); no teacher forward pass is run. The student sees only labels.
  ``kd.default_form``: 'paper' (default: Eq. 7, only Q_v softened, by softmax(p/tau), no
  tau^2) or 'hinton' (softmax(log p/tau) against softmax(z_s/tau), times tau^2).
- ``ann``: an ANN of the same topology (ReLU in place of spiking neurons) is trained
  first, then teaches with ``KDLoss`` (response-based ANN-teacher KD, Xu et al. 2023,
  arXiv 2304.05627). The student sees the ANN's logits.
- ``none``: plain fine-tuning with cross-entropy only, the control for every KD gain.

Defaults (``KDConfig``, overridable per search space): alpha = 0.9, tau = 4,
correct-class probability a = 0.95 for the virtual teacher; the same training
budget (``kd.epochs``) for every mode, so gains are measured at equal cost.
"""

from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F


from evo_snn.config import KD_MODES, MODES, KDMode, kd_mode  # noqa: F401  (the KD modes table lives with the other tables of choices)


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
    flows into them), labels [N] int64 -> scalar loss, computed in float32 whatever the
    logits' dtype (mixed-precision training, ``train.amp``).
    """

    def __init__(self, alpha: float, temperature: float):
        super().__init__()
        _check(alpha, temperature)
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tau = self.temperature
        z_s, z_t = z_s.float(), z_t.detach().float()  # no-ops for float32 logits
        kl = F.kl_div(F.log_softmax(z_s / tau, dim=1), F.softmax(z_t / tau, dim=1), reduction="batchmean")
        return self.alpha * tau * tau * kl + (1.0 - self.alpha) * F.cross_entropy(z_s, y)


DEFAULT_FORMS = ("paper", "hinton")  # kd.default_form: how the virtual teacher is softened


def virtual_teacher_probs(y: torch.Tensor, num_classes: int, correct_prob: float, temperature: float,
                          form: str = "paper") -> torch.Tensor:
    """Softened teacher-default distribution Q_v^tau: [N, num_classes] float32, rows sum to 1.

    p(c) = correct_prob for the true class, (1 - correct_prob)/(C - 1) otherwise (Eq. 6 of
    the teacher-default-KD paper). Softened by temperature tau as
    - ``form='paper'``: softmax(p / tau), as Eq. 7 and the cited teacher-free KD code do;
    - ``form='hinton'``: softmax(log p / tau), i.e. p^(1/tau) renormalised: Hinton-style
      softening of p seen as the teacher's probabilities (evo_snn's earlier form).
    raises ValueError.
    """
    if not 0.0 < correct_prob < 1.0 or num_classes < 2:
        raise ValueError(f"need 0 < correct_prob < 1 and >= 2 classes, got {correct_prob}, {num_classes}")
    if form not in DEFAULT_FORMS:
        raise ValueError(f"unknown virtual-teacher form {form!r}; known: {list(DEFAULT_FORMS)}")
    other = (1.0 - correct_prob) / (num_classes - 1)
    p = torch.full((y.shape[0], num_classes), other, device=y.device)
    p.scatter_(1, y.view(-1, 1), correct_prob)
    return F.softmax((p if form == "paper" else p.log()) / temperature, dim=1)


class VirtualTeacherLoss(nn.Module):
    """Teacher-default KD with a virtual teacher Q_v (Eq. 6-7 of the teacher-default-KD paper).

    ``form='paper'`` (the default, Eq. 7): only Q_v is flattened, the student's output is used
    plain and there is no tau^2 factor:
        L = alpha * KL(softmax(p / tau) || softmax(z_s)) + (1 - alpha) * CE(z_s, y)
    ``form='hinton'``: both sides softened by tau, Hinton's tau^2 factor (as ``KDLoss``):
        L = alpha * tau^2 * KL(softmax(log p / tau) || softmax(z_s / tau)) + (1 - alpha) * CE(z_s, y)
    p: correct-class probability ``correct_prob`` (a > 0.9 in the paper), the rest spread
    evenly. KL summed over classes, averaged over the batch. No teacher network runs.
    forward(z_s, y): [N, C] logits, [N] int64 labels -> scalar.
    """

    def __init__(self, alpha: float, temperature: float, correct_prob: float, form: str = "paper"):
        super().__init__()
        _check(alpha, temperature)
        if not 0.0 < correct_prob < 1.0:
            raise ValueError(f"correct_prob must be in (0, 1), got {correct_prob}")
        if form not in DEFAULT_FORMS:
            raise ValueError(f"unknown virtual-teacher form {form!r}; known: {list(DEFAULT_FORMS)}")
        self.alpha, self.temperature, self.correct_prob, self.form = alpha, temperature, correct_prob, form

    def forward(self, z_s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tau = self.temperature
        z_s = z_s.float()  # the loss in float32 (a no-op for float32 logits)
        q_v = virtual_teacher_probs(y, z_s.shape[1], self.correct_prob, tau, self.form)
        if self.form == "paper":
            kl = F.kl_div(F.log_softmax(z_s, dim=1), q_v, reduction="batchmean")
            return self.alpha * kl + (1.0 - self.alpha) * F.cross_entropy(z_s, y)
        kl = F.kl_div(F.log_softmax(z_s / tau, dim=1), q_v, reduction="batchmean")
        return self.alpha * tau * tau * kl + (1.0 - self.alpha) * F.cross_entropy(z_s, y)


def teacher_for(mode: str, *, sparse: nn.Module | None, dense: nn.Module | None, ann: nn.Module | None) -> nn.Module | None:
    """The network that teaches in ``mode``: the sparse (masked) teacher for 'sparse', the
    dense teacher for 'self', the ANN twin for 'ann'; None for 'default' and 'none'."""
    return {"sparse": sparse, "dense": dense, "ann": ann, None: None}[kd_mode(mode).teacher]


def student_loss(kd_cfg, num_classes: int, teacher: nn.Module | None):
    """The training loss of a student under ``kd_cfg.mode``, as ``loss_fn(z_s, y, x_seq)``.

    teacher: the network that teaches in modes 'sparse', 'self' and 'ann' (frozen, eval
    mode; it runs on the same x_seq [T, N, C, H, W] and is reset after every batch);
    ignored (may be None) in modes 'default' and 'none'. raises ValueError.
    """
    from spikingjelly.activation_based import functional

    mode = kd_mode(kd_cfg.mode)
    if mode.loss == "kd":
        if teacher is None:
            raise ValueError(f"kd mode {mode.name!r} needs a teacher network")
        kd = KDLoss(kd_cfg.alpha, kd_cfg.temperature)

        def loss_fn(z_s, y, x_seq):
            with torch.no_grad():
                z_t = teacher(x_seq)
                functional.reset_net(teacher)
            return kd(z_s, z_t, y)

        return loss_fn
    if mode.loss == "virtual":
        vt = VirtualTeacherLoss(kd_cfg.alpha, kd_cfg.temperature, kd_cfg.default_prob, kd_cfg.default_form)
        return lambda z_s, y, _x_seq: vt(z_s, y)
    return lambda z_s, y, _x_seq: F.cross_entropy(z_s, y)
