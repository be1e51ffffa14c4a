"""Exactness against the official code, and what the losses and metrics do at the edges.

Each test stands for a class of defect: a sampler whose weights underflow, a
loss that differs from its peers by a constant, an evaluation that returns a
wrong number instead of an error, arithmetic that overflows or silently drops
a derivative.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rkd_tutorial.evaluate import accuracy, embed, recall_at_k
from rkd_tutorial.losses import (
    RKDLoss,
    attention_loss,
    distance_weighted_negatives,
    hard_darkrank_loss,
    hkd_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    triplet_loss,
)
from rkd_tutorial.losses.relational import EPS, _unit_differences, pairwise_distances
from rkd_tutorial.losses.triplet import distance_weights
from rkd_tutorial.models import Classifier, SmallCNN


# ----------------------------------------------------------------------------- distance-weighted sampling

def official_weights(embeddings, labels, dtype, cut_off=0.5, nonzero_loss_cutoff=1.4):
    """``DistanceWeighted.forward`` of github.com/lenscloth/RKD (metric/pairsampler.py), line by line,
    up to its ``weight / weight.sum()``, in ``dtype``."""
    e = F.normalize(embeddings.to(dtype), dim=1, p=2)
    n, d = e.shape
    neg_mask = labels[None, :] != labels[:, None]
    sq = e.pow(2).sum(1)
    pd = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=1e-12)
    pd[range(n), range(n)] = 0
    dist = (pd + torch.eye(n, dtype=dtype)).sqrt().clamp(min=cut_off)
    log_weight = (2.0 - d) * dist.log() - ((d - 3.0) / 2.0) * (1.0 - 0.25 * dist * dist).log()
    weight = (log_weight - log_weight.max(dim=1, keepdim=True)[0]).exp()
    weight = weight * (neg_mask & (dist < nonzero_loss_cutoff)).to(dtype)
    fallback = weight.sum(dim=1, keepdim=True) == 0
    weight = weight + (fallback & neg_mask).to(dtype)
    return weight / weight.sum(dim=1, keepdim=True), fallback.squeeze(1)


def clustered_batch(dim, classes=25, per_class=5, seed=0):
    """A batch like a teacher's: 25 classes x 5 (the official batch), classes apart, examples
    of one class close but farther apart than cut_off = 0.5 (positives 0.55-0.85, negatives
    around 1.2-1.6 after normalisation), where the official code's float32 weights are usable."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    x = centres.repeat_interleave(per_class, 0) + 0.5 * torch.randn(classes * per_class, dim, generator=g) / dim**0.5
    return x, torch.arange(classes).repeat_interleave(per_class)


@pytest.mark.parametrize("dim", [16, 128, 512])
def test_sampler_matches_the_official_distribution(dim):
    x, y = clustered_batch(dim)
    ours = distance_weights(x, y)
    reference, ref_fallback = official_weights(x, y, torch.float64)
    assert not ref_fallback.any()
    assert torch.allclose(ours, reference, rtol=1e-9, atol=1e-300)
    assert torch.allclose(ours.sum(1), torch.ones(len(y), dtype=torch.float64))


@pytest.mark.parametrize("dim", [16, 128, 512])
def test_sampler_matches_the_official_float32_code_where_it_does_not_underflow(dim):
    # random (untrained) embeddings: positives as far apart as negatives, about 1.41, so the
    # official float32 weights are usable for nearly every anchor; before the fix the zero
    # diagonal, clamped to cut_off, carried the row's largest log-weight and at D = 512 every
    # anchor fell back to uniform sampling.
    x = torch.randn(125, dim, generator=torch.Generator().manual_seed(dim))
    y = torch.arange(25).repeat_interleave(5)
    ours = distance_weights(x, y)
    f32, f32_fallback = official_weights(x, y, torch.float32)
    assert f32_fallback.sum() <= 2
    ok = ~f32_fallback
    assert torch.allclose(ours[ok].float(), f32[ok], rtol=1e-3, atol=1e-7)
    uniform = ((ours > 0) == (y[None, :] != y[:, None])).all(1) & (ours.amax(1) - ours.amin(1) < 1e-12)
    assert uniform.sum() <= f32_fallback.sum()


def test_sampler_never_underflows_to_uniform_at_large_width():
    # positives closer than about 0.85 (a trained teacher's) put the row's largest log-weight
    # outside the candidates, some 300 above them at D = 512: shifting by it underflows every
    # negative's weight in float32, and the official code then samples uniformly. Ours shifts
    # by the candidates' largest log-weight and keeps the distribution.
    x, y = clustered_batch(512)
    ours = distance_weights(x, y)
    reference, _ = official_weights(x, y, torch.float64)
    _, f32_fallback = official_weights(x, y, torch.float32)
    assert f32_fallback.all()
    assert torch.allclose(ours, reference, rtol=1e-9, atol=1e-300)
    negatives = (y[None, :] != y[:, None]).sum(1)
    assert ((ours > 0).sum(1) < negatives).all()      # only the candidates, not all 120 negatives
    spread = ours.amax(1) / ours.masked_fill(ours == 0, 1).amin(1)
    assert spread.median() > 5                         # and far from uniform among them


def test_sampled_negatives_follow_the_weights():
    x, y = clustered_batch(32, classes=4, per_class=4)
    w = distance_weights(x, y)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros_like(w)
    for _ in range(400):
        neg = distance_weighted_negatives(x, y, generator=g)
        counts.scatter_add_(1, neg, torch.ones_like(neg, dtype=counts.dtype))
    freq = counts / counts.sum(1, keepdim=True)
    assert (freq[w == 0] == 0).all()                  # never a positive, never the anchor
    assert (freq - w).abs().max() < 0.03               # 6400 draws per row


# ----------------------------------------------------------------------------- attention transfer

def test_attention_transfer_sums_over_stages_like_the_official_code():
    torch.manual_seed(0)
    s = [torch.rand(4, c, h, h) for c, h in ((8, 14), (16, 7), (32, 3))]
    t = [torch.rand(4, c, h, h) for c, h in ((32, 14), (64, 7), (128, 3))]

    def official_at(student, teacher):       # metric/loss.py, AttentionTransfer.forward
        s_att = F.normalize(student.pow(2).mean(1).view(student.size(0), -1))
        t_att = F.normalize(teacher.pow(2).mean(1).view(teacher.size(0), -1))
        return (s_att - t_att).pow(2).mean()

    official = sum(official_at(a, b) for a, b in zip(s, t))   # at_ratio * (AT(b2) + AT(b3) + AT(b4))
    assert attention_loss(s, t).item() == pytest.approx(official.item(), rel=1e-6)


# ----------------------------------------------------------------------------- evaluation never silently wrong

def test_recall_refuses_nan_and_inf():
    x, y = torch.randn(20, 4), torch.arange(20) % 3
    for bad in (float("nan"), float("inf")):
        z = x.clone()
        z[3, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            recall_at_k(z, y)


def test_recall_is_unchanged_by_a_large_common_offset():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(5).repeat_interleave(20)
    x = torch.randn(5, 8, generator=g)[y] + 0.3 * torch.randn(100, 8, generator=g)
    assert recall_at_k(x + 1e4, y) == recall_at_k(x, y)
    assert recall_at_k(x, y)[1] > 0.9


@pytest.mark.parametrize("chunk", [0, -1])
def test_recall_refuses_a_chunk_size_below_one(chunk):
    with pytest.raises(ValueError, match="chunk_size"):
        recall_at_k(torch.randn(10, 3), torch.arange(10) % 2, chunk_size=chunk)


@pytest.mark.parametrize("labels", [torch.randint(0, 10, (8, 1)), torch.rand(8), torch.randint(0, 10, (7,))])
def test_accuracy_and_recall_refuse_labels_that_are_not_one_class_id_per_example(labels):
    model = Classifier(SmallCNN((2, 2, 2)), 10)
    with pytest.raises(ValueError, match="labels"):
        accuracy(model, [(torch.randn(8, 1, 28, 28), labels)])
    with pytest.raises(ValueError, match="labels"):
        recall_at_k(torch.randn(8, 3), labels)


def test_accuracy_refuses_nan_logits_and_embed_refuses_no_data():
    model = Classifier(SmallCNN((2, 2, 2)), 10)
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or inf"):
        accuracy(model, [(torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))])
    with pytest.raises(ValueError, match="no examples"):
        embed(model, [])


# ----------------------------------------------------------------------------- numerics at the edges

RELATIONAL = {
    "rkd-d": rkd_distance_loss,
    "rkd-a": rkd_angle_loss,
    "rkd-da": RKDLoss(1.0, 2.0),
    "darkrank": hard_darkrank_loss,
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(RELATIONAL))
@pytest.mark.parametrize("case", ["far apart", "all identical"])
def test_half_precision_inputs_give_the_float32_loss(name, dtype, case):
    g = torch.Generator().manual_seed(1)
    if case == "far apart":     # distances of about 1000: their squares overflow float16
        s, t = 300 * torch.randn(8, 6, generator=g), 300 * torch.randn(8, 5, generator=g)
    else:
        s, t = torch.ones(8, 6), torch.randn(8, 5, generator=g)
    s, t = s.to(dtype).float(), t.to(dtype).float()           # values representable in dtype
    loss = RELATIONAL[name]
    reference = loss(s.clone().requires_grad_(True), t)
    half = s.to(dtype).requires_grad_(True)
    value = loss(half, t.to(dtype))
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    if name != "darkrank":    # RKD's gradients are scale-free; DarkRank's grow like d^2 (6e6 here)
        assert torch.isfinite(half.grad.float()).all()
    assert value.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-6)


def test_one_threshold_for_coincident_points_in_both_losses():
    # a pair closer than EPS coincides for RKD-D (distance 0) and RKD-A (no direction) alike
    for gap in (EPS / 10, EPS * 10, 1e-9, 1e-7):
        x = torch.tensor([[0.0, 0.0], [gap, 0.0], [1.0, 2.0]], dtype=torch.float64)
        distance = pairwise_distances(x)[0, 1]
        direction = _unit_differences(x, torch.tensor([0]))[0][0, 1]
        assert (distance == 0) == (direction.abs().sum() == 0) == (gap <= EPS)


@pytest.mark.parametrize("name", ["rkd-a", "rkd-da"])
def test_the_angle_loss_refuses_a_second_derivative(name):
    s = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="cannot be differentiated twice"):
        torch.autograd.grad(RELATIONAL[name](s, t), s, create_graph=True)


@pytest.mark.parametrize("loss", [
    lambda s, t: rkd_distance_loss(s, t),
    lambda s, t: hard_darkrank_loss(s, t),
    lambda s, t: hkd_loss(s, t, 3.0),
    lambda s, t: triplet_loss(s, torch.arange(len(s)) % 2, generator=torch.Generator().manual_seed(0)),
])
def test_the_other_losses_have_exact_second_derivatives(loss):
    torch.manual_seed(0)
    s = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(7, 4, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda x: loss(x, t), (s,))


# ----------------------------------------------------------------------------- kernels that cannot run

def test_a_failing_kernel_falls_back_to_pytorch_with_one_warning(monkeypatch):
    from rkd_tutorial.losses import relational

    class BrokenKernels:
        calls = 0

        def rkd_loss(self, *args):
            BrokenKernels.calls += 1
            raise RuntimeError("PTX compile failed for sm_75\nlong compiler log")

    torch.manual_seed(0)
    s, t = torch.randn(9, 4, requires_grad=True), torch.randn(9, 6)
    expected = RKDLoss(1.0, 2.0)(s, t)
    monkeypatch.setattr(relational, "_KERNEL_DEVICES", ("cpu",))
    monkeypatch.setattr(relational, "_KERNELS_FAILED", False)
    monkeypatch.setattr(relational, "_kernels", lambda: BrokenKernels())
    with pytest.warns(RuntimeWarning, match="PyTorch path") as warned:
        first = RKDLoss(1.0, 2.0)(s, t)
        second = rkd_distance_loss(s, t) + 2 * rkd_angle_loss(s, t)
    assert len(warned) == 1 and BrokenKernels.calls == 1
    assert "sm_75" in str(warned[0].message) and "long compiler log" not in str(warned[0].message)
    assert torch.allclose(first, expected) and torch.allclose(second, expected)
