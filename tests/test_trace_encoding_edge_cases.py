"""ReasoningTraceEncoder on edge cases: symbolic headers as CoT markers, conversations rendered as
given, markers and end-of-turn strings inside the text, list-of-parts content, empty answers,
malformed rows and construction-time validation. Real Qwen2.5 / Qwen3 tokenizers."""

from __future__ import annotations

import os

import pytest
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from hf_cot_distill.core.sections import Section, section_runs
from hf_cot_distill.data.synthetic.symbolic import SymbolicConfig, generate_symbolic_task
from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encode_dataset, encoding_fingerprint
from hf_cot_distill.data.traces.formats import (
    CASE_BITS,
    MARKER_PRESETS,
    TraceError,
    TraceMarkers,
    split_reasoning,
)
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

P, C, A = int(Section.PROMPT), int(Section.COT), int(Section.ANSWER)
SYMBOLIC = MARKER_PRESETS["symbolic"]
# Qwen2.5 has no </think> token: its last BPE piece ">\n\n" takes the answer's two newlines into
# the COT (a token belongs to the section of its first character; see test_real_text_pipeline).
CLOSE = "</think>\n\n"


def _sections(tok, out, r=0):
    """``[(section, decoded text), …]`` of row ``r``, one entry per run."""
    ids, secs = out["input_ids"][r], out["section_ids"][r]
    return [(s, tok.decode(ids[a:b])) for s, a, b in section_runs(secs)]


def _encode(tok, rows, **kwargs):
    batch = {key: [row[key] for row in rows] for key in rows[0]}
    return ReasoningTraceEncoder(tok, **kwargs)(batch)


def _chat(*contents):
    roles = ["user", "assistant"] * len(contents)
    return {"messages": [{"role": role, "content": c} for role, c in zip(roles, contents)]}


# --- symbolic tasks: rendered as generated, headers as the CoT markers -----------------------------


def _symbolic_tasks():
    """Two tasks with CoT and direct in-context examples: one ends in a CoT example, one direct."""
    config = SymbolicConfig(n_examples=4, word_length=4, cot_example_prob=0.5, seed=2)
    found = {}
    for index in range(200):
        task = generate_symbolic_task(config, index)
        flags = task["example_has_cot"]
        if any(flags[:-1]) and not all(flags[:-1]):
            found.setdefault(flags[-1], task)
        if len(found) == 2:
            return found[True], found[False]
    raise AssertionError("no mixed symbolic task in 200 indices")


def test_symbolic_conversation_is_rendered_as_generated_and_its_reasoning_is_cot(qwen25_tokenizer):
    tok = qwen25_tokenizer
    tasks = _symbolic_tasks()
    out = _encode(
        tok,
        [{"messages": t["messages"]} for t in tasks],
        source_markers=SYMBOLIC,
        render_markers=SYMBOLIC,
        on_empty_cot="as_given",
    )
    for r, task in enumerate(tasks):
        text = tok.decode(out["input_ids"][r])
        # the training text is the dataset's conversation, byte for byte (no injected block)
        assert text + "\n" == tok.apply_chat_template(task["messages"], tokenize=False)
        prompt = tok.apply_chat_template(task["messages"][:-1], tokenize=False, add_generation_prompt=True)
        chain, answer = task["chain_words"][-1], task["answer"]
        expected_answer = f"### Answer\n\\boxed{{{answer}}}<|im_end|>"
        if task["example_has_cot"][-1]:
            steps = "".join(f"Step {i + 1}: {w}\n" for i, w in enumerate(chain[:-1]))
            assert _sections(tok, out, r) == [
                (P, prompt),
                (C, "### Reasoning\n" + steps),
                (A, expected_answer),
            ]
            assert out["trace_flags"][r] & CASE_BITS["empty_cot"]  # the direct in-context examples
        else:
            assert _sections(tok, out, r) == [(P, prompt), (A, expected_answer)]
        assert out["trace_flags"][r] & CASE_BITS["multiple_assistant_turns"]


def test_unsupervised_turns_without_a_think_block_get_none_injected(qwen25_tokenizer):
    """Default ``<think>`` markers: earlier assistant turns are PROMPT and rendered as given."""
    tok = qwen25_tokenizer
    task = _symbolic_tasks()[0]
    out = _encode(tok, [{"messages": task["messages"]}])
    prompt = tok.apply_chat_template(task["messages"][:-1], tokenize=False, add_generation_prompt=True)
    runs = _sections(tok, out)
    assert runs[0] == (P, prompt) and "<think>" not in prompt
    # the supervised turn has no <think> block: on_empty_cot="empty_block" (the default) adds one
    assert runs[1] == (C, f"<think>\n\n{CLOSE}")
    row = _chat("Hi", "Hello!", "What is 2+2?", "<think>add</think>4")
    prompt_text = _sections(tok, _encode(tok, [row]))[0][1]
    assert prompt_text.endswith(
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_as_given_keeps_a_plain_answer_without_a_block(qwen25_tokenizer):
    out = _encode(qwen25_tokenizer, [_chat("q", "plain answer")], on_empty_cot="as_given")
    assert _sections(qwen25_tokenizer, out)[1:] == [(A, "plain answer<|im_end|>")]
    assert out["trace_flags"] == [CASE_BITS["empty_cot"]]


def test_symbolic_markers_parse_direct_answers_and_refuse_the_rest():
    assert split_reasoning("### Reasoning\nStep 1: ab\n### Answer\n\\boxed{x}", SYMBOLIC) == (
        "Step 1: ab",
        "\\boxed{x}",
        0,
    )
    assert split_reasoning("### Answer\n\\boxed{x}", SYMBOLIC) == (None, "\\boxed{x}", CASE_BITS["empty_cot"])
    for text, case in (
        ("\\boxed{x}", "missing_close_marker"),
        ("so it is\n### Answer\n\\boxed{x}", "text_before_cot"),
        ("### Reasoning\nStep 1: ab", "missing_close_marker"),
    ):
        with pytest.raises(TraceError, match="fix:") as err:
            split_reasoning(text, SYMBOLIC)
        assert err.value.case == case


def test_symbolic_render_markers_refuse_an_injected_empty_block():
    with pytest.raises(ValueError, match="on_empty_cot.*as_given"):
        ReasoningTraceEncoder(tiny_qwen2_tokenizer(), source_markers=SYMBOLIC, render_markers=SYMBOLIC)


def test_trace_markers_must_be_non_blank_strings():
    for kwargs in (
        {"think_open": ""},
        {"think_close": "  "},
        {"solution_open": ""},
        {"close_opens_answer": 1},
    ):
        with pytest.raises(ValueError, match="TraceMarkers"):
            TraceMarkers(**kwargs)


# --- sections from rendered lengths, not from searching marker text ---------------------------------


def test_reasoning_that_mentions_the_close_marker_stays_cot(qwen25_tokenizer):
    tok = qwen25_tokenizer
    reasoning = "the tag </think> closes a block; more reasoning"
    out = _encode(
        tok,
        [{"prompt": "q", "reasoning_content": reasoning, "content": "42"}],
        source_format="reasoning_content",
    )
    assert _sections(tok, out)[1:] == [(C, f"<think>\n{reasoning}\n{CLOSE}"), (A, "42<|im_end|>")]
    # OpenThoughts source markers differ from the render markers: the same holds
    row = {
        "conversations": [
            {"from": "human", "value": "q"},
            {
                "from": "gpt",
                "value": f"<|begin_of_thought|>{reasoning}<|end_of_thought|>"
                "<|begin_of_solution|>42<|end_of_solution|>",
            },
        ]
    }
    out = _encode(tok, [row], source_format="conversations")
    assert _sections(tok, out)[1:] == [(C, f"<think>\n{reasoning}\n{CLOSE}"), (A, "42<|im_end|>")]
    assert out["trace_flags"] == [0]


def test_qwen3_template_that_resplits_the_reasoning_is_refused_not_mangled(qwen3_tokenizer):
    """Qwen3's template cuts content at ``</think>``: part of the reasoning would vanish."""
    row = {"prompt": "q", "reasoning_content": "the tag </think> closes a block; more", "content": "42"}
    with pytest.raises(TraceError, match="rewrote this assistant turn") as err:
        _encode(qwen3_tokenizer, [row], source_format="reasoning_content")
    assert err.value.case == "malformed_markers"
    out = _encode(qwen3_tokenizer, [row], source_format="reasoning_content", on_invalid="drop")
    assert out["input_ids"] == [[]]
    assert out["trace_flags"] == [CASE_BITS["malformed_markers"] | CASE_BITS["dropped"]]


def test_answer_that_mentions_the_end_of_turn_is_kept_whole(qwen25_tokenizer):
    answer = "With <|im_end|>, then the next turn starts. Final: im_end."
    out = _encode(qwen25_tokenizer, [_chat("How does ChatML end a turn?", f"<think>recall</think>{answer}")])
    assert _sections(qwen25_tokenizer, out)[-1] == (A, f"{answer}<|im_end|>")
    assert out["trace_flags"] == [0]


# --- empty answers -------------------------------------------------------------------------------------


def test_empty_answer_after_the_cot_is_refused_dropped_or_kept_with_a_flag(qwen25_tokenizer):
    tok = qwen25_tokenizer
    rows = [_chat("q", "<think>long reasoning</think>"), _chat("q", "<think>r</think>4")]
    with pytest.raises(TraceError, match="on_empty_answer") as err:
        _encode(tok, rows)
    assert err.value.case == "empty_answer"
    dropped = _encode(tok, rows, on_invalid="drop")
    assert dropped["input_ids"][0] == [] and len(dropped["input_ids"][1]) > 0
    assert dropped["trace_flags"] == [CASE_BITS["empty_answer"] | CASE_BITS["dropped"], 0]
    kept = _encode(tok, rows, on_empty_answer="keep")
    assert _sections(tok, kept)[1:] == [(C, f"<think>\nlong reasoning\n{CLOSE}"), (A, "<|im_end|>")]
    assert kept["trace_flags"] == [CASE_BITS["empty_answer"], 0]


# --- list-of-parts content (TRL / OpenAI) ------------------------------------------------------------


def test_text_parts_are_joined_like_a_string(qwen25_tokenizer):
    tok = qwen25_tokenizer
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "<think>r</think>4"}]},
        ]
    }
    plain = _chat("What is 2+2?", "<think>r</think>4")
    out = _encode(tok, [parts, plain])
    assert out["input_ids"][0] == out["input_ids"][1] and out["section_ids"][0] == out["section_ids"][1]
    assert out["trace_flags"] == [0, 0]
    assert "[{" not in tok.decode(out["input_ids"][0])


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (
            [{"type": "text", "text": "look"}, {"type": "image", "image": "x.png"}],
            r"messages\[0\]\.content\[1\]",
        ),
        (["plain string part"], r"messages\[0\]\.content\[0\]"),
        ({"text": "a dict"}, r"messages\[0\]\.content"),
        (7, r"messages\[0\]\.content"),
    ],
)
def test_non_text_content_is_refused_naming_the_field(content, field):
    row = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "4"}]}
    with pytest.raises(TraceError, match=field) as err:
        _encode(tiny_qwen2_tokenizer(), [row])
    assert err.value.case == "malformed_row"


# --- malformed rows and construction-time validation -----------------------------------------------


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"content": "q"}, {"role": "assistant", "content": "4"}], r"messages\[0\]: 'role' is None"),
        ([{"role": 3, "content": "q"}, {"role": "assistant", "content": "4"}], r"messages\[0\]: 'role' is 3"),
        ([{"role": "user", "content": "q"}, {"role": "assistant"}], r"messages\[1\]: no 'content' key"),
        (["q", {"role": "assistant", "content": "4"}], r"messages\[0\]: str"),
        ("just a string", r"messages: str"),
    ],
)
def test_malformed_rows_are_trace_errors(messages, match):
    tok = tiny_qwen2_tokenizer()
    with pytest.raises(TraceError, match=match) as err:
        _encode(tok, [{"messages": messages}])
    assert err.value.case == "malformed_row"


def test_one_malformed_row_is_dropped_and_counted_in_dataset_map():
    rows = [_chat("q", "<think>r</think>4")] * 3 + [
        {"messages": [{"content": "q"}, {"role": "assistant", "content": "4"}]}
    ]
    enc = ReasoningTraceEncoder(tiny_qwen2_tokenizer(), on_invalid="drop")
    encoded, stats = encode_dataset(Dataset.from_list(rows), enc)
    assert len(encoded) == 3
    assert stats.counts["malformed_row"] == stats.counts["dropped"] == 1


@pytest.mark.parametrize("bad", [{"prompt": None}, {"completion": 5}])
def test_prompt_completion_fields_of_the_wrong_type_are_malformed_rows(bad):
    row = {"prompt": "q", "completion": "<think>r</think>4", **bad}
    with pytest.raises(TraceError, match=next(iter(bad))) as err:
        _encode(tiny_qwen2_tokenizer(), [row], source_format="prompt_completion")
    assert err.value.case == "malformed_row"


def test_missing_layout_columns_are_named():
    with pytest.raises(ValueError, match=r"columns: \['completion'\] missing"):
        _encode(tiny_qwen2_tokenizer(), [{"prompt": "q"}], source_format="prompt_completion")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_length": -1}, "max_length"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": 2.5}, "max_length"),
        ({"max_length": True}, "max_length"),
        ({"turn_policy": "first"}, "turn_policy"),
        ({"on_empty_answer": "drop"}, "on_empty_answer"),
        ({"render_markers": "think"}, "render_markers"),
        ({"source_markers": "openthoughts"}, "source_markers"),
        ({"end_of_turn": ""}, "end_of_turn"),
    ],
)
def test_bad_encoder_settings_are_refused_at_construction(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}=.*fix:"):
        ReasoningTraceEncoder(tiny_qwen2_tokenizer(), **kwargs)


# --- the encoded dataset's fingerprint: cheap, stable, and it moves with what the encoding depends on


FINGERPRINT_ROWS = [
    _chat("What is 2 plus 2?", "<think>2 and 2 make 4.</think>4"),
    _chat("q", "<think>r</think>5"),
]


def _fingerprint_of(tok, rows=FINGERPRINT_ROWS, **settings):
    return encoding_fingerprint(Dataset.from_list(rows), ReasoningTraceEncoder(tok, **settings))


def test_the_fingerprint_moves_with_the_tokenizer_the_settings_and_the_data(tmp_path):
    tiny_qwen2_tokenizer().save_pretrained(tmp_path / "tok")

    def copy():
        return AutoTokenizer.from_pretrained(tmp_path / "tok")

    base = _fingerprint_of(copy())
    assert _fingerprint_of(copy()) == base  # another copy of the same tokenizer
    added = copy()
    added.add_tokens(["<extra>"])
    templated = copy()
    templated.chat_template = templated.chat_template.replace("<|im_start|>", "<|im_start|> ")
    other_pad = copy()
    other_pad.padding_side = "left" if other_pad.padding_side == "right" else "right"
    changed = {
        "added token": _fingerprint_of(added),
        "chat template": _fingerprint_of(templated),
        "padding side": _fingerprint_of(other_pad),
        "max_length": _fingerprint_of(copy(), max_length=100),
        "render markers": _fingerprint_of(
            copy(), render_markers=MARKER_PRESETS["symbolic"], on_empty_cot="as_given"
        ),
        "on_invalid": _fingerprint_of(copy(), on_invalid="drop"),
        "data": _fingerprint_of(copy(), rows=FINGERPRINT_ROWS[:1]),
    }
    assert all(f != base for f in changed.values()), changed
    assert len(set(changed.values())) == len(changed)
    ds = Dataset.from_list(FINGERPRINT_ROWS)
    enc = ReasoningTraceEncoder(copy())
    assert encoding_fingerprint(ds, enc, batch_size=1) != encoding_fingerprint(ds, enc)
    # what datasets ignores does not count
    assert encoding_fingerprint(ds, enc, desc="encoding") == encoding_fingerprint(ds, enc)


def test_the_fingerprint_is_the_same_in_another_process(tmp_path):
    import json
    import subprocess
    import sys

    tiny_qwen2_tokenizer().save_pretrained(tmp_path / "tok")
    (tmp_path / "rows.json").write_text(json.dumps(FINGERPRINT_ROWS))
    code = (
        "import json, sys; from datasets import Dataset; from transformers import AutoTokenizer; "
        "from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encoding_fingerprint; "
        "tok = AutoTokenizer.from_pretrained(sys.argv[1]); rows = json.load(open(sys.argv[2])); "
        "print(encoding_fingerprint(Dataset.from_list(rows), ReasoningTraceEncoder(tok, max_length=64), batch_size=8))"
    )
    here = encoding_fingerprint(
        Dataset.from_list(FINGERPRINT_ROWS),
        ReasoningTraceEncoder(AutoTokenizer.from_pretrained(tmp_path / "tok"), max_length=64),
        batch_size=8,
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "tok"), str(tmp_path / "rows.json")],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"},
    )  # fmt: skip
    assert out.stdout.strip() == here and len(here) == 32


def test_encode_dataset_uses_the_cheap_fingerprint_not_a_pickling_hash_of_the_tokenizer(monkeypatch):
    from datasets.fingerprint import Hasher

    original = Hasher.hash.__func__

    def refuse_tokenizers(cls, value):
        if isinstance(value, (ReasoningTraceEncoder, PreTrainedTokenizerBase)):
            raise AssertionError(f"datasets hashed a {type(value).__name__}")
        return original(cls, value)

    monkeypatch.setattr(Hasher, "hash", classmethod(refuse_tokenizers))
    ds = Dataset.from_list(FINGERPRINT_ROWS)
    enc = ReasoningTraceEncoder(tiny_qwen2_tokenizer())
    encoded, stats = encode_dataset(ds, enc)
    assert len(encoded) == 2 and stats.counts["dropped"] == 0
    assert encoded._fingerprint == encoding_fingerprint(ds, enc)
    mine, _ = encode_dataset(ds, enc, new_fingerprint="given")  # an explicit one wins
    assert mine._fingerprint == "given"
