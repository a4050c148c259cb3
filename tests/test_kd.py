import math

import pytest
import torch

from evo_snn.kd import KDLoss


def _softmax(z):
    e = [math.exp(v) for v in z]
    s = sum(e)
    return [v / s for v in e]


def test_kd_loss_equals_hand_computed_value():
    z_s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    z_t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    y = torch.tensor([0, 2])
    alpha, tau = 0.7, 2.0
    kl = 0.0
    ce = 0.0
    for zs, zt, label in zip(z_s.tolist(), z_t.tolist(), y.tolist()):
        p_t = _softmax([v / tau for v in zt])
        p_s = _softmax([v / tau for v in zs])
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
        ce += -math.log(_softmax(zs)[label])
    expected = alpha * tau**2 * kl / 2 + (1 - alpha) * ce / 2
    got = KDLoss(alpha, tau)(z_s, z_t, y).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_kd_loss_alpha_zero_is_cross_entropy_and_teacher_gets_no_gradient():
    z_s = torch.randn(4, 5, requires_grad=True)
    z_t = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    loss = KDLoss(0.0, 4.0)(z_s, z_t, y)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z_s, y).item())
    KDLoss(0.9, 4.0)(z_s, z_t, y).backward()
    assert z_t.grad is None and z_s.grad is not None


def test_kd_loss_is_zero_kl_when_student_matches_teacher():
    z = torch.randn(3, 4)
    y = torch.tensor([0, 1, 2])
    assert KDLoss(1.0, 3.0)(z, z.clone(), y).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("alpha,tau", [(-0.1, 1.0), (1.1, 1.0), (0.5, 0.0)])
def test_kd_loss_rejects_bad_settings(alpha, tau):
    with pytest.raises(ValueError):
        KDLoss(alpha, tau)


def test_virtual_teacher_distribution_and_loss_by_hand():
    # 2 samples, 3 classes, a = 0.95, tau = 2: p = (0.95, 0.025, 0.025) before softening
    from evo_snn.kd import VirtualTeacherLoss, virtual_teacher_probs

    y = torch.tensor([1, 0])
    a, tau, alpha = 0.95, 2.0, 0.6
    q = virtual_teacher_probs(y, 3, a, tau)
    lp = [math.log(0.025) / tau, math.log(0.95) / tau, math.log(0.025) / tau]
    expected_row0 = _softmax(lp)
    assert q[0].tolist() == pytest.approx(expected_row0, rel=1e-6)
    assert q[1].tolist() == pytest.approx([expected_row0[1], expected_row0[0], expected_row0[2]], rel=1e-6)
    assert expected_row0[1] == pytest.approx(1 / (1 + 2 * math.sqrt(0.025 / 0.95)))  # softmax(log p / 2) ∝ sqrt(p)

    z_s = torch.tensor([[0.2, 1.0, -0.5], [1.5, 0.0, 0.3]])
    kl = ce = 0.0
    for zs, label, qrow in zip(z_s.tolist(), y.tolist(), q.tolist()):
        p_s = _softmax([v / tau for v in zs])
        kl += sum(qv * (math.log(qv) - math.log(ps)) for qv, ps in zip(qrow, p_s))
        ce += -math.log(_softmax(zs)[label])
    expected = alpha * tau**2 * kl / 2 + (1 - alpha) * ce / 2
    assert VirtualTeacherLoss(alpha, tau, a)(z_s, y).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode", ["sparse", "self", "ann", "default", "none"])
def test_student_loss_per_mode_by_hand(mode):
    from evo_snn.config import KDConfig
    from evo_snn.kd import KDLoss, VirtualTeacherLoss, student_loss

    z_s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    z_t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    y = torch.tensor([0, 2])
    cfg = KDConfig(mode=mode, alpha=0.7, temperature=2.0, default_prob=0.93)

    class FixedTeacher(torch.nn.Module):
        calls = 0

        def forward(self, x_seq):
            FixedTeacher.calls += 1
            return z_t

    teacher = FixedTeacher()
    got = student_loss(cfg, 3, teacher)(z_s, y, torch.zeros(4, 2, 1)).item()
    if mode in ("sparse", "self", "ann"):
        expected = KDLoss(0.7, 2.0)(z_s, z_t, y).item()
        assert FixedTeacher.calls == 1
    elif mode == "default":
        expected = VirtualTeacherLoss(0.7, 2.0, 0.93)(z_s, y).item()
        assert FixedTeacher.calls == 0  # no teacher forward pass
    else:
        expected = (-math.log(_softmax([1.0, 0.0, -1.0])[0]) - math.log(_softmax([0.5, 0.5, 2.0])[2])) / 2
        assert FixedTeacher.calls == 0
    assert got == pytest.approx(expected, rel=1e-6)


def test_teacher_modes_need_a_teacher():
    from evo_snn.config import KDConfig
    from evo_snn.kd import student_loss

    with pytest.raises(ValueError, match="needs a teacher"):
        student_loss(KDConfig(mode="sparse"), 3, None)
