"""The losses against references written here from the paper's equations."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rkd_tutorial.losses import (
    FitNetHint,
    RKDLoss,
    attention_loss,
    attention_map,
    hard_darkrank_loss,
    hkd_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    triplet_loss,
)
from rkd_tutorial.losses import relational
from rkd_tutorial.losses.direct import direct_angle_loss, direct_distance_loss


# ----------------------------------------------------------------------------- references from the equations

def huber(x):
    a = x.abs()
    return torch.where(a < 1, 0.5 * x * x, a - 0.5)


def reference_distance_loss(s, t):
    """Eq. (3)-(5) by explicit loops over pairs (float64)."""
    def psi(x):
        n = len(x)
        d = torch.zeros(n, n, dtype=x.dtype)
        for i in range(n):
            for j in range(n):
                if i != j:
                    d[i, j] = torch.sqrt(((x[i] - x[j]) ** 2).sum())
        return d / (d.sum() / (n * (n - 1)))
    return huber(psi(s) - psi(t.detach())).mean()


def reference_angle_loss(s, t):
    """Eq. (6)-(7) by explicit loops over anchors (float64)."""
    def psi(x):
        n = len(x)
        out = torch.zeros(n, n, n, dtype=x.dtype)
        for a in range(n):
            v = x - x[a]
            norm = v.norm(dim=1, keepdim=True)
            e = torch.where(norm > 0, v / norm.clamp_min(1e-300), torch.zeros_like(v))
            out[a] = e @ e.t()
        return out
    return huber(psi(s) - psi(t.detach())).mean()


SIZES = [(3, 2, 5), (5, 4, 4), (8, 16, 3), (17, 5, 33)]


@pytest.mark.parametrize("n,ds,dt", SIZES)
@pytest.mark.parametrize("name", ["distance", "angle"])
def test_matches_reference_values_and_gradients(name, n, ds, dt):
    torch.manual_seed(n)
    ours = {"distance": rkd_distance_loss, "angle": rkd_angle_loss}[name]
    ref = {"distance": reference_distance_loss, "angle": reference_angle_loss}[name]
    s = torch.randn(n, ds, dtype=torch.float64, requires_grad=True)
    t = 3 * torch.randn(n, dt, dtype=torch.float64) + 1
    a, b = ours(s, t), ref(s, t)
    (ga,) = torch.autograd.grad(a, s)
    (gb,) = torch.autograd.grad(b, s)
    assert torch.allclose(a, b, rtol=1e-10, atol=0)
    assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-14 * gb.abs().max().item())


@pytest.mark.parametrize("n", [3, 40, 129])
def test_chunked_angle_equals_direct_formulation(n, monkeypatch):
    # force several chunks so the chunk boundaries are exercised
    monkeypatch.setattr(relational, "CHUNK_ELEMENTS", n * (n + 24) * 7)
    torch.manual_seed(0)
    s = torch.randn(n, 24, dtype=torch.float64, requires_grad=True)
    t = torch.randn(n, 9, dtype=torch.float64)
    a, b = rkd_angle_loss(s, t), direct_angle_loss(s, t)
    (ga,) = torch.autograd.grad(a, s)
    (gb,) = torch.autograd.grad(b, s)
    assert torch.allclose(a, b, rtol=1e-10, atol=0)
    assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-15)
    c, d = rkd_distance_loss(s, t), direct_distance_loss(s, t)
    assert torch.allclose(c, d, rtol=1e-10, atol=0)


def test_gradcheck():
    torch.manual_seed(1)
    s = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: rkd_angle_loss(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: rkd_distance_loss(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: RKDLoss(1, 2)(x, t), (s,))


def test_teacher_gets_no_gradient():
    s = torch.randn(5, 3, requires_grad=True)
    t = torch.randn(5, 4, requires_grad=True)
    RKDLoss()(s, t).backward()
    assert t.grad is None and s.grad is not None


def test_rkdloss_weights():
    torch.manual_seed(2)
    s, t = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    expected = 1.0 * rkd_distance_loss(s, t) + 2.0 * rkd_angle_loss(s, t)
    assert torch.allclose(RKDLoss()(s, t), expected)
    assert torch.allclose(RKDLoss(25, 50)(s, t), 25 * rkd_distance_loss(s, t) + 50 * rkd_angle_loss(s, t))
    with pytest.raises(ValueError, match="weights"):
        RKDLoss(-1, 2)


def test_identical_structure_gives_zero_loss():
    x = torch.randn(10, 4, dtype=torch.float64)
    assert rkd_distance_loss(x, x).item() == pytest.approx(0, abs=1e-14)
    assert rkd_angle_loss(x, x).item() == pytest.approx(0, abs=1e-14)


# ----------------------------------------------------------------------------- invariances (Section 3.2)

def _random_rotation(d, seed):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 12),
    dt=st.integers(2, 8),
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-50.0, 50.0),
)
def test_invariant_to_rotation_translation_scaling_of_teacher(n, dt, seed, scale, shift):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, 3, generator=g, dtype=torch.float64)
    t = torch.randn(n, dt, generator=g, dtype=torch.float64)
    moved = scale * t @ _random_rotation(dt, seed) + shift
    for loss in (rkd_distance_loss, rkd_angle_loss):
        assert loss(s, moved).item() == pytest.approx(loss(s, t).item(), rel=1e-8, abs=1e-12)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("loss,min_n", [(rkd_distance_loss, 2), (rkd_angle_loss, 3)])
def test_bad_input_raises_clear_errors(loss, min_n):
    with pytest.raises(ValueError, match="at least"):
        loss(torch.randn(min_n - 1, 3), torch.randn(min_n - 1, 3))
    with pytest.raises(ValueError, match="batch sizes"):
        loss(torch.randn(5, 3), torch.randn(6, 3))
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0]]), torch.randn(3, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(torch.randn(3, 2), torch.tensor([[0.0, 1.0], [float("inf"), 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        loss(torch.randn(4, 3, 2), torch.randn(4, 3))


@pytest.mark.parametrize("loss", [rkd_distance_loss, rkd_angle_loss, RKDLoss()])
def test_coincident_student_points_give_finite_loss_and_gradient(loss):
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0], [1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    t = torch.randn(5, 4)
    value = loss(s, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    all_same = torch.zeros(4, 3, requires_grad=True)
    value = loss(all_same, torch.randn(4, 6))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(all_same.grad).all()


def test_float32_close_to_float64():
    torch.manual_seed(3)
    s = torch.randn(64, 16, dtype=torch.float64)
    t = F.normalize(torch.randn(64, 128, dtype=torch.float64), dim=1)
    for loss in (rkd_distance_loss, rkd_angle_loss):
        assert loss(s.float(), t.float()).item() == pytest.approx(loss(s, t).item(), rel=1e-5)


# ----------------------------------------------------------------------------- individual and ranking baselines

def test_hkd_matches_definition_and_scales_with_t_squared():
    torch.manual_seed(4)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    for temp in (1.0, 4.0):
        p_t = F.softmax(t / temp, 1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / temp, 1))).sum(1).mean()
        assert hkd_loss(s, t, temp).item() == pytest.approx(temp**2 * kl.item(), rel=1e-5)
    assert hkd_loss(t, t, 4.0).item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        hkd_loss(torch.randn(4, 10), torch.randn(4, 9))


def test_fitnet_regressor_is_trainable():
    hint = FitNetHint(8, 16)
    s, t = torch.randn(2, 8, 7, 7), torch.randn(2, 16, 3, 3)
    loss = hint(s, t)
    loss.backward()
    assert hint.regressor.weight.grad is not None and loss.item() > 0


def test_attention_map_and_loss():
    f = torch.rand(2, 5, 4, 4)
    q = attention_map(f)
    assert q.shape == (2, 16) and torch.allclose(q.norm(dim=1), torch.ones(2))
    assert attention_loss([f], [f]).item() == 0
    # channel counts may differ: attention maps have none
    assert attention_loss([torch.rand(2, 3, 8, 8)], [torch.rand(2, 9, 4, 4)]).item() > 0


def test_darkrank_matches_plackett_luce_definition():
    torch.manual_seed(5)
    s, t = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 6, dtype=torch.float64)
    ds, dt = torch.cdist(s, s), torch.cdist(t, t)
    total = 0.0
    for q in range(9):
        order = [i for i in torch.argsort(dt[q]).tolist() if i != q][:4]
        scores = [-2.0 * ds[q, i] ** 3 for i in order]
        total += sum(torch.logsumexp(torch.stack(scores[i:]), 0) - scores[i] for i in range(4))
    assert hard_darkrank_loss(s, t).item() == pytest.approx(total.item() / 9, rel=1e-8)


def test_triplet_loss_zero_when_classes_are_far_apart_and_positive_otherwise():
    labels = torch.arange(4).repeat_interleave(4)
    far = torch.eye(4).repeat_interleave(4, 0) * 10 + 0.01 * torch.randn(16, 4)
    assert triplet_loss(far, labels).item() == 0
    mixed = torch.randn(16, 4)
    assert triplet_loss(mixed, labels).item() > 0
    # a batch with one class has no negatives: no valid triplet, loss 0, no NaN
    assert triplet_loss(torch.randn(6, 3), torch.zeros(6, dtype=torch.long)).item() == 0
