"""Cached-teacher KD math: sampled targets are unbiased, top-K keeps a tail bucket, builders are exact."""

from __future__ import annotations

import math

import pytest
import torch

from hf_cot_distill.losses.cached import (
    CachedTargets,
    entropy,
    sample_targets,
    sampled_rows_and_grad,
    topk_renormalised_rows_and_grad,
    topk_rows_and_grad,
    topk_targets,
)

V = 40


def _case(seed: int, temperature: float = 1.0, sharp: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher log-probs, student log-probs), ``(V,)`` float64, at ``temperature``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(V, generator=g, dtype=torch.float64) * sharp
    s = torch.randn(V, generator=g, dtype=torch.float64) * sharp
    return torch.log_softmax(t / temperature, 0), torch.log_softmax(s / temperature, 0)


@pytest.mark.parametrize("samples", [4, 12, 64])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampled_gradient_is_unbiased(samples, temperature):
    lp, lq = _case(samples, temperature)
    reps = 6000
    g = torch.Generator().manual_seed(0)
    ids, counts, _ = sample_targets(lp.expand(reps, V), samples, g)
    w = torch.where(ids >= 0, counts / samples, 0.0).to(torch.float64)
    grad = torch.empty(reps, V, dtype=torch.float64)
    rows = sampled_rows_and_grad(
        lq.expand(reps, V).clone(), ids.clamp(min=0), w, entropy(lp).expand(reps), grad
    )
    p, q = lp.exp(), lq.exp()
    # E[w_i] = p_i and Var(w_i) = p_i (1 - p_i) / S, so the mean gradient over `reps` draws is
    # q - p within a few standard errors sqrt(p (1 - p) / (S reps)) per coordinate.
    se = torch.sqrt(p * (1 - p) / (samples * reps))
    assert (grad.mean(0) - (q - p)).abs().le(5 * se + 1e-12).all()
    kl = float((p * (lp - lq)).sum())
    assert abs(float(rows.mean()) - kl) <= 5 * float(rows.std()) / math.sqrt(reps)
    # and the same draws through a renormalised top-K (no tail bucket) are far off on this case
    k = 4
    top_ids, top_lp, _ = topk_targets(lp.unsqueeze(0), k)
    g2 = torch.empty(1, V, dtype=torch.float64)
    topk_renormalised_rows_and_grad(lq.unsqueeze(0).clone(), top_ids, top_lp.exp(), g2)
    bias = (g2[0] - (q - p)).abs().max()
    assert bias > 50 * float(se.max()), "top-K without a tail bucket must be visibly biased here"


def test_sampled_with_all_mass_on_one_token_is_exact():
    lp = torch.full((1, V), -math.inf, dtype=torch.float64)
    lp[0, 3] = 0.0
    ids, counts, n = sample_targets(lp, 12)
    assert n.tolist() == [1] and ids[0, 0] == 3 and counts[0, 0] == 12
    lq = torch.log_softmax(torch.randn(1, V, dtype=torch.float64), 1)
    grad = torch.empty_like(lq)
    rows = sampled_rows_and_grad(lq.clone(), ids.clamp(min=0), (counts / 12.0).double(), torch.zeros(1), grad)
    expected = lq.exp().clone()
    expected[0, 3] -= 1
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(rows, -lq[:, 3])  # KL(onehot || q) = -log q_3


def _bucket_kl(lp: torch.Tensor, z: torch.Tensor, k: int) -> torch.Tensor:
    """Naive float64 reference: KL between the (top-k of p + tail) coarsenings of p and softmax(z)."""
    lq = torch.log_softmax(z, -1)
    top = lp.topk(k).indices
    p, q = lp.exp(), lq.exp()
    mask = torch.zeros(V, dtype=torch.bool)
    mask[top] = True
    pt, qt = p[~mask].sum(), q[~mask].sum()
    kl = (p[top] * (lp[top] - lq[top])).sum()
    return kl + (pt * (pt.log() - qt.log()) if pt > 0 else 0.0)


@pytest.mark.parametrize("k", [1, 5, 20, V])
def test_topk_with_tail_is_the_exact_bucket_kl_and_its_gradient(k):
    lp, _ = _case(k)
    z = torch.randn(V, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ref = _bucket_kl(lp, z, k)
    (ref_grad,) = torch.autograd.grad(ref, z)
    ids, top_lp, tail = topk_targets(lp.unsqueeze(0), k)
    targets = CachedTargets("topk", ids, top_lp.exp(), tail_logmass=tail)
    rid, rw, valid, extra = targets.rows(torch.tensor([0]))
    lq = torch.log_softmax(z.detach(), 0).unsqueeze(0)
    grad, scratch = torch.empty_like(lq), torch.empty_like(lq)
    rows = topk_rows_and_grad(lq, rid, rw, valid, extra, grad, scratch)
    torch.testing.assert_close(rows[0], ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad[0], ref_grad, rtol=1e-9, atol=1e-12)
    if k == V:  # no tail: the full forward KL and its gradient q - p
        torch.testing.assert_close(grad[0], lq[0].exp() - lp.exp(), rtol=1e-9, atol=1e-12)


def test_topk_padding_slots_change_nothing():
    lp, lq = _case(3)
    ids, top_lp, tail = topk_targets(lp.unsqueeze(0), 3)
    padded_ids = torch.cat([ids, torch.full((1, 2), -1)], 1)
    padded_w = torch.cat([top_lp.exp(), torch.zeros(1, 2, dtype=torch.float64)], 1)
    a = CachedTargets("topk", ids, top_lp.exp(), tail_logmass=tail).rows(torch.tensor([0]))
    b = CachedTargets("topk", padded_ids, padded_w, tail_logmass=tail).rows(torch.tensor([0]))
    out = []
    for rid, rw, valid, extra in (a, b):
        grad, scratch = torch.empty(1, V, dtype=torch.float64), torch.empty(1, V, dtype=torch.float64)
        out.append((topk_rows_and_grad(lq.unsqueeze(0), rid, rw, valid, extra, grad, scratch), grad))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-12, atol=1e-14)


def test_builders():
    lp = torch.log_softmax(torch.randn(5, V, dtype=torch.float64), 1)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a, b = sample_targets(lp, 16, g1), sample_targets(lp, 16, g2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # same generator state, same draws
    ids, counts, n = a
    assert counts.sum(1).tolist() == [16] * 5
    for row, c, k in zip(ids, counts, n):
        real = row[:k]
        assert (real >= 0).all() and (row[k:] == -1).all() and (c[k:] == 0).all() and (c[:k] > 0).all()
        assert torch.equal(real, real.unique())  # distinct and increasing
    top, values, tail = topk_targets(lp, 6)
    torch.testing.assert_close(values, lp.gather(1, top))
    torch.testing.assert_close(tail.exp(), 1 - values.exp().sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(entropy(lp), -(lp.exp() * lp).sum(1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="dense"), "mode='dense': must be one of"),
        (dict(entropy=None), "entropy: required in sampled mode"),
        (dict(tail_logmass=torch.zeros(2)), "tail_logmass: not used in sampled mode"),
        (dict(temperature=0.0), "temperature=0.0: must be a finite number > 0"),
        (dict(ids=torch.zeros(2, 3)), "ids: dtype torch.float32 must be an integer type"),
    ],
)
def test_cached_targets_refuse_bad_fields(kwargs, message):
    fields = dict(
        mode="sampled",
        ids=torch.zeros(2, 3, dtype=torch.long),
        weights=torch.zeros(2, 3),
        entropy=torch.zeros(2),
    )
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CachedTargets(**fields)


# ---- the fused pass against cached targets ------------------------------------------------------


def _fused_case(seed: int, n: int = 9, h: int = 6, v: int = 23):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64)
    teacher_logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    kd_w = torch.rand(n, generator=g, dtype=torch.float64)
    kd_w[[0, 4]] = 0.0  # unselected positions: no target needed there
    labels = torch.randint(0, v, (n,), generator=g)
    ce_w = torch.rand(n, generator=g, dtype=torch.float64)
    return hidden, weight, teacher_logits, kd_w, labels, ce_w


@pytest.mark.parametrize("mode", ["sampled", "topk"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [2, 64])
def test_fused_cached_kd_matches_a_naive_reference(mode, temperature, chunk_size):
    from hf_cot_distill.losses import fused_cached_kd

    hidden, weight, tl, kd_w, labels, ce_w = _fused_case(3)
    n, v = tl.shape
    lp = torch.log_softmax(tl / temperature, 1)
    if mode == "sampled":
        ids, counts, _ = sample_targets(lp, 5, torch.Generator().manual_seed(1))
        w = torch.where(ids >= 0, counts / 5.0, 0.0).double()
        targets = CachedTargets("sampled", ids, w, entropy=entropy(lp), temperature=temperature)
    else:
        ids, values, tail = topk_targets(lp, 4)
        targets = CachedTargets("topk", ids, values.exp(), tail_logmass=tail, temperature=temperature)
    targets = CachedTargets(
        targets.mode,
        torch.where(kd_w.unsqueeze(1) > 0, targets.ids, -1),  # uncovered where no KD weight
        torch.where(kd_w.unsqueeze(1) > 0, targets.weights, 0.0),
        targets.entropy,
        targets.tail_logmass,
        temperature,
    )
    h = hidden.clone().requires_grad_()
    wt = weight.clone().requires_grad_()
    out = fused_cached_kd(h, wt, targets, kd_weights=kd_w, ce_labels=labels, ce_weights=ce_w,
                          kd_scale=0.3, ce_scale=0.7, chunk_size=chunk_size)  # fmt: skip
    out.loss.backward()

    # naive float64 reference with full logits and autograd
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    z = h2 @ w2.t()
    lq = torch.log_softmax(z / temperature, 1)
    rows = []
    for i in range(n):
        if kd_w[i] == 0:
            rows.append(torch.zeros((), dtype=torch.float64))
        elif mode == "sampled":
            keep = ids[i] >= 0
            wi = (counts[i][keep] / 5.0).double()
            rows.append(-(wi * lq[i, ids[i][keep]]).sum() - entropy(lp[i]))
        else:
            top = ids[i]
            mask = torch.zeros(v, dtype=torch.bool)
            mask[top] = True
            p, pt = lp[i, top].exp(), 1 - lp[i, top].exp().sum()
            qt = torch.logsumexp(lq[i][~mask], 0)
            rows.append((p * (lp[i, top] - lq[i, top])).sum() + pt * (pt.log() - qt))
    kd = (torch.stack(rows) * kd_w).sum()
    ce = (-torch.log_softmax(z, 1)[torch.arange(n), labels] * ce_w).sum()
    ref = 0.3 * kd + 0.7 * ce
    ref.backward()
    torch.testing.assert_close(out.loss.detach(), ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.kd_sum, kd.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(wt.grad, w2.grad, rtol=1e-9, atol=1e-12)


def test_many_samples_reproduce_the_online_loss():
    from hf_cot_distill.losses import fused_cached_kd, fused_linear_kd

    hidden, weight, _, kd_w, labels, ce_w = _fused_case(5)
    t_hidden = torch.randn(
        hidden.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)
    )
    t_weight = (
        torch.randn(weight.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * 2
    )
    lp = torch.log_softmax(t_hidden @ t_weight.t(), 1)
    samples = 255
    ids, counts, _ = sample_targets(lp, samples, torch.Generator().manual_seed(0))
    targets = CachedTargets(
        "sampled", ids, torch.where(ids >= 0, counts / samples, 0.0).double(), entropy=entropy(lp)
    )
    h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    online = fused_linear_kd(h1, weight, t_hidden, t_weight, kd_weights=kd_w)
    cached = fused_cached_kd(h2, weight, targets, kd_weights=kd_w)
    online.loss.backward()
    cached.loss.backward()
    # per position the gradient error is |w - p| <= ~3 sqrt(p (1 - p) / S) <= 1.5 / sqrt(S) per token
    tol = 1.5 / math.sqrt(samples) * float(kd_w.sum()) * float(weight.abs().max()) * weight.shape[0] ** 0.5
    assert (h1.grad - h2.grad).abs().max() < tol
    assert abs(float(online.loss.detach()) - float(cached.loss.detach())) < 9 * float(kd_w.sum()) / math.sqrt(
        samples
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(divergence="jsd"), "divergence='jsd': cannot be estimated from a teacher cache"),
        (dict(temperature=2.0), "temperature=2.0: the teacher cache was built at temperature 1.0"),
        (dict(uncover=True), "kd_weights: 1 positions carry a KD weight but have no cached target"),
    ],
)
def test_fused_cached_kd_refusals(kwargs, message):
    from hf_cot_distill.losses import fused_cached_kd

    hidden, weight, tl, kd_w, _, _ = _fused_case(1)
    lp = torch.log_softmax(tl, 1)
    ids, counts, _ = sample_targets(lp, 3)
    if kwargs.pop("uncover", False):
        ids[1] = -1
    targets = CachedTargets(
        "sampled", ids, torch.where(ids >= 0, counts / 3.0, 0.0).double(), entropy=entropy(lp)
    )
    with pytest.raises(ValueError, match=message):
        fused_cached_kd(hidden, weight, targets, kd_weights=kd_w, **kwargs)
