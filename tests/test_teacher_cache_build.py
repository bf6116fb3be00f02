"""The cache build's memory bound and chunk independence: a row's teacher log-probs exist one
chunk of positions at a time, and the targets are those of the whole-row reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from hf_cot_distill.core.sections import Section
from hf_cot_distill.losses.cached import (
    entropy,
    sample_targets,
    sampled_chunk_targets,
    topk_chunk_targets,
    topk_targets,
)
from hf_cot_distill.trainers.teacher_cache import (
    CacheSettings,
    ShardStats,
    _ChunkBuffers,
    _row_targets,
    build_shard,
    unpack_bits,
)

V = 211  # a vocabulary unlike every other size here, so (., V) tensors are the head's
FP16_SUB = 2**-25  # half the float16 step below its smallest normal (2^-14): rounding to a subnormal


class VocabTensors(TorchDispatchMode):
    """Records, for every tensor an op allocates whose last dim is ``V``: the largest (its rows)
    and the peak bytes of such tensors alive at once (views and in-place results are not new
    allocations; a storage counts until it is freed)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak_bytes = 0
        self.max_rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        fresh = all(r.alias_info is None for r in func._schema.returns)
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if fresh and isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                storage = t.untyped_storage()
                self.live[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
                self.max_rows = max(self.max_rows, t.numel() // self.vocab)
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        self.peak_bytes = max(self.peak_bytes, sum(n for _, n in self.live.values()))
        return out


def _teacher(dtype: torch.dtype = torch.float32) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=V, hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2ForCausalLM(cfg).to(dtype).eval()
    with torch.no_grad():  # peaked enough that the top-K and the draws depend on the logits
        model.model.norm.weight.mul_(4.0)
    return model


def _row(length: int, seed: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    secs = np.full(length, int(Section.COT))
    secs[: length // 10] = int(Section.PROMPT)
    secs[-length // 10 :] = int(Section.ANSWER)
    return {"input_ids": rng.integers(0, V, length).tolist(), "section_ids": secs.tolist()}


@pytest.mark.parametrize("mode", ["sampled", "topk"])
def test_a_long_row_never_holds_more_than_a_chunk_of_log_probs(mode):
    """A 700-token row at chunk 16: every (., V) tensor the build allocates has <= 16 rows, and
    those alive at once stay within the chunk budget (3 float32 buffers of 16 x V), where the
    whole-row form allocates (P, V) log-probs (the tracker sees that: checked last)."""
    teacher, chunk = _teacher(), 16
    settings = CacheSettings(mode=mode, samples=12, k=8, sections=("prompt", "cot", "answer"))
    rows = [_row(700, 0)]
    with VocabTensors(V) as seen:
        records, stats = build_shard(teacher, rows, 0, settings, V, shard_seed=3, chunk_size=chunk)
    assert stats.positions == 699 and records[0]["n_positions"] == 699  # ~44 chunks
    assert 0 < seen.max_rows <= chunk
    assert seen.peak_bytes <= 3 * chunk * V * 4
    with VocabTensors(V) as whole:  # the tracker does see a row-sized allocation
        torch.log_softmax(torch.randn(699, V), 1)
    assert whole.max_rows == 699 and whole.peak_bytes >= 699 * V * 4


def _integer_head(
    seed: int, positions: int, hidden: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states, weight, bias with small integer entries: every lm_head product is exact in
    float32 whatever the GEMM's blocking, so chunked and whole-row logits are the same numbers."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(-3, 4, (positions + 1, hidden), generator=g).float()
    w = torch.randint(-2, 3, (V, hidden), generator=g).float()
    b = torch.randint(-4, 5, (V,), generator=g).float()
    return h, w, b


def _decode_sampled(rec: dict[str, bytes], settings: CacheSettings, p: int):
    layout = settings.layout(V)
    n = np.frombuffer(rec["n_targets"], dtype=np.uint8).astype(np.int64)
    merged = unpack_bits(rec["targets"], layout["id_bits"] + layout["count_bits"], int(n.sum()))
    ids = merged & ((1 << layout["id_bits"]) - 1)
    counts = (merged >> layout["id_bits"]) + 1
    ent = np.frombuffer(rec["entropy"], dtype=np.float16).astype(np.float64)
    assert len(n) == len(ent) == p
    return n, ids, counts, ent


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_sampled_targets_do_not_depend_on_the_chunk_size(temperature, bias):
    """Chunks of 1, 7, 64 and the whole row draw the same ids with the same counts as the
    whole-row reference (``sample_targets`` on the row's (P, V) log-probs, same generator seed),
    and store the same entropies (fp16: within one fp16 rounding, 2^-11 relative, of the
    reference's float32 value, or half a subnormal step)."""
    p = 150
    h, w, b = _integer_head(1, p)
    bias_t = b if bias else None
    positions = np.arange(1, p + 1)
    settings = CacheSettings(mode="sampled", samples=12, temperature=temperature)
    logits = h[:-1] @ w.t() + (b if bias else 0)
    logp = torch.log_softmax(logits / temperature, 1)
    ref_ids, ref_counts, ref_n = sample_targets(logp, 12, torch.Generator().manual_seed(5))
    ref_ent = entropy(logp).double()
    for chunk in (1, 7, 64, p):
        buffers = _ChunkBuffers(chunk, V, torch.device("cpu"))
        rec = _row_targets(
            h, positions, w, bias_t, settings, settings.layout(V), torch.Generator().manual_seed(5),
            ShardStats(), buffers,
        )  # fmt: skip
        n, ids, counts, ent = _decode_sampled(rec, settings, p)
        valid = ref_ids >= 0
        assert n.tolist() == ref_n.tolist()
        assert ids.tolist() == ref_ids[valid].tolist() and counts.tolist() == ref_counts[valid].tolist()
        np.testing.assert_allclose(ent, ref_ent.numpy(), rtol=2**-11, atol=FP16_SUB)


@pytest.mark.parametrize("chunk", [1, 5, 40])
def test_topk_targets_do_not_depend_on_the_chunk_size(chunk):
    """Top-K ids, their log-probs and the tail log-mass from chunks equal the whole-row reference
    (fp16 storage: within one fp16 rounding of the reference's float32 values)."""
    p, k = 40, 6
    h, w, b = _integer_head(2, p)
    settings = CacheSettings(mode="topk", k=k)
    logp = torch.log_softmax(h[:-1] @ w.t() + b, 1)
    ref_ids, ref_values, ref_tail = topk_targets(logp, k)
    buffers = _ChunkBuffers(chunk, V, torch.device("cpu"))
    stats = ShardStats()
    rec = _row_targets(
        h, np.arange(1, p + 1), w, b, settings, settings.layout(V), torch.Generator(), stats, buffers
    )
    ids = unpack_bits(rec["targets"], settings.layout(V)["id_bits"], p * k).reshape(p, k)
    values = np.frombuffer(rec["logprobs"], dtype=np.float16).astype(np.float64).reshape(p, k)
    tail = np.frombuffer(rec["tail_logmass"], dtype=np.float16).astype(np.float64)
    # ties between equal integer logits may come out in either order: compare as sets per row
    assert [sorted(r) for r in ids.tolist()] == [sorted(r) for r in ref_ids.tolist()]
    np.testing.assert_allclose(values, ref_values.double().numpy(), rtol=2**-11, atol=FP16_SUB)
    np.testing.assert_allclose(tail, ref_tail.double().numpy(), rtol=2**-11, atol=FP16_SUB)
    # the card's tail statistics use the float32 values (before fp16): float32 rounding of log-masses
    assert math.isclose(stats.tail_mass_sum, float(ref_tail.double().exp().sum()), rel_tol=1e-5)


def test_chunk_builders_equal_the_reference_forms():
    """``sampled_chunk_targets`` (one exp, p log p in the scratch buffer) and ``topk_chunk_targets``
    (in place) against ``sample_targets`` / ``entropy`` / ``topk_targets``; a token with an
    ``-inf`` logit (no mass) keeps the entropy finite (``0 log 0 = 0``)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, V, generator=g) * 3
    logits[2, :50] = -math.inf
    logp = torch.log_softmax(logits, 1)
    ref = sample_targets(logp, 12, torch.Generator().manual_seed(1))
    scratch = torch.empty_like(logp)
    kept = logp.clone()
    ids, counts, n, ent = sampled_chunk_targets(logp, 12, torch.Generator().manual_seed(1), scratch)
    assert torch.equal(logp, kept)  # only read
    assert torch.equal(ids, ref[0]) and torch.equal(counts, ref[1]) and torch.equal(n, ref[2])
    assert torch.isfinite(ent).all()
    # float32 sums of V terms of size <= 1/e: within V * 2^-24 of the float64 value
    expected = entropy(logp.double())
    torch.testing.assert_close(ent.double(), expected, rtol=0, atol=V * 2**-24)
    ref_top = topk_targets(logp, 5)
    got = topk_chunk_targets(logp.clone(), 5)
    for a, b in zip(got, ref_top, strict=True):
        assert torch.equal(a, b)


def test_build_shard_refuses_a_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        build_shard(_teacher(), [_row(20, 0)], 0, CacheSettings(), V, shard_seed=0, chunk_size=0)


def test_float64_teacher_builds_the_same_targets_at_any_chunk_size():
    """build_shard end to end (teacher forward, batches of 2 right-padded rows): chunk 3 and the
    default chunk give the same records. A float64 teacher: its logits, rounded into the float32
    buffer, are the same numbers whatever the GEMM's row blocking (a float64 difference in the
    last bits moves a float32 rounding with probability ~1e-9 per logit)."""
    teacher = _teacher(torch.float64)
    rows = [_row(60, 1), _row(45, 2), _row(30, 3)]
    settings = CacheSettings(mode="sampled", samples=16, batch_size=2)
    a, sa = build_shard(teacher, rows, 10, settings, V, shard_seed=9, chunk_size=3)
    b, sb = build_shard(teacher, rows, 10, settings, V, shard_seed=9)
    assert [r["row"] for r in a] == [10, 11, 12] and sa.positions == sb.positions == 59 + 44 + 29
    for ra, rb in zip(a, b, strict=True):
        assert ra["n_targets"] == rb["n_targets"] and ra["targets"] == rb["targets"]
        ea = np.frombuffer(ra["entropy"], dtype=np.float16).astype(np.float64)
        eb = np.frombuffer(rb["entropy"], dtype=np.float16).astype(np.float64)
        np.testing.assert_allclose(ea, eb, rtol=2**-10, atol=2 * FP16_SUB)  # one fp16 step at most
