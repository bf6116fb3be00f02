"""Fused KD at low temperature: probabilities that underflow to 0 must not give NaN or inf.

With float32 logits spread over ~50 and more, ``softmax(logits / T)`` at ``T <= 0.5`` is exactly 0
on many tokens for *both* models; a mixture ``m = beta p + (1 - beta) q`` summed in probability
space is then 0, ``log m = -inf`` and ``0 * inf = NaN``. The reference here is float64 autograd
through :func:`divergence_loss` on the full logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_cot_distill.losses import divergence_loss, fused_linear_kd
from hf_cot_distill.losses.divergences import DIVERGENCES

N, V, H = 8, 64, 16
PARAMS = {"jsd": {"beta": 0.3}, "skew_kl": {"alpha": 0.1}, "skew_reverse_kl": {"alpha": 0.1}}
CASES = [(name, PARAMS.get(name, {})) for name in sorted(DIVERGENCES)] + [("jsd", {"beta": 0.5})]


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """Student and teacher hidden states and lm_head weights whose logits have a std of ~20
    (spread over the vocabulary ~50 and more), as a sharp trained model's."""
    g = torch.Generator().manual_seed(seed)
    sh = torch.randn(N, H, generator=g)
    sw = torch.randn(V, H, generator=g) * (20 / H**0.5)
    th = sh + 0.3 * torch.randn(N, H, generator=g)
    tw = sw * 1.1 + torch.randn(V, H, generator=g)
    kd_w = torch.rand(N, generator=g) + 0.5
    return {"sh": sh.requires_grad_(), "sw": sw.requires_grad_(), "th": th, "tw": tw, "kd_w": kd_w}


@pytest.mark.parametrize("temperature", [0.25, 0.5, 1.0, 2.0])
@pytest.mark.parametrize(("name", "params"), CASES)
def test_fused_kd_is_finite_and_exact_when_probabilities_underflow(
    name: str, params: dict, temperature: float
) -> None:
    x = _inputs()
    out = fused_linear_kd(
        x["sh"], x["sw"], x["th"], x["tw"], kd_weights=x["kd_w"], divergence=name,
        temperature=temperature, chunk_size=3, **params,
    )  # fmt: skip
    gh, gw = torch.autograd.grad(out.loss, [x["sh"], x["sw"]])

    sh, sw = x["sh"].detach().double().requires_grad_(), x["sw"].detach().double().requires_grad_()
    s, t = sh @ sw.t(), x["th"].double() @ x["tw"].double().t()
    spread = (s.max(1).values - s.min(1).values).detach()
    assert float(spread.min()) > 50  # the regime of the bug: p and q both 0 in float32 at T <= 0.5
    ref = divergence_loss(s, t, name, weights=x["kd_w"].double(), temperature=temperature, **params).sum
    rh, rw = torch.autograd.grad(ref, [sh, sw])

    for got in (out.loss, out.kd_sum, gh, gw):
        assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(out.loss.double(), ref.detach(), rtol=1e-4, atol=0)
    torch.testing.assert_close(out.kd_sum.double(), ref.detach(), rtol=1e-4, atol=0)
    for a, b in ((gh, rh), (gw, rw)):  # elementwise, relative to the largest entry
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("vocab_size", [np.int64(37), np.int32(37), np.uint16(37)])
def test_numpy_integer_vocab_size_is_accepted(vocab_size: object) -> None:
    x = _inputs()
    want = fused_linear_kd(x["sh"], x["sw"], x["th"], x["tw"], kd_weights=x["kd_w"], vocab_size=37)
    got = fused_linear_kd(x["sh"], x["sw"], x["th"], x["tw"], kd_weights=x["kd_w"], vocab_size=vocab_size)
    assert torch.equal(got.loss, want.loss)
    for bad in (True, np.bool_(True), 37.0, np.float64(37.0)):
        with pytest.raises(ValueError, match="vocab_size"):
            fused_linear_kd(x["sh"], x["sw"], x["th"], x["tw"], kd_weights=x["kd_w"], vocab_size=bad)
