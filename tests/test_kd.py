import math

import pytest
import torch

from evo_snn.training.kd import KDLoss


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
    from evo_snn.training.kd import VirtualTeacherLoss, virtual_teacher_probs

    y = torch.tensor([1, 0])
    a, tau, alpha = 0.95, 2.0, 0.6
    q = virtual_teacher_probs(y, 3, a, tau, form="hinton")
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
    assert VirtualTeacherLoss(alpha, tau, a, form="hinton")(z_s, y).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode", ["sparse", "self", "ann", "default", "none"])
def test_student_loss_per_mode_by_hand(mode):
    from evo_snn.config import KDConfig
    from evo_snn.training.kd import student_loss

    z_s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    z_t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    y = torch.tensor([0, 2])
    cfg = KDConfig(mode=mode, alpha=0.7, temperature=2.0, default_prob=0.93, default_form="hinton")

    class FixedTeacher(torch.nn.Module):
        calls = 0

        def forward(self, x_seq):
            FixedTeacher.calls += 1
            return z_t

    teacher = FixedTeacher()
    got = student_loss(cfg, 3, teacher)(z_s, y, torch.zeros(4, 2, 1)).item()
    # expected values by hand (Eq. 4-7), independent of KDLoss / VirtualTeacherLoss
    alpha, tau, a = 0.7, 2.0, 0.93
    ce = (-math.log(_softmax([1.0, 0.0, -1.0])[0]) - math.log(_softmax([0.5, 0.5, 2.0])[2])) / 2

    def kd_term(targets):  # alpha * tau^2 * batch-mean KL(target || softmax(z_s / tau))
        kl = sum(sum(q * (math.log(q) - math.log(p)) for q, p in zip(qrow, _softmax([v / tau for v in zs])))
                 for qrow, zs in zip(targets, z_s.tolist()))
        return alpha * tau**2 * kl / 2

    if mode in ("sparse", "self", "ann"):
        expected = kd_term([_softmax([v / tau for v in zt]) for zt in z_t.tolist()]) + (1 - alpha) * ce
        assert FixedTeacher.calls == 1
    elif mode == "default":
        # p = a on the label, (1 - a) / 2 elsewhere; softmax(log p / tau) = p^(1/tau), normalised
        rows = []
        for label in y.tolist():
            p = [a ** (1 / tau) if c == label else ((1 - a) / 2) ** (1 / tau) for c in range(3)]
            rows.append([v / sum(p) for v in p])
        expected = kd_term(rows) + (1 - alpha) * ce
        assert FixedTeacher.calls == 0  # no teacher forward pass
    else:
        expected = ce
        assert FixedTeacher.calls == 0
    assert got == pytest.approx(expected, rel=1e-6)
    # pinned numbers (computed once from the formulas above), so that a change of both
    # the code and the formulas still shows
    pinned = {"sparse": 0.1907127, "self": 0.1907127, "ann": 0.1907127, "default": 0.3855016, "none": 0.3882935}
    assert got == pytest.approx(pinned[mode], rel=1e-5)


def test_teacher_modes_need_a_teacher():
    from evo_snn.config import KDConfig
    from evo_snn.training.kd import student_loss

    with pytest.raises(ValueError, match="needs a teacher"):
        student_loss(KDConfig(mode="sparse"), 3, None)


def test_virtual_teacher_paper_form_by_hand():
    """Eq. 7 of the teacher-default-KD paper: only Q_v = softmax(p / tau) is softened, the
    student's softmax is plain, no tau^2; the default form."""
    from evo_snn.config import KDConfig
    from evo_snn.training.kd import student_loss, virtual_teacher_probs

    y = torch.tensor([2, 0])
    a, tau, alpha = 0.9, 4.0, 0.5
    p = [0.05, 0.05, 0.9]  # 3 classes: (1 - a) / 2 elsewhere
    q_row = _softmax([v / tau for v in p])
    assert virtual_teacher_probs(y, 3, a, tau)[0].tolist() == pytest.approx(q_row, rel=1e-6)
    assert q_row[2] == pytest.approx(math.exp(0.225) / (math.exp(0.225) + 2 * math.exp(0.0125)))
    z_s = torch.tensor([[0.1, -0.4, 1.2], [2.0, 0.3, 0.0]])
    kl = ce = 0.0
    for zs, label in zip(z_s.tolist(), y.tolist()):
        q = q_row if label == 2 else [q_row[2], q_row[0], q_row[1]]
        ps = _softmax(zs)
        kl += sum(qv * (math.log(qv) - math.log(pv)) for qv, pv in zip(q, ps))
        ce += -math.log(ps[label])
    expected = alpha * kl / 2 + (1 - alpha) * ce / 2
    cfg = KDConfig(mode="default", alpha=alpha, temperature=tau, default_prob=a)
    assert cfg.default_form == "paper"
    got = student_loss(cfg, 3, None)(z_s, y, torch.zeros(1)).item()
    assert got == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown virtual-teacher form"):
        virtual_teacher_probs(y, 3, a, tau, form="tf")


def test_one_table_of_kd_modes():
    """Config validation, teacher preparation and reproduce all read kd.MODES."""
    from evo_snn.config import ConfigError, load_config
    from evo_snn.training.kd import KD_MODES, MODES, kd_mode, teacher_for

    assert KD_MODES == ("sparse", "self", "default", "ann", "none")
    assert [m for m in KD_MODES if MODES[m].needs_ann] == ["ann"]
    assert [m for m in KD_MODES if MODES[m].ratio_dependent] == ["sparse"]
    nets = {"sparse": object(), "dense": object(), "ann": object()}
    assert teacher_for("self", sparse=nets["sparse"], dense=nets["dense"], ann=nets["ann"]) is nets["dense"]
    assert teacher_for("sparse", sparse=nets["sparse"], dense=nets["dense"], ann=nets["ann"]) is nets["sparse"]
    assert teacher_for("default", sparse=nets["sparse"], dense=nets["dense"], ann=nets["ann"]) is None
    for m in KD_MODES:
        assert load_config("synthetic", overrides=[f"kd={m}"]).kd.mode == m
    with pytest.raises(ConfigError, match="kd.mode must be one of"):
        load_config("synthetic", overrides=["kd=teacherless"])
    with pytest.raises(ValueError, match="unknown kd mode"):
        kd_mode("teacherless")


# ------------------------------------------------------------------ limits (mutation testing, tests/MUTATION.md §2)
def test_kd_settings_accept_their_limits_and_errors_name_the_setting():
    """alpha in [0, 1] and any tau > 0 are accepted (tau < 1 sharpens); the errors say which
    setting is wrong and its value."""
    from evo_snn.training.kd import VirtualTeacherLoss

    z_s, z_t, y = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([0])
    for alpha, tau in [(0.0, 0.5), (1.0, 0.5), (0.5, 1.0)]:
        assert math.isfinite(KDLoss(alpha, tau)(z_s, z_t, y).item())
        assert math.isfinite(VirtualTeacherLoss(alpha, tau, 0.9)(z_s, y).item())
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.1"):
        KDLoss(1.1, 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        KDLoss(0.5, 0.0)


def test_virtual_teacher_probs_limits():
    """0 < a < 1 (open at both ends) and at least 2 classes; 2 classes work, by hand."""
    from evo_snn.training.kd import virtual_teacher_probs

    y = torch.tensor([1, 0])
    q = virtual_teacher_probs(y, 2, 0.8, 2.0)  # paper form: softmax((0.2, 0.8) / 2)
    e = math.exp(0.3)
    assert q.flatten().tolist() == pytest.approx([1 / (1 + e), e / (1 + e), e / (1 + e), 1 / (1 + e)], rel=1e-6)
    for a in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"need 0 < correct_prob < 1 and >= 2 classes, got"):
            virtual_teacher_probs(y, 3, a, 2.0)
    with pytest.raises(ValueError, match=r"need 0 < correct_prob < 1 and >= 2 classes, got 0.9, 1"):
        virtual_teacher_probs(y, 1, 0.9, 2.0)


def test_virtual_teacher_loss_defaults_to_the_paper_form_and_checks_its_settings():
    from evo_snn.training.kd import VirtualTeacherLoss

    z_s, y = torch.tensor([[0.3, -0.2, 1.0], [1.0, 0.5, -1.0]]), torch.tensor([2, 1])
    got = VirtualTeacherLoss(0.6, 3.0, 0.9)(z_s, y).item()
    assert got == pytest.approx(VirtualTeacherLoss(0.6, 3.0, 0.9, form="paper")(z_s, y).item(), rel=1e-7)
    assert got != pytest.approx(VirtualTeacherLoss(0.6, 3.0, 0.9, form="hinton")(z_s, y).item(), rel=1e-3)
    for a in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"correct_prob must be in \(0, 1\), got"):
            VirtualTeacherLoss(0.6, 3.0, a)
    with pytest.raises(ValueError, match=r"unknown virtual-teacher form 'tf'; known: \['paper', 'hinton'\]"):
        VirtualTeacherLoss(0.6, 3.0, 0.9, form="tf")
