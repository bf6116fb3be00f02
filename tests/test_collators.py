"""SectionCollator: exact padded/packed batches, truncation inside, packed == padded loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_cot_distill.core.sections import Section, section_counts
from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encode_dataset
from hf_cot_distill.supervision.collators import SectionCollator
from hf_cot_distill.supervision.policy import SupervisionPolicy
from hf_cot_distill.supervision.truncation import KeepFirst, KeepWindow, LeadSpanProportion, SectionPreserving
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

P, C, A, X = int(Section.PROMPT), int(Section.COT), int(Section.ANSWER), -100
ROW_A = {"input_ids": [11, 12, 13, 14, 15], "section_ids": [P, P, C, C, A]}
ROW_B = {"input_ids": [21, 22, 23], "section_ids": [P, C, A]}
COT_ANSWER = SupervisionPolicy.from_preset("cot+answer")


def test_right_padding_exact() -> None:
    batch = SectionCollator(COT_ANSWER, pad_token_id=0, pad_to_multiple_of=4)([ROW_A, ROW_B])
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 15, 0, 0, 0], [21, 22, 23, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 3 + [0] * 5]
    assert batch["section_ids"].tolist() == [[P, P, C, C, A, 0, 0, 0], [P, C, A, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[X, X, 13, 14, 15, X, X, X], [X, 22, 23, X, X, X, X, X]]
    assert batch["ce_weights"].tolist() == [[0, 0, 0.5, 0.5, 0.5, 0, 0, 0], [0, 0.5, 0.5, 0, 0, 0, 0, 0]]
    assert batch["kd_weights"].tolist() == batch["ce_weights"].tolist()
    assert {k: v.dtype for k, v in batch.items()} == {
        "input_ids": torch.long,
        "labels": torch.long,
        "section_ids": torch.long,
        "ce_weights": torch.float32,
        "kd_weights": torch.float32,
        "attention_mask": torch.long,
    }


def test_left_padding_and_first_token_is_never_a_target() -> None:
    policy = SupervisionPolicy.from_preset("prompt+cot+answer")
    batch = SectionCollator(policy, pad_token_id=9, padding_side="left")([ROW_A, ROW_B])
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 15], [9, 9, 21, 22, 23]]
    assert batch["attention_mask"].tolist() == [[1] * 5, [0, 0, 1, 1, 1]]
    assert batch["labels"].tolist() == [[X, 12, 13, 14, 15], [X, X, X, 22, 23]]


def test_packed_exact() -> None:
    batch = SectionCollator(COT_ANSWER, padding_free=True, pad_to_multiple_of=5)([ROW_A, ROW_B])
    assert "attention_mask" not in batch  # transformers infers packing only without a mask
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 15, 21, 22, 23, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[X, X, 13, 14, 15, X, 22, 23, X, X]]
    assert batch["section_ids"].tolist() == [[P, P, C, C, A, P, C, A, 0, 0]]


def test_row_labels_restrict_ce_and_shifted_labels_are_refused() -> None:
    row = {**ROW_A, "labels": [X, X, X, 14, 15], "attention_mask": [1, 1, 1, 1, 1], "eval_input_ids": [1]}
    batch = SectionCollator(COT_ANSWER)([row])
    assert batch["labels"].tolist() == [[X, X, X, 14, 15]]
    assert batch["ce_weights"].tolist() == [[0, 0, 0, 0.5, 0.5]]
    assert batch["kd_weights"].tolist() == [[0, 0, 0.5, 0.5, 0.5]]  # KD follows sections only
    with pytest.raises(ValueError, match="shifted"):
        SectionCollator(COT_ANSWER)([{**ROW_A, "labels": [12, 13, 14, 15, X]}])
    with pytest.raises(ValueError, match="section_ids"):
        SectionCollator(COT_ANSWER)([{"input_ids": [1, 2]}])


def test_zero_attention_positions_are_removed() -> None:
    row = {"input_ids": [0, 0, 21, 22, 23], "section_ids": [0, 0, P, C, A], "attention_mask": [0, 0, 1, 1, 1]}
    assert SectionCollator(COT_ANSWER)([row])["input_ids"].tolist() == [[21, 22, 23]]


def test_per_section_temperatures_are_returned() -> None:
    policy = SupervisionPolicy.from_preset("cot", kd_temperature=2.0)
    batch = SectionCollator(policy, default_kd_temperature=1.0)([ROW_B])
    assert batch["kd_temperatures"].tolist() == [[1.0, 2.0, 1.0]]


def test_truncation_inside_with_running_and_per_batch_accounting() -> None:
    answer_only = SupervisionPolicy.from_preset("answer")
    collator = SectionCollator(answer_only, truncation=LeadSpanProportion(0.6), return_accounting=True)
    batch = collator([ROW_A, ROW_B])  # A keeps 3 of 5 (loses its answer), B keeps 1 of 3
    assert batch["input_ids"].tolist() == [[11, 12, 13], [21, 0, 0]]
    acc = batch["truncation_accounting"]
    assert acc.samples_supervision_lost == 2 and acc.samples_dropped == 0
    assert acc.tokens_kept.tolist() == [0, 3, 1, 0] and acc.tokens_before.tolist() == [0, 3, 3, 2]
    collator([ROW_A])
    assert collator.accounting.samples == 3 and collator.reset_accounting().samples == 3
    assert collator.accounting.samples == 0

    dropping = SectionCollator(answer_only, truncation=KeepFirst(3), on_supervision_lost="drop")
    batch = dropping([ROW_A, ROW_B])  # A loses its answer -> dropped and counted
    assert batch["input_ids"].tolist() == [[21, 22, 23]]
    assert dropping.accounting.samples_dropped == 1 and dropping.accounting.tokens_kept.tolist() == [
        0,
        1,
        1,
        1,
    ]
    with pytest.raises(ValueError, match="dropped"):
        dropping([ROW_A])


def test_section_preserving_inside_collator() -> None:
    row = {"input_ids": list(range(1, 11)), "section_ids": [P] * 3 + [C] * 5 + [A] * 2}
    batch = SectionCollator(COT_ANSWER, truncation=SectionPreserving(8))([row])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 8, 9, 10]]


def test_encoder_to_collator_end_to_end() -> None:
    tok = tiny_qwen2_tokenizer()
    ds = Dataset.from_list(
        [{"prompt": "What is 2+2?", "completion": f"<think>add {i}</think>It is {i}."} for i in range(4)]
    )
    encoded, stats = encode_dataset(ds, ReasoningTraceEncoder(tok, source_format="prompt_completion"))
    batch = SectionCollator(COT_ANSWER, pad_token_id=tok.pad_token_id)(list(encoded))
    assert stats.samples == 4 and batch["input_ids"].shape[0] == 4
    ends = batch["attention_mask"].sum(1) - 1
    assert all(
        batch["input_ids"][b, e] == tok.convert_tokens_to_ids("<|im_end|>") for b, e in enumerate(ends)
    )
    assert (batch["labels"] != X).sum() == (batch["ce_weights"] > 0).sum()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pad_token_id": None}, r"pad_token_id=None: .*fix: pass tokenizer.eos_token_id"),
        ({"pad_token_id": -1}, r"pad_token_id=-1: must be an int >= 0; fix: pass an int >= 0"),
        ({"pad_token_id": 1.5}, r"pad_token_id=1.5: must be an int >= 0; fix: pass an int >= 0"),
        (
            {"truncation": "keep_first"},
            r"truncation: 'keep_first' is not a truncation policy.*KeepFirst\(4096\)",
        ),
        ({"truncation": 0.5}, r"truncation: 0.5 is not a truncation policy.*LeadSpanProportion\(0.5\)"),
        ({"supervision": "cot"}, r"supervision: 'cot' is not a SupervisionPolicy.*from_preset\('cot'\)"),
        ({"padding_free": "no"}, r"padding_free='no': must be true or false; fix: pass true or false"),
        ({"return_accounting": 1}, r"return_accounting=1: must be true or false"),
        (
            {"default_kd_temperature": -1},
            r"default_kd_temperature=-1: must be a finite number > 0.0; fix: e.g. 1.0",
        ),
        ({"default_kd_temperature": float("inf")}, r"default_kd_temperature=inf: "),
        ({"pad_to_multiple_of": True}, r"pad_to_multiple_of=True: must be an int >= 1"),
        ({"padding_side": "middle"}, r"padding_side='middle': must be one of 'right', 'left'"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SectionCollator(**kwargs)


def test_pad_token_id_from_a_tokenizer_without_pad() -> None:
    # Llama / SmolLM tokenizers have pad_token_id None: refused up front, not at the first padded batch
    with pytest.raises(ValueError, match="eos_token_id"):
        SectionCollator(pad_token_id=None)
    batch = SectionCollator(pad_token_id=np.int64(2), padding_free=np.bool_(False))([ROW_A, ROW_B])
    assert batch["input_ids"][1].tolist() == [21, 22, 23, 2, 2]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (
            {"input_ids": [1.7, 2.2], "section_ids": [P, C]},
            r"features\[0\].input_ids=1.7: must be integers \(got dtype float64\)",
        ),
        (
            {"input_ids": [1, 2], "section_ids": [P, 7]},
            r"features\[0\].section_ids: values \[1, 7\] outside 0..3",
        ),
        ({"input_ids": [1, 2], "section_ids": [-1, C]}, r"features\[0\].section_ids: values \[-1, 2\]"),
        ({"input_ids": [1, 2], "section_ids": [1.0, 2.0]}, r"features\[0\].section_ids=.*dtype float64"),
        (
            {"input_ids": [1, 2], "section_ids": [P, C], "labels": [1.0, 2.0]},
            r"features\[0\].labels=.*dtype float64",
        ),
        ({"input_ids": [1, -5], "section_ids": [P, C]}, r"features\[0\].input_ids: negative id -5"),
        (
            {"input_ids": [1, 2], "section_ids": [P, C], "attention_mask": [1, 0.5]},
            r"attention_mask=.*dtype float64",
        ),
        ({"input_ids": [1, 2], "section_ids": [P, C], "attention_mask": [1, 2]}, r"attention_mask: values"),
        (
            {"input_ids": [[1, 2]], "section_ids": [P, C]},
            r"input_ids: shape \(1, 2\) has 2 dims, expected 1; .*ids\[0\]",
        ),
        ({"input_ids": [1, 2], "section_ids": [[P, C]]}, r"section_ids: shape \(1, 2\) has 2 dims"),
        ({"input_ids": ["a", "b"], "section_ids": [P, C]}, r"input_ids='a': must be integers"),
    ],
)
def test_bad_rows_are_refused_naming_the_field(row: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SectionCollator()([row])


def test_window_that_leaves_no_target_is_supervision_lost() -> None:
    # A right window keeps [4]: its only token is the row's first, never a target (labels shift).
    row = {"input_ids": [1, 2, 3, 4], "section_ids": [P, C, C, A]}
    collator = SectionCollator(
        COT_ANSWER, truncation=KeepWindow("right", max_tokens=1), on_supervision_lost="drop"
    )
    with pytest.raises(ValueError, match="all 1 samples were dropped"):
        collator([row])
    acc = collator.accounting
    assert (acc.supervised_before, acc.supervised_kept) == (3, 0)
    assert acc.samples_supervision_lost == acc.samples_dropped == 1
    # a window of 3 keeps [2, 3, 4]: token 2 is now the first, so 1 of the 3 targets is lost
    collator = SectionCollator(COT_ANSWER, truncation=KeepWindow("right", max_tokens=3))
    batch = collator([row])
    assert batch["labels"].tolist() == [[X, 3, 4]]
    assert (collator.accounting.supervised_before, collator.accounting.supervised_kept) == (3, 2)
    # the prompt's first token is never a target either, truncated or not
    collator = SectionCollator(SupervisionPolicy.from_preset("prompt+cot+answer"))
    batch = collator([row, ROW_B])
    assert collator.accounting.supervised_kept == int((batch["kd_weights"] > 0).sum()) == 3 + 2


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(
        st.tuples(st.integers(1, 5), st.integers(0, 9), st.integers(0, 4)), min_size=1, max_size=4
    ),
    x=st.floats(0.05, 1.0),
    preset=st.sampled_from(["answer", "cot", "prompt+cot+answer"]),
    packed=st.booleans(),
)
def test_batch_agrees_with_accounting(lengths, x: float, preset: str, packed: bool) -> None:
    rows = [
        {"input_ids": list(range(100, 100 + p + c + a)), "section_ids": [P] * p + [C] * c + [A] * a}
        for p, c, a in lengths
    ]
    collator = SectionCollator(
        SupervisionPolicy.from_preset(preset), truncation=LeadSpanProportion(x), padding_free=packed
    )
    try:
        batch = collator(rows)
    except ValueError:
        assert collator.accounting.samples_dropped == len(rows) == collator.accounting.samples
        return
    acc = collator.accounting
    secs = batch["section_ids"].numpy().ravel()
    counts = section_counts(secs)
    assert counts[1:].tolist() == acc.tokens_kept[1:].tolist()  # what the batch holds is what was counted
    # supervised targets counted exactly as the loss sees them (a row's first token is none)
    assert int(((batch["ce_weights"] > 0) | (batch["kd_weights"] > 0)).sum()) == acc.supervised_kept
    assert acc.samples == len(rows) and acc.samples - acc.samples_dropped == (
        int((batch["position_ids"] == 0).sum()) if packed else batch["input_ids"].shape[0]
    )
    # every kept row is a prefix of its original row (all rows count up from 100)
    if packed:
        pos = batch["position_ids"].numpy().ravel()
        kept_rows = np.split(batch["input_ids"].numpy().ravel(), np.flatnonzero(pos == 0)[1:])
        kept_rows = [r for r, s in zip(kept_rows, np.split(secs, np.flatnonzero(pos == 0)[1:])) if s[0] != 0]
    else:
        mask = batch["attention_mask"].numpy().astype(bool)
        kept_rows = [r[m] for r, m in zip(batch["input_ids"].numpy(), mask)]
    assert all(r.tolist() == list(range(100, 100 + len(r))) for r in kept_rows)


def _tiny_qwen2(attn: str) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation=attn,
    )
    return Qwen2ForCausalLM(config).eval()


def _per_token_ce(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits.float()  # a cache disables packing detection
    # labels are unshifted: logits[t] predicts labels[t + 1]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), reduction="none"
    )
    return loss[batch["labels"][:, 1:].reshape(-1) != X]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_padded_give_the_same_per_token_loss(attn: str) -> None:
    model = _tiny_qwen2(attn)
    gen = np.random.default_rng(0)
    rows = []
    for n in (7, 3, 11, 5):
        secs = [P] * 2 + [C] * (n - 3) + [A]
        rows.append({"input_ids": gen.integers(1, 64, n).tolist(), "section_ids": secs})
    policy = SupervisionPolicy.from_preset("prompt+cot+answer")
    padded = _per_token_ce(model, SectionCollator(policy, pad_token_id=0)(rows))
    left = _per_token_ce(model, SectionCollator(policy, pad_token_id=0, padding_side="left")(rows))
    packed_batch = SectionCollator(policy, padding_free=True, pad_to_multiple_of=8)(rows)
    packed = _per_token_ce(model, packed_batch)
    assert padded.numel() == sum(len(r["input_ids"]) - 1 for r in rows)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, padded, atol=1e-4, rtol=1e-4)
    # Control: the same packed row with one ordinary sequence of positions leaks across samples.
    leaky = {**packed_batch, "position_ids": torch.arange(packed_batch["input_ids"].shape[1])[None]}
    assert not torch.allclose(_per_token_ce(model, leaky), padded, atol=1e-3)
