"""Compute accounting: parameter counts, the FLOP formula, peak memory and running totals."""

from __future__ import annotations

import numpy as np

from hf_cot_distill.models.compute import (
    ComputeAccounting,
    body_parameter_count,
    kd_step_flops,
    peak_memory_bytes,
)
from tests.tiny_models import tiny_qwen2


def test_body_parameter_count_excludes_embeddings_and_head() -> None:
    untied = tiny_qwen2(vocab_size=100, hidden_size=32)
    tied = tiny_qwen2(vocab_size=100, hidden_size=32, tie_word_embeddings=True)
    total_untied = sum(p.numel() for p in untied.parameters())
    assert body_parameter_count(untied) == total_untied - 2 * 100 * 32
    assert body_parameter_count(tied) == body_parameter_count(untied)


def test_flop_formula() -> None:
    s, t = kd_step_flops(
        student_body_params=10, student_hidden=4, vocab_size=100, tokens_forwarded=7, head_positions=5,
        teacher_body_params=20, teacher_hidden=8, kd_positions=3,
    )  # fmt: skip
    assert s == 6 * 10 * 7 + 6 * 100 * 4 * 5
    assert t == 2 * 20 * 7 + 2 * 100 * 8 * 3
    assert (
        kd_step_flops(
            student_body_params=10, student_hidden=4, vocab_size=100, tokens_forwarded=7, head_positions=5
        )[1]
        == 0
    )


def test_halving_tokens_halves_counted_flops() -> None:
    kw = dict(
        student_body_params=1000,
        student_hidden=64,
        vocab_size=151_936,
        teacher_body_params=2000,
        teacher_hidden=128,
    )
    full = sum(kd_step_flops(tokens_forwarded=1024, head_positions=1024, kd_positions=1024, **kw))
    half = sum(kd_step_flops(tokens_forwarded=512, head_positions=512, kd_positions=512, **kw))
    assert half * 2 == full


def test_accounting_totals_and_peak_memory() -> None:
    acc = ComputeAccounting()
    for _ in range(2):
        acc.add(tokens_forwarded=10, kd_tokens=np.array([0, 1, 2, 3]), ce_tokens=np.array([0, 0, 4, 1]),
                student_flops=100, teacher_flops=50)  # fmt: skip
    assert acc.total_flops == 300 and acc.tokens_forwarded == 20
    assert peak_memory_bytes() > 10 * 2**20 and acc.update_peak_memory() >= peak_memory_bytes() - 1
    d = acc.to_dict()
    assert d["tokens_kd/cot"] == 4 and d["tokens_ce/answer"] == 2 and d["tokens_kd/prompt"] == 2
    assert d["flops_counted"] == 300.0 and d["peak_memory_mb"] > 10
