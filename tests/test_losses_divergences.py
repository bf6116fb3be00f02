"""Divergences as pure functions: float64 naive references (values and gradients), limits, errors,
reductions; and each entry's analytic in-place gradient tied to autograd through its own rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_cot_distill.losses import (
    DIVERGENCES,
    LossSum,
    divergence_loss,
    forward_kl,
    jsd,
    merge_loss_sums,
    per_token_divergence,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    total_variation,
)


def _kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) of probability rows, written from the definition."""
    return (a * (a.log() - b.log())).sum(-1)


def reference(
    name: str, s: torch.Tensor, t: torch.Tensor, temperature: float, beta: float, alpha: float
) -> torch.Tensor:
    """Per-row divergence from probabilities (not log-probs), float64, textbook formulas."""
    q = torch.softmax(s.double() / temperature, -1)
    p = torch.softmax(t.double() / temperature, -1)
    if name == "forward_kl":
        return _kl(p, q)
    if name == "reverse_kl":
        return _kl(q, p)
    if name == "jsd":
        if beta == 0:
            return _kl(p, q)
        if beta == 1:
            return _kl(q, p)
        m = beta * p + (1 - beta) * q
        return beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    if name == "total_variation":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "skew_kl":
        return _kl(p, alpha * p + (1 - alpha) * q)
    if name == "skew_reverse_kl":
        return _kl(q, (1 - alpha) * p + alpha * q)
    raise AssertionError(name)


CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.1}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("total_variation", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_kl", {"alpha": 0.0}),
    ("skew_reverse_kl", {"alpha": 0.3}),
]


def _logits(*shape: int, seed: int = 0, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale, torch.randn(
        *shape, generator=g, dtype=torch.float64
    ) * scale


def test_registry_has_every_divergence_of_the_paper() -> None:
    assert set(DIVERGENCES) == {
        "forward_kl",
        "reverse_kl",
        "jsd",
        "total_variation",
        "skew_kl",
        "skew_reverse_kl",
    }


@pytest.mark.parametrize(("name", "params"), CASES)
@pytest.mark.parametrize(("temperature", "t2"), [(1.0, False), (2.5, True), (0.7, False)])
def test_value_and_gradients_match_float64_reference(
    name: str, params: dict, temperature: float, t2: bool
) -> None:
    s, t = _logits(3, 5, 11)
    w = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w[0, 1] = 0.0  # an unselected position
    s1, t1 = s.clone().requires_grad_(), t.clone().requires_grad_()
    s2, t2_ = s.clone().requires_grad_(), t.clone().requires_grad_()
    ours = divergence_loss(
        s1, t1, name, weights=w, temperature=temperature, scale_by_temperature_squared=t2, **params
    )
    ref_rows = reference(name, s2, t2_, temperature, params.get("beta", 0.5), params.get("alpha", 0.1))
    ref = (ref_rows * w).sum() * (temperature**2 if t2 else 1.0)
    torch.testing.assert_close(ours.sum, ref, rtol=1e-10, atol=1e-12)
    assert int(ours.count) == 14
    (ours.sum * 1.7).backward()
    (ref * 1.7).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(t1.grad, t2_.grad, rtol=1e-9, atol=1e-12)


def test_named_functions_are_the_registry_entries() -> None:
    s, t = _logits(4, 9)
    for fn, name, params in [
        (forward_kl, "forward_kl", {}),
        (reverse_kl, "reverse_kl", {}),
        (jsd, "jsd", {"beta": 0.3}),
        (total_variation, "total_variation", {}),
        (skew_kl, "skew_kl", {"alpha": 0.2}),
        (skew_reverse_kl, "skew_reverse_kl", {"alpha": 0.2}),
    ]:
        torch.testing.assert_close(fn(s, t, **params).sum, divergence_loss(s, t, name, **params).sum)


def test_true_divergence_not_cross_entropy() -> None:
    # Identical distributions: every divergence is 0; the cross-entropy would be the entropy (> 0).
    s, _ = _logits(2, 7)
    for name in DIVERGENCES:
        assert float(divergence_loss(s, s.clone(), name).sum) == pytest.approx(0.0, abs=1e-12)


def test_jsd_endpoints_follow_trl_and_are_limits_of_the_scaled_jsd() -> None:
    s, t = _logits(3, 13)
    fkl = per_token_divergence(s, t, "forward_kl")
    rkl = per_token_divergence(s, t, "reverse_kl")
    torch.testing.assert_close(per_token_divergence(s, t, "jsd", beta=0.0), fkl)
    torch.testing.assert_close(per_token_divergence(s, t, "jsd", beta=1.0), rkl)
    eps = 1e-7  # jsd(beta) / beta -> KL(p||q) and jsd(beta) / (1 - beta) -> KL(q||p), as documented
    torch.testing.assert_close(per_token_divergence(s, t, "jsd", beta=eps) / eps, fkl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        per_token_divergence(s, t, "jsd", beta=1 - eps) / eps, rkl, rtol=1e-4, atol=1e-6
    )
    # Symmetric at beta = 0.5.
    torch.testing.assert_close(per_token_divergence(s, t, "jsd"), per_token_divergence(t, s, "jsd"))
    # alpha = 0 skews reduce to the plain KLs.
    torch.testing.assert_close(per_token_divergence(s, t, "skew_kl", alpha=0.0), fkl)
    torch.testing.assert_close(per_token_divergence(s, t, "skew_reverse_kl", alpha=0.0), rkl)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_jsd_matches_trl_gkd(beta: float) -> None:
    gkd = pytest.importorskip("trl.experimental.gkd")
    s, t = _logits(2, 3, 17)
    ours = divergence_loss(s, t, "jsd", beta=beta, temperature=1.5).sum
    theirs = gkd.GKDTrainer.generalized_jsd_loss(s, t, beta=beta, temperature=1.5, reduction="sum")
    torch.testing.assert_close(ours, theirs)


def test_low_precision_inputs_are_computed_in_float32() -> None:
    s, t = _logits(4, 33)
    out = divergence_loss(s.bfloat16(), t.bfloat16(), "forward_kl")
    assert out.sum.dtype == torch.float32
    ref = divergence_loss(s.bfloat16().double(), t.bfloat16().double(), "forward_kl").sum
    torch.testing.assert_close(out.sum.double(), ref, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    split=st.integers(0, 12),
    name=st.sampled_from(sorted(DIVERGENCES)),
    seed=st.integers(0, 2**16),
)
def test_sum_count_reduction_is_exact_across_splits(n: int, split: int, name: str, seed: int) -> None:
    split = min(split, n)
    s, t = _logits(n, 6, seed=seed)
    w = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * (
        torch.arange(n) % 3 != 0
    )
    whole = divergence_loss(s, t, name, weights=w)
    halves = merge_loss_sums(
        [
            divergence_loss(s[:split], t[:split], name, weights=w[:split]),
            divergence_loss(s[split:], t[split:], name, weights=w[split:]),
        ]
    )
    torch.testing.assert_close(halves.sum, whole.sum)
    assert int(halves.count) == int(whole.count) == int((w > 0).sum())
    torch.testing.assert_close(halves.mean(), whole.mean())


def test_empty_selection_is_zero_not_nan() -> None:
    s, t = _logits(3, 8)
    s.requires_grad_()
    out = divergence_loss(s, t, "jsd", weights=torch.zeros(3, dtype=torch.float64))
    assert float(out.sum.detach()) == 0.0 and int(out.count) == 0 and float(out.mean().detach()) == 0.0
    out.mean().backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    assert isinstance(out, LossSum)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"divergence": "kl"}, r"unknown name 'kl'.*forward_kl"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"divergence": "jsd", "beta": 1.5}, "beta"),
        ({"divergence": "skew_kl", "alpha": 1.0}, "alpha"),
        ({"divergence": "skew_reverse_kl", "alpha": -0.1}, "alpha"),
        ({"weights": -torch.ones(2, dtype=torch.float64)}, "weights.*>= 0"),
        ({"weights": torch.tensor([1.0, float("nan")], dtype=torch.float64)}, "weights.*NaN"),
        ({"weights": torch.ones(3, dtype=torch.float64)}, "weights: shape"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_field(kwargs: dict, match: str) -> None:
    s, t = _logits(2, 5)
    with pytest.raises(ValueError, match=match):
        divergence_loss(s, t, **kwargs)


def test_shape_and_type_errors() -> None:
    s, t = _logits(2, 5)
    with pytest.raises(ValueError, match="teacher_logits: shape"):
        divergence_loss(s, t[:, :4])
    with pytest.raises(TypeError, match="student_logits"):
        divergence_loss(s.long(), t)
    with pytest.raises(TypeError, match="weights"):
        divergence_loss(s, t, weights=torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="parts"):
        merge_loss_sums([])


def test_temperature_squared_scaling_is_exactly_t_squared() -> None:
    s, t = _logits(3, 7)
    plain = divergence_loss(s, t, temperature=3.0).sum
    scaled = divergence_loss(s, t, temperature=3.0, scale_by_temperature_squared=True).sum
    assert float(scaled) == pytest.approx(9.0 * float(plain), rel=1e-12)
    assert math.isfinite(float(plain))


# Masked logits (-inf, e.g. a vocabulary mask): 0 log 0 = 0. The reference puts -1e4 where the
# mask is: finite logits whose probability underflows to exactly 0 in float64, so the mask-free
# formulas give the true value and gradient there.
MASKED = [0, 4, 10]


def _masked(x: torch.Tensor, fill: float) -> torch.Tensor:
    x = x.clone()
    x[..., MASKED] = fill
    return x.requires_grad_()


# (side masked, divergence) pairs whose true value is +inf: mass where the other side's is 0.
INFINITE = {
    ("teacher", "reverse_kl", 0.5),
    ("teacher", "jsd", 1.0),
    ("student", "forward_kl", 0.5),
    ("student", "jsd", 0.0),
    ("student", "skew_kl", 0.0),
}


@pytest.mark.parametrize("side", ["teacher", "student", "both"])
@pytest.mark.parametrize(("name", "params"), CASES)
def test_masked_logits_follow_zero_log_zero(side: str, name: str, params: dict) -> None:
    s, t = _logits(3, 11, seed=4)
    temperature = 2.5
    fill = {k: float("-inf") if side in (k, "both") else None for k in ("student", "teacher")}
    inputs = []
    for value in (float("-inf"), -1e4):
        s1 = _masked(s, value) if fill["student"] else s.clone().requires_grad_()
        t1 = _masked(t, value) if fill["teacher"] else t.clone().requires_grad_()
        inputs.append((s1, t1))
    (s_inf, t_inf), (s_ref, t_ref) = inputs
    rows = per_token_divergence(s_inf, t_inf, name, temperature=temperature, **params)
    key = (side, name, params.get("beta", params.get("alpha", 0.5)))
    if key in INFINITE:
        assert torch.isposinf(rows).all(), rows
        return
    ref = per_token_divergence(s_ref, t_ref, name, temperature=temperature, **params)
    assert torch.isfinite(rows).all(), rows
    torch.testing.assert_close(rows, ref, rtol=1e-12, atol=1e-12)
    (rows * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)).sum().backward()
    (ref * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(s_inf.grad, s_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t_inf.grad, t_ref.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "number",
    [np.float32(2.0), np.float64(2.0), np.int64(2), np.array(2.0), torch.tensor(2.0), torch.tensor(2)],
    ids=["np.float32", "np.float64", "np.int64", "0-d ndarray", "0-d tensor", "0-d int tensor"],
)
def test_any_real_scalar_is_accepted_and_cast(number: object) -> None:
    s, t = _logits(2, 5)
    want = divergence_loss(s, t, "skew_kl", temperature=2.0, scale_by_temperature_squared=True, alpha=0.25)
    got = divergence_loss(
        s, t, "skew_kl", temperature=number, scale_by_temperature_squared=True, alpha=number / 8
    )
    assert got.sum.dtype == torch.float64 and float(got.sum) == float(want.sum)
    rows = per_token_divergence(s, t, "jsd", temperature=number, beta=number / 4)
    assert torch.equal(rows, per_token_divergence(s, t, "jsd", temperature=2.0, beta=0.5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": True}, r"temperature: got True"),
        ({"temperature": "2"}, r"temperature: got '2'"),
        ({"temperature": torch.tensor([2.0])}, r"temperature: got tensor\(\[2\.\]\)"),
        ({"divergence": "jsd", "beta": np.bool_(False)}, "beta: got"),
        ({"divergence": "skew_kl", "alpha": np.float32(1.0)}, "alpha: got"),
    ],
)
def test_non_numbers_are_refused(kwargs: dict, match: str) -> None:
    s, t = _logits(2, 5)
    with pytest.raises(ValueError, match=match):
        divergence_loss(s, t, **kwargs)


# ---- the two forms of each divergence, tied ----------------------------------------------
# Each registry entry holds its value (``rows``, autograd) and the same value with its analytic
# student gradient (``rows_and_grad``, in place, for the fused pass). Every entry, at every
# kind of parameter (the endpoints included), must agree with autograd through its own ``rows``.

FORM_CASES = [
    (name, param)
    for name, entry in DIVERGENCES.items()
    for param in {"beta": [0.0, 0.1, 0.5, 0.9, 1.0], "alpha": [0.0, 0.1, 0.5, 0.9], None: [0.0]}[
        entry.param_name
    ]
]

# The endpoints: parameters at which an entry is exactly a plain KL (and computed as one).
PLAIN_AT = {
    ("jsd", 0.0): "forward_kl",
    ("jsd", 1.0): "reverse_kl",
    ("skew_kl", 0.0): "forward_kl",
    ("skew_reverse_kl", 0.0): "reverse_kl",
}


def _both_forms(
    name: str, param: float, z: torch.Tensor, tz: torch.Tensor, w: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``(rows, d(w . rows)/dz)`` by autograd through ``rows`` and by ``rows_and_grad``, checking
    the in-place contract on the way (``lq`` untouched; ``grad``, ``free`` distinct given buffers)."""
    entry = DIVERGENCES[name]
    z = z.detach().requires_grad_()
    rows = entry.rows(torch.log_softmax(z, -1), torch.log_softmax(tz, -1), param)
    (grad,) = torch.autograd.grad((rows * w).sum(), z)

    lq = torch.log_softmax(z.detach(), -1)
    lq_before, lp = lq.clone(), torch.log_softmax(tz, -1)
    scratch = [torch.full_like(lq, float("nan")) for _ in range(entry.n_scratch)]  # garbage in
    got_rows, got_grad, free = entry.rows_and_grad(lq, lp, scratch, param)
    assert torch.equal(lq, lq_before), "rows_and_grad wrote to lq"
    given = [lp, *scratch]
    assert any(got_grad is b for b in given) and any(free is b for b in given) and got_grad is not free
    return (rows.detach(), grad), (got_rows, got_grad * w.unsqueeze(-1))


@pytest.mark.parametrize(("name", "param"), FORM_CASES)
@pytest.mark.parametrize("temperature", [0.25, 1.0, 2.5])
@pytest.mark.parametrize("shape", [(7, 13), (3, 1), (1, 64)], ids=["7x13", "V=1", "1x64"])
def test_analytic_gradient_is_autograd_of_the_rows(
    name: str, param: float, temperature: float, shape: tuple[int, int]
) -> None:
    s, t = _logits(*shape, seed=shape[1], scale=4.0)
    w = torch.rand(shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.5
    (rows, grad), (got_rows, got_grad) = _both_forms(name, param, s / temperature, t / temperature, w)
    torch.testing.assert_close(got_rows, rows, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_grad, grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("side", ["teacher", "student", "both"])
@pytest.mark.parametrize(("name", "param"), FORM_CASES)
def test_forms_agree_where_logits_are_masked(side: str, name: str, param: float) -> None:
    # The fused pass runs rows_and_grad on finite logits only (a -inf bias sends it through
    # autograd of rows): with -1e4 for the mask (probability exactly 0 in float64, log-prob
    # finite) it must give what autograd through rows gives at -inf, wherever that is finite.
    s, t = _logits(3, 11, seed=4)
    temperature = 2.5
    plain = PLAIN_AT.get((name, param), name)
    infinite = (side, plain) in {("teacher", "reverse_kl"), ("student", "forward_kl")}
    masked = {k: side in (k, "both") for k in ("student", "teacher")}
    w = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    z_inf, t_inf, z_fin, t_fin = (
        (_masked(x, fill).detach() if masked[who] else x) / temperature
        for fill in (float("-inf"), -1e4)
        for who, x in (("student", s), ("teacher", t))
    )
    (rows, grad), _ = _both_forms(name, param, z_inf, t_inf, w)
    if infinite:  # mass where the other side has none, weighed by the log-ratio: the true +inf
        assert torch.isposinf(rows).all(), rows
        return
    _, (got_rows, got_grad) = _both_forms(name, param, z_fin, t_fin, w)
    assert torch.isfinite(rows).all() and torch.isfinite(got_grad).all()
    torch.testing.assert_close(got_rows, rows, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "param"), sorted(PLAIN_AT))
def test_endpoints_are_computed_as_the_plain_kl_in_both_forms(name: str, param: float) -> None:
    s, t = _logits(5, 23, seed=7)
    w = torch.ones(5, dtype=torch.float64)
    at_endpoint = _both_forms(name, param, s, t, w)
    plain = _both_forms(PLAIN_AT[name, param], 0.0, s, t, w)
    for a, b in zip(at_endpoint, plain):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
