"""Fused chunked KD from hidden states vs a naive full-logit float64 computation."""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_cot_distill.core.sections import Section
from hf_cot_distill.losses import (
    chunked,
    fused_linear_kd,
    gather_zero3,
    per_token_divergence,
    zero3_partitioned,
)

ALL = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.2}),
    ("jsd", {"beta": 1.0}),
    ("total_variation", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_reverse_kl", {"alpha": 0.1}),
]


def _rows(name: str, lq: torch.Tensor, lp: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """Per-row divergence written independently of the library (probability space)."""
    q, p = lq.exp(), lp.exp()

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * (a.log() - b.log())).sum(-1)

    if name == "jsd" and beta in (0.0, 1.0):
        name = "forward_kl" if beta == 0.0 else "reverse_kl"
    return {
        "forward_kl": lambda: kl(p, q),
        "reverse_kl": lambda: kl(q, p),
        "jsd": lambda: (
            beta * kl(p, beta * p + (1 - beta) * q) + (1 - beta) * kl(q, beta * p + (1 - beta) * q)
        ),
        "total_variation": lambda: 0.5 * (q - p).abs().sum(-1),
        "skew_kl": lambda: kl(p, alpha * p + (1 - alpha) * q),
        "skew_reverse_kl": lambda: kl(q, (1 - alpha) * p + alpha * q),
    }[name]()


def naive(
    p: dict[str, torch.Tensor], name: str, params: dict, *, temperature: float = 1.0, t2: bool = False,
    vocab_size: int | None = None, kd_scale: float = 1.0, ce_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Full (N, V) logits in float64; returns (loss, kd_sum, ce_sum)."""
    v = vocab_size or p["sw"].shape[0]
    s = p["sh"].double() @ p["sw"].double().t()
    if p.get("sb") is not None:
        s = s + p["sb"].double()
    t = p["th"].double() @ p["tw"].double().t()
    if p.get("tb") is not None:
        t = t + p["tb"].double()
    s, t = s[..., :v].reshape(-1, v), t[..., :v].reshape(-1, v)
    lq, lp = torch.log_softmax(s / temperature, -1), torch.log_softmax(t / temperature, -1)
    kd_rows = _rows(name, lq, lp, params.get("beta", 0.5), params.get("alpha", 0.1)) * (
        temperature**2 if t2 else 1
    )
    kd = (kd_rows * p["kd_w"].reshape(-1).double()).sum()
    labels, cw = p["labels"].reshape(-1), p["ce_w"].reshape(-1).double()
    ce_rows = -torch.log_softmax(s, -1).gather(1, labels.clamp(0, v - 1)[:, None]).squeeze(1)
    ce = (torch.where(cw > 0, ce_rows, 0.0) * cw).sum()
    return kd_scale * kd + ce_scale * ce, kd, ce


def make(
    n: int = 13, hs: int = 6, ht: int = 9, v: int = 37, pad_s: int = 0, pad_t: int = 0, *, dtype: torch.dtype = torch.float64,
    bias: bool = False, seed: int = 0, kd_frac: float = 0.7, ce_frac: float = 0.5, batch: tuple[int, ...] = (),
) -> dict[str, torch.Tensor]:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    shape = batch or (n,)

    def r(*s: int, scale: float = 1.0, grad: bool = False) -> torch.Tensor:
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_(grad)

    kd_w = torch.rand(shape, generator=g, dtype=torch.float64) * (torch.rand(shape, generator=g) < kd_frac)
    ce_w = torch.rand(shape, generator=g, dtype=torch.float64) * (torch.rand(shape, generator=g) < ce_frac)
    return {
        "sh": r(*shape, hs, grad=True),
        "sw": r(v + pad_s, hs, scale=0.8, grad=True),
        "sb": r(v + pad_s, scale=0.5, grad=True) if bias else None,
        "th": r(*shape, ht),
        "tw": r(v + pad_t, ht, scale=0.8),
        "tb": r(v + pad_t, scale=0.5) if bias else None,
        "kd_w": kd_w.to(dtype),
        "ce_w": ce_w.to(dtype),
        "labels": torch.randint(0, v, shape, generator=g),
        "sec": torch.randint(0, len(Section), shape, generator=g),
    }


def ours(p: dict[str, torch.Tensor], name: str, params: dict, **kw: object) -> chunked.FusedKDOutput:
    return fused_linear_kd(
        p["sh"], p["sw"], p["th"], p["tw"], kd_weights=p["kd_w"], ce_labels=p["labels"], ce_weights=p["ce_w"],
        student_bias=p["sb"], teacher_bias=p["tb"], divergence=name, section_ids=p["sec"], **params, **kw,
    )  # fmt: skip


def grads(p: dict[str, torch.Tensor], loss: torch.Tensor) -> list[torch.Tensor]:
    leaves = [p[k] for k in ("sh", "sw", "sb") if p[k] is not None]
    return list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize(("name", "params"), ALL)
@pytest.mark.parametrize(("temperature", "t2", "chunk"), [(1.0, False, 4), (2.0, True, 5), (0.5, False, 64)])
def test_fused_equals_naive_float64(
    name: str, params: dict, temperature: float, t2: bool, chunk: int
) -> None:
    p = make(bias=True, pad_s=3, pad_t=5)
    kw = {"temperature": temperature, "scale_by_temperature_squared": t2, "kd_scale": 0.3, "ce_scale": 0.7}
    out = ours(p, name, params, vocab_size=37, chunk_size=chunk, **kw)
    ref, kd, ce = naive(
        p,
        name,
        params,
        t2=t2,
        vocab_size=37,
        **{k: v for k, v in kw.items() if k != "scale_by_temperature_squared"},
    )
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.kd_sum, kd.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.ce_sum, ce.detach(), rtol=1e-10, atol=1e-12)
    for a, b in zip(grads(p, out.loss), grads(p, ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert int(out.kd_count) == int((p["kd_w"] > 0).sum()) and int(out.ce_count) == int((p["ce_w"] > 0).sum())


@pytest.mark.parametrize(("name", "params"), ALL)
def test_fused_float32_within_1e5_relative(name: str, params: dict) -> None:
    p = make(n=29, hs=16, ht=24, v=203, dtype=torch.float32, bias=True, seed=3)
    out = ours(p, name, params, chunk_size=7, temperature=1.3)
    ref, _, _ = naive(p, name, params, temperature=1.3)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads(p, out.loss), grads(p, ref)):
        assert float((a.double() - b).norm() / b.norm()) < 1e-5


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 17), v=st.integers(2, 40), chunk=st.integers(1, 9), kd_frac=st.floats(0, 1),
    ce_frac=st.floats(0, 1), name=st.sampled_from([a for a, _ in ALL]), seed=st.integers(0, 1000),
)  # fmt: skip
def test_fused_equals_naive_for_random_shapes_and_selections(
    n: int, v: int, chunk: int, kd_frac: float, ce_frac: float, name: str, seed: int
) -> None:
    p = make(
        n=n, hs=3, ht=5, v=v, pad_s=seed % 3, pad_t=seed % 2, seed=seed, kd_frac=kd_frac, ce_frac=ce_frac
    )
    out = ours(p, name, {}, vocab_size=v, chunk_size=chunk, temperature=1.5)
    ref, _, _ = naive(p, name, {}, vocab_size=v, temperature=1.5)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads(p, out.loss), grads(p, ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_padded_vocab_rows_are_excluded_and_get_zero_gradient() -> None:
    p = make(pad_s=4, pad_t=2, bias=True)
    out = ours(p, "forward_kl", {}, vocab_size=37, chunk_size=5)
    g = grads(p, out.loss)
    assert torch.all(g[1][37:] == 0) and torch.all(g[2][37:] == 0)
    with torch.no_grad():  # whatever the padded rows hold, nothing changes
        p["sw"][37:] = 100.0
        p["tw"][37:] = -100.0
    torch.testing.assert_close(ours(p, "forward_kl", {}, vocab_size=37).loss, out.loss)
    with pytest.raises(ValueError, match="vocab_size"):
        ours(p, "forward_kl", {})


def test_tied_embeddings_get_both_gradients() -> None:
    torch.manual_seed(0)
    emb = torch.nn.Embedding(23, 8).double()
    ids = torch.randint(0, 23, (2, 5))
    mix = torch.randn(8, 8, dtype=torch.float64)
    th, tw = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(23, 6, dtype=torch.float64)
    kd_w = torch.ones(2, 5, dtype=torch.float64)
    labels = torch.randint(0, 23, (2, 5))

    def run(fused: bool) -> torch.Tensor:
        emb.zero_grad()
        h = torch.tanh(emb(ids) @ mix)  # the "model"; the lm_head is the embedding matrix itself
        if fused:
            loss = fused_linear_kd(
                h, emb.weight, th, tw, kd_weights=kd_w, ce_labels=labels, chunk_size=3
            ).loss
        else:
            p = {
                "sh": h,
                "sw": emb.weight,
                "th": th,
                "tw": tw,
                "kd_w": kd_w,
                "ce_w": torch.ones(2, 5),
                "labels": labels,
            }
            loss = naive(p, "forward_kl", {})[0]
        loss.backward()
        return emb.weight.grad.clone()

    torch.testing.assert_close(run(True), run(False), rtol=1e-10, atol=1e-12)


def test_bf16_inputs_accumulate_in_float32() -> None:
    p = make(n=21, hs=16, ht=24, v=101, dtype=torch.bfloat16, bias=True, seed=5)
    out = ours(p, "jsd", {}, chunk_size=4)
    assert out.loss.dtype == torch.float32
    g = grads(p, out.loss)
    assert [x.dtype for x in g] == [torch.bfloat16] * 3
    # Reference: the same bf16 logits (the product is in bf16, as in the model), math in float64.
    s = torch.nn.functional.linear(p["sh"], p["sw"], p["sb"]).double()
    t = torch.nn.functional.linear(p["th"], p["tw"], p["tb"]).double()
    lq, lp = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    kd = (_rows("jsd", lq, lp, 0.5, 0.1) * p["kd_w"].double()).sum()
    ce = (-lq.gather(1, p["labels"][:, None]).squeeze(1) * p["ce_w"].double()).sum()
    torch.testing.assert_close(out.loss.double(), kd + ce, rtol=1e-5, atol=1e-6)
    ref_g = torch.autograd.grad(kd + ce, [p["sh"], p["sw"], p["sb"]])
    for a, b in zip(g, ref_g):
        assert (
            float((a.double() - b.double()).norm() / b.double().norm()) < 2e-2
        )  # bf16 rounding of the result


def test_empty_selection_gives_zero_loss_counts_and_gradients() -> None:
    p = make()
    p["kd_w"] = torch.zeros_like(p["kd_w"])
    p["ce_w"] = torch.zeros_like(p["ce_w"])
    out = ours(p, "jsd", {}, kd_scale=1.0 / 0.0001)
    assert float(out.loss.detach()) == 0.0 and int(out.kd_count) == 0 and int(out.ce_count) == 0
    for g in grads(p, out.loss):
        assert torch.equal(g, torch.zeros_like(g))
    assert torch.equal(out.section_kd_count, torch.zeros(4, dtype=torch.long))


def test_two_half_batches_equal_the_whole_batch() -> None:
    p = make(n=20, seed=7)
    whole = ours(p, "forward_kl", {}, chunk_size=6)
    halves = [
        fused_linear_kd(
            p["sh"][sl], p["sw"], p["th"][sl], p["tw"], kd_weights=p["kd_w"][sl], ce_labels=p["labels"][sl],
            ce_weights=p["ce_w"][sl], chunk_size=6,
        )
        for sl in (slice(0, 9), slice(9, 20))
    ]  # fmt: skip
    torch.testing.assert_close(halves[0].kd_sum + halves[1].kd_sum, whole.kd_sum)
    assert int(halves[0].kd_count + halves[1].kd_count) == int(whole.kd_count)
    torch.testing.assert_close(halves[0].ce_sum + halves[1].ce_sum, whole.ce_sum)
    # Normalising once by the global counts (what kd_scale / ce_scale are for) gives the same gradients.
    n_kd, n_ce = int(whole.kd_count), int(whole.ce_count)
    scaled = lambda q: ours(q, "forward_kl", {}, kd_scale=0.5 / n_kd, ce_scale=0.5 / n_ce).loss  # noqa: E731
    g_whole = grads(p, scaled(p))
    total = sum(
        fused_linear_kd(
            p["sh"][sl], p["sw"], p["th"][sl], p["tw"], kd_weights=p["kd_w"][sl], ce_labels=p["labels"][sl],
            ce_weights=p["ce_w"][sl], kd_scale=0.5 / n_kd, ce_scale=0.5 / n_ce,
        ).loss
        for sl in (slice(0, 9), slice(9, 20))
    )  # fmt: skip
    for a, b in zip(grads(p, total), g_whole):
        torch.testing.assert_close(a, b)


def test_section_statistics_add_up_and_batch_dims_are_accepted() -> None:
    p = make(batch=(3, 7), seed=2)
    out = ours(p, "forward_kl", {}, chunk_size=4)
    torch.testing.assert_close(out.section_kd_sum.sum(), out.kd_sum)
    torch.testing.assert_close(out.section_ce_sum.sum(), out.ce_sum)
    for s in Section:
        sel = (p["sec"] == int(s)) & (p["kd_w"] > 0)
        assert int(out.section_kd_count[int(s)]) == int(sel.sum())
    assert not out.section_kd_sum.requires_grad and out.loss.requires_grad
    assert grads(p, out.loss)[0].shape == (3, 7, 6)


def test_only_selected_positions_are_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = chunked._FusedPass.run_kd

    def spy(self: chunked._FusedPass, idx: torch.Tensor) -> None:
        seen.append(int(idx.numel()))
        original(self, idx)

    monkeypatch.setattr(chunked._FusedPass, "run_kd", spy)
    p = make(n=40, kd_frac=0.5, seed=11)
    ours(p, "forward_kl", {}, chunk_size=8)
    assert sum(seen) == int((p["kd_w"] > 0).sum()) < 40
    assert max(seen) <= 8


def test_backward_scales_with_the_incoming_gradient_and_frozen_weights_get_none() -> None:
    p = make(seed=4)
    g1 = grads(p, ours(p, "reverse_kl", {}).loss)
    g3 = grads(p, 3.0 * ours(p, "reverse_kl", {}).loss)
    for a, b in zip(g1, g3):
        torch.testing.assert_close(3.0 * a, b)
    p["sw"].requires_grad_(False)
    out = ours(p, "reverse_kl", {})
    (gh,) = torch.autograd.grad(out.loss, [p["sh"]])
    torch.testing.assert_close(gh, g1[0])


def test_zero3_detection_and_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = torch.zeros(2, 2)
    part = torch.nn.Parameter(torch.zeros(3, 2))
    part.ds_id = 7  # what DeepSpeed ZeRO-3 attaches to partitioned parameters
    assert zero3_partitioned(plain, None, part) == [part]
    assert isinstance(gather_zero3([plain, None]), contextlib.nullcontext)

    calls: list[tuple[list[torch.Tensor], object]] = []

    @contextlib.contextmanager
    def fake_gathered(params: list[torch.Tensor], modifier_rank: object = "unset"):  # noqa: ANN202
        calls.append((params, modifier_rank))
        yield

    fake = types.ModuleType("deepspeed")
    fake.zero = types.SimpleNamespace(GatheredParameters=fake_gathered)
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    p = make(seed=1)
    p["sw"].ds_id = 1  # the student lm_head pretends to be partitioned
    out = ours(p, "forward_kl", {})
    assert len(calls) == 1 and calls[0][0] == [p["sw"]] and calls[0][1] is None
    assert out.loss.requires_grad
    # Already gathered by its module's hooks (status AVAILABLE): left to those hooks.
    p["sw"].ds_status = types.SimpleNamespace(name="AVAILABLE")
    ours(p, "forward_kl", {})
    assert len(calls) == 1
    p["sw"].ds_status = types.SimpleNamespace(name="NOT_AVAILABLE")
    ours(p, "forward_kl", {})
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda p: p.update(sw=p["sw"].detach()[:, :5]), ValueError, "student_weight: .*hidden size"),
        (lambda p: p.update(th=p["th"][:-1]), ValueError, "teacher_hidden: positions"),
        (lambda p: p.update(sw=p["sw"].detach().float()), TypeError, "student_weight: dtype"),
        (lambda p: p.update(kd_w=-p["kd_w"] - 1), ValueError, "kd_weights.*>= 0"),
        (lambda p: p.update(ce_w=p["ce_w"] * float("nan")), ValueError, "ce_weights.*NaN"),
        (lambda p: p.update(labels=p["labels"] + 100), ValueError, "ce_labels: position"),
        (lambda p: p.update(labels=p["labels"].int()), TypeError, "ce_labels"),
        (lambda p: p.update(sec=p["sec"] + 4), ValueError, "section_ids"),
        (lambda p: p.update(tb=torch.zeros(3, dtype=torch.float64)), ValueError, "teacher_bias"),
    ],
)
def test_bad_inputs_raise_with_field_and_fix(change, error: type, match: str) -> None:  # noqa: ANN001
    p = make()
    change(p)
    with pytest.raises(error, match=match):
        ours(p, "forward_kl", {})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"divergence": "nope"}, "unknown name 'nope'"),
        ({"temperature": -1.0}, "temperature"),
        ({"beta": 2.0, "divergence": "jsd"}, "beta"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"kd_scale": float("inf")}, "kd_scale"),
        ({"vocab_size": 99}, "vocab_size"),
    ],
)
def test_bad_settings_raise(kwargs: dict, match: str) -> None:
    p = make()
    args = {"divergence": "forward_kl", **kwargs}
    with pytest.raises(ValueError, match=match):
        ours(p, args.pop("divergence"), {}, **args)


MASKED_COLUMNS = [0, 5, 20, 36]
# Divergences whose true value is +inf when the student has mass on a token the teacher masks.
INFINITE_WHEN_TEACHER_MASKS = {("reverse_kl", None), ("jsd", 1.0)}


def naive_with_bias_fill(
    p: dict[str, torch.Tensor],
    name: str,
    params: dict,
    fill: float,
    sides: tuple[str, ...],
    temperature: float,
) -> torch.Tensor:
    """0.3 KD + 0.7 CE from full float64 logits (``per_token_divergence``), ``fill`` at the masked columns."""
    s = p["sh"] @ p["sw"].t() + p["sb"]
    t = p["th"] @ p["tw"].t() + p["tb"]
    mask = torch.zeros(s.shape[-1], dtype=torch.bool)
    mask[MASKED_COLUMNS] = True
    s = s.masked_fill(mask, fill) if "sb" in sides else s
    t = t.masked_fill(mask, fill) if "tb" in sides else t
    kd = (per_token_divergence(s, t, name, temperature=temperature, **params) * p["kd_w"]).sum()
    ce = torch.nn.functional.cross_entropy(s, p["labels"], reduction="none")
    return 0.3 * kd + 0.7 * (torch.where(p["ce_w"] > 0, ce, 0.0) * p["ce_w"]).sum()


@pytest.mark.parametrize("sides", [("tb",), ("tb", "sb")])
@pytest.mark.parametrize(("name", "params"), ALL)
@pytest.mark.parametrize(("temperature", "chunk"), [(1.0, 4), (0.5, None), (2.0, 64)])
def test_masked_vocabulary_bias_follows_zero_log_zero(
    sides: tuple[str, ...], name: str, params: dict, temperature: float, chunk: int | None
) -> None:
    """A ``-inf`` bias (vocabulary mask) gives what full logits with ``-1e4`` there give: the
    probability underflows to exactly 0 in float64, so the mask-free formulas are exact."""
    p = make(bias=True, seed=3)
    p["labels"][torch.isin(p["labels"], torch.tensor(MASKED_COLUMNS))] = 1  # CE on unmasked tokens
    q = dict(p)
    for key in sides:
        q[key] = p[key].detach().clone()
        q[key][MASKED_COLUMNS] = float("-inf")
        q[key].requires_grad_(key == "sb")
    out = ours(q, name, params, temperature=temperature, chunk_size=chunk, kd_scale=0.3, ce_scale=0.7)
    if sides == ("tb",) and (name, params.get("beta")) in INFINITE_WHEN_TEACHER_MASKS:
        assert torch.isposinf(out.kd_sum)
        return
    ref = naive_with_bias_fill(p, name, params, -1e4, sides, temperature)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads(q, out.loss), grads(p, ref)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_masked_path_is_taken_only_for_a_negative_infinite_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = chunked._FusedPass._masked_rows_and_grad
    monkeypatch.setattr(
        chunked._FusedPass, "_masked_rows_and_grad", lambda self, *a: calls.append(1) or original(self, *a)
    )
    p = make(bias=True)
    ours(p, "forward_kl", {})
    assert not calls
    p["tb"] = p["tb"].detach().clone()
    p["tb"][3] = float("-inf")
    ours(p, "forward_kl", {}, chunk_size=4)
    assert len(calls) == -(-int((p["kd_w"] > 0).sum()) // 4)  # every chunk
    assert chunked.masked_logits(37, None, p["tb"]) and not chunked.masked_logits(3, None, p["tb"])


def test_numpy_and_tensor_scalars_are_accepted() -> None:
    p = make()
    want = ours(p, "jsd", {"beta": 0.25}, temperature=2.0, chunk_size=4)
    got = ours(p, "jsd", {"beta": np.float32(0.25)}, temperature=np.float32(2.0), chunk_size=np.int64(4))
    assert torch.equal(got.loss, want.loss)
    got = ours(p, "jsd", {"beta": torch.tensor(0.25)}, temperature=torch.tensor(2.0), chunk_size=4)
    assert torch.equal(got.loss, want.loss)
    with pytest.raises(ValueError, match="chunk_size=True: must be an int >= 1"):
        ours(p, "jsd", {}, chunk_size=True)
