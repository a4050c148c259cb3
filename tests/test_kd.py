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
