"""Real text end to end: CHAMP traces -> four layouts -> sections -> truncation -> SectionCollator.

Real Qwen tokenizers: Qwen3 (``<think>`` is one added token), Qwen2.5 (``<think>`` is the BPE
pieces ``<th`` ``ink`` ``>``) and Qwen2.5 with ``<think>``/``</think>`` added by the user. A sample
of 40 CHAMP traces (10 human solutions, 30 model conversations, the longest among them), encoded without a length limit
except where the bad-input statistics use ``max_length=2048``.
"""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from hf_cot_distill.core.sections import Section, section_counts, section_ids_from_offsets, section_runs
from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encode_dataset, render_sample
from hf_cot_distill.data.traces.formats import FORMAT_ADAPTERS, TRACE_CASES
from hf_cot_distill.supervision.collators import SectionCollator
from hf_cot_distill.supervision.policy import IGNORE_INDEX, SupervisionPolicy
from tests.qwen_tokenizers import load_qwen25_tokenizer

champ = pytest.importorskip("hf_cot_distill.data.traces.champ")
pytest.importorskip("champ_dataset", reason="dev extra champ-dataset not installed")

P, C, A, PAD = int(Section.PROMPT), int(Section.COT), int(Section.ANSWER), int(Section.PAD)
N_SOLUTION, N_MODEL = 10, 30
MAX_LENGTH = 2048
LAYOUTS = champ.TRACE_FORMATS


@pytest.fixture(scope="module")
def traces():
    solutions = champ.champ_traces(sources=("solution",))
    models = champ.champ_traces(sources=("model",), settings=champ.PROBLEM_ONLY_SETTINGS)
    picked = solutions[:: len(solutions) // N_SOLUTION][:N_SOLUTION]
    picked += models[:: len(models) // N_MODEL][: N_MODEL - 1]
    picked.append(max(models, key=lambda t: len(t.reasoning)))  # the longest: past MAX_LENGTH
    assert len(picked) == N_SOLUTION + N_MODEL
    return picked


@pytest.fixture(scope="module")
def qwen25_think_tokenizer():
    """Qwen2.5 with ``<think>``/``</think>`` added by the user (ids 151665, 151666)."""
    tok = load_qwen25_tokenizer()
    tok.add_tokens(["<think>", "</think>"])
    return tok


@pytest.fixture(scope="module")
def tokenizers(qwen3_tokenizer, qwen25_tokenizer, qwen25_think_tokenizer):
    return {"qwen3": qwen3_tokenizer, "qwen25": qwen25_tokenizer, "qwen25+think": qwen25_think_tokenizer}


def encode(tokenizer, traces, layout, **kwargs):
    """Rows of ``layout`` through the real encoder (one batch)."""
    records = [champ.to_format(t, layout) for t in traces]
    batch = {key: [r[key] for r in records] for key in records[0]}
    return ReasoningTraceEncoder(tokenizer, source_format=layout, **kwargs)(batch)


def char_labels(tokenizer, trace, layout):
    """Render one trace; return ``(text, spans, input_ids, section_ids, per-character labels)``.

    Per-character labels come back from the *tokens*: every character covered by a token's offsets
    takes that token's section id (0 where no token covers it).
    """
    sample = FORMAT_ADAPTERS[layout](champ.to_format(trace, layout))
    text, spans, _ = render_sample(tokenizer, sample)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    sections = section_ids_from_offsets(enc["offset_mapping"], spans, len(text))
    labels = np.zeros(len(text), dtype=np.int8)
    for (start, end), section in zip(enc["offset_mapping"], sections):
        labels[start:end] = section
    return text, spans, enc["input_ids"], sections.tolist(), labels


def span_labels(text, spans):
    labels = np.full(len(text), P, dtype=np.int8)
    for span in spans:
        labels[span.start : span.end] = int(span.section)
    return labels


# --- sections: four layouts x three tokenizers ----------------------------------------------------


def test_layouts_agree_on_cot_and_answer_tokens(tokenizers, traces):
    """Same trace in four layouts -> identical COT and ANSWER token ids (prompts differ by design)."""
    for name, tok in tokenizers.items():
        encoded = {layout: encode(tok, traces, layout) for layout in LAYOUTS}
        for layout, out in encoded.items():
            assert out["trace_flags"] == [0] * len(traces), (name, layout)
            for ids, secs in zip(out["input_ids"], out["section_ids"]):
                assert [s for s, _, _ in section_runs(secs)] == [P, C, A], (name, layout)
                assert len(ids) == len(secs)
        for r in range(len(traces)):
            per_layout = {
                layout: [(i, s) for i, s in zip(out["input_ids"][r], out["section_ids"][r]) if s in (C, A)]
                for layout, out in encoded.items()
            }
            first = per_layout[LAYOUTS[0]]
            assert all(v == first for v in per_layout.values()), (name, traces[r].id)


def test_encoder_matches_char_level_reconstruction(tokenizers, traces):
    for name, tok in tokenizers.items():
        out = encode(tok, traces[:8], "messages")
        for r, trace in enumerate(traces[:8]):
            _, _, ids, secs, _ = char_labels(tok, trace, "messages")
            assert (ids, secs) == (out["input_ids"][r], out["section_ids"][r]), name


def test_think_marker_tokenization_facts(tokenizers):
    assert tokenizers["qwen3"].tokenize("<think>\n") == ["<think>", "Ċ"]
    assert tokenizers["qwen25"].tokenize("<think>\n") == ["<th", "ink", ">Ċ"]
    assert tokenizers["qwen25"].tokenize("</think>\n\nThe") == ["</", "think", ">ĊĊ", "The"]
    assert tokenizers["qwen25+think"].convert_tokens_to_ids(["<think>", "</think>"]) == [151665, 151666]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_section_boundaries_same_at_character_level(tokenizers, traces, layout):
    """Token sections mapped back to characters: Qwen3 == the rendered spans == Qwen2.5 with
    ``<think>`` added, exactly; plain Qwen2.5 differs only where its BPE token ``>\\n\\n`` straddles
    the COT/ANSWER boundary: those two newlines fall in COT (a token takes the section of its first
    character), and nowhere else. Compared over the assistant turn, which renders to the same text
    under both templates (the prompts differ: Qwen2.5 adds its default system prompt)."""
    straddled = 0
    for trace in traces:
        views = {}
        for name, tok in tokenizers.items():
            text, spans, _, _, labels = char_labels(tok, trace, layout)
            start = spans[0].start  # the COT span opens the assistant turn's body
            assert spans[0].section == Section.COT and text[start:].startswith("<think>\n")
            assert (labels[:start] == P).all(), (name, trace.id)
            views[name] = (text[start:], labels[start:], span_labels(text, spans)[start:])
        reference_text, reference_labels, expected = views["qwen3"]
        assert np.array_equal(reference_labels, expected), trace.id  # tokens reproduce the spans
        assert reference_text.endswith("<|im_end|>")
        for name in ("qwen25", "qwen25+think"):
            assert views[name][0] == reference_text, (name, trace.id)
        assert np.array_equal(views["qwen25+think"][1], reference_labels), trace.id
        differ = np.flatnonzero(views["qwen25"][1] != reference_labels)
        close_end = reference_text.index("</think>") + len("</think>")
        assert reference_text[close_end : close_end + 2] == "\n\n"
        assert differ.tolist() in ([], [close_end, close_end + 1]), trace.id
        assert (views["qwen25"][1][differ] == C).all()
        straddled += len(differ) > 0
        runs = section_runs(views["qwen25"][1])
        assert [s for s, _, _ in runs] == [C, A]
        assert runs[0][1] == 0 and runs[-1][2] == len(reference_text)
    assert straddled == len(traces)  # every CHAMP answer follows "</think>\n\n" here


# --- truncation and collation -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows(qwen25_tokenizer, traces):
    out = encode(qwen25_tokenizer, traces, "messages")
    return [
        {"input_ids": i, "attention_mask": m, "section_ids": s}
        for i, m, s in zip(out["input_ids"], out["attention_mask"], out["section_ids"])
    ]


def supervised(section_ids, policy):
    return policy.supervised_mask(np.asarray(section_ids))


def unpadded(batch, key):
    mask = batch["attention_mask"].bool()
    return [row[m].tolist() for row, m in zip(batch[key], mask)]


def packed_rows(batch, key):
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [positions.numel()]
    return [batch[key][0, a:b].tolist() for a, b in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("padding_free", [False, True])
def test_lead_span_half_reports_every_lost_supervised_token(rows, padding_free):
    from hf_cot_distill.supervision.truncation import LeadSpanProportion

    policy = SupervisionPolicy()  # CE on COT and ANSWER
    collator = SectionCollator(
        supervision=policy,
        pad_token_id=151643,
        truncation=LeadSpanProportion(0.5),
        padding_free=padding_free,
        return_accounting=True,
    )
    batch = collator(rows)
    acc = batch.pop("truncation_accounting")
    expected_removed = np.zeros(4, dtype=np.int64)
    lost_supervised = kept_supervised = 0
    for row in rows:
        secs = np.asarray(row["section_ids"])
        keep = len(secs) // 2  # floor(L * 0.5)
        mask = supervised(secs, policy)
        expected_removed += section_counts(secs[keep:])
        lost_supervised += int(mask[keep:].sum())
        kept_supervised += int(mask[:keep].sum())
    assert acc.samples == acc.samples_truncated == len(rows)
    assert acc.supervised_before - acc.supervised_kept == lost_supervised > 0
    assert acc.supervised_kept == kept_supervised
    assert acc.tokens_removed.tolist() == expected_removed.tolist()
    assert acc.samples_supervision_lost == 0 and acc.samples_dropped == 0
    # what is trained on is what the accounting says is kept
    label_rows = packed_rows(batch, "labels") if padding_free else unpadded(batch, "labels")
    assert sum(sum(label != IGNORE_INDEX for label in r) for r in label_rows) == acc.supervised_kept
    lengths = [len(r) for r in label_rows]
    assert lengths == [len(r["input_ids"]) // 2 for r in rows]


def test_packed_equals_padded_after_truncation(rows):
    from hf_cot_distill.supervision.truncation import SectionPreserving

    kwargs = {"pad_token_id": 151643, "truncation": SectionPreserving(512)}
    padded = SectionCollator(**kwargs)(rows)
    packed = SectionCollator(padding_free=True, **kwargs)(rows)
    for key in ("input_ids", "labels", "section_ids", "ce_weights", "kd_weights"):
        assert unpadded(padded, key) == packed_rows(packed, key), key
    assert (padded["section_ids"][~padded["attention_mask"].bool()] == PAD).all()


@pytest.mark.parametrize("budget", [512, 160])
def test_section_preserving_keeps_prompt_answer_and_markers(rows, budget, qwen25_tokenizer):
    from hf_cot_distill.supervision.truncation import SectionPreserving

    policy = SectionPreserving.for_tokenizer(budget, qwen25_tokenizer)
    assert (policy.cot_open_tokens, policy.cot_close_tokens) == (3, 3)  # "<th ink >\n" ... "</ think >\n\n"
    collator = SectionCollator(pad_token_id=151643, truncation=policy, padding_free=True)
    batch = collator(rows)
    acc = collator.accounting
    out_rows = packed_rows(batch, "input_ids")
    out_secs = packed_rows(batch, "section_ids")
    fallbacks, removed = 0, np.zeros(4, dtype=np.int64)
    for row, ids, secs in zip(rows, out_rows, out_secs):
        full_ids, full_secs = row["input_ids"], np.asarray(row["section_ids"])
        counts = section_counts(full_secs)
        assert len(ids) == min(len(full_ids), budget)
        if len(full_ids) - budget > counts[C] - 6:  # prompt + answer + both whole markers do not fit
            fallbacks += 1
            assert ids == full_ids[:budget]  # KeepFirst
        else:
            kept = section_counts(secs)
            assert (kept[P], kept[A]) == (counts[P], counts[A])
            cot_in = [i for i, s in zip(full_ids, full_secs) if s == C]
            cot_out = [i for i, s in zip(ids, secs) if s == C]
            assert cot_out[:3] == cot_in[:3] and cot_out[-3:] == cot_in[-3:]  # whole <think> ... </think>
            assert cot_out[:-3] == cot_in[: len(cot_out) - 3]  # the CoT is cut from its tail
        removed += counts - section_counts(secs)
    assert acc.fallbacks == fallbacks
    assert acc.tokens_removed.tolist() == removed.tolist()
    assert acc.samples_truncated == sum(len(r["input_ids"]) > budget for r in rows) > 0
    if budget == 160:
        assert fallbacks > 0 and removed[A] > 0  # fallbacks cut answers, and that is reported


def test_answer_only_supervision_lost_to_lead_span_is_counted_and_dropped(rows):
    from hf_cot_distill.supervision.truncation import LeadSpanProportion

    policy = SupervisionPolicy.from_preset("answer")
    lost = sum(not supervised(r["section_ids"], policy)[: len(r["input_ids"]) // 2].any() for r in rows)
    assert lost == len(rows)  # every CHAMP answer sits in the second half
    keep = SectionCollator(supervision=policy, truncation=LeadSpanProportion(0.5))
    batch = keep(rows)
    assert keep.accounting.samples_supervision_lost == len(rows)
    assert keep.accounting.supervised_kept == 0 and keep.accounting.kept_fraction(A) == 0.0
    assert float(batch["kd_weights"].sum()) == 0.0 and (batch["labels"] == IGNORE_INDEX).all()
    drop = SectionCollator(supervision=policy, truncation=LeadSpanProportion(0.5), on_supervision_lost="drop")
    with pytest.raises(ValueError, match="all 40 samples were dropped"):
        drop(rows)
    assert drop.accounting.samples_dropped == drop.accounting.samples_supervision_lost == len(rows)


# --- bad input on real text -----------------------------------------------------------------------


def _bad_variants(traces):
    """Real CHAMP rows in the ``messages`` layout, some broken on purpose; ``(rows, expected)``."""
    rows = [champ.to_format(t, "messages") for t in traces]
    rows = [{"messages": r["messages"]} for r in rows]

    def assistant(i, content):
        rows[i] = {"messages": [rows[i]["messages"][0], {"role": "assistant", "content": content}]}

    t = traces
    for i in (0, 1, 2):  # generation cut mid-CoT
        assistant(i, f"<think>\n{t[i].reasoning[: len(t[i].reasoning) // 2]}")
    for i in (3, 4):  # R1 output: the template already emitted <think>
        assistant(i, f"{t[i].reasoning}\n</think>\n\n{t[i].answer}")
    assistant(5, f"{t[5].answer}\n<think>\n{t[5].reasoning}\n</think>\n\n{t[5].answer}")
    assistant(6, f"<think>\n\n</think>\n\n{t[6].answer}")  # empty CoT (non-thinking form)
    rows[7] = {  # an earlier exchange before the supervised turn
        "messages": [
            {"role": "user", "content": t[8].prompt},
            {"role": "assistant", "content": f"<think>\n{t[8].reasoning}\n</think>\n\n{t[8].answer}"},
            *rows[7]["messages"],
        ]
    }
    rows[9] = {"messages": [*rows[9]["messages"], {"role": "user", "content": "Thanks!"}]}
    assistant(10, f"<think>\n<think>\n{t[10].reasoning}\n</think>\n\n{t[10].answer}")
    assistant(13, f"<think>\n{t[13].reasoning}\n</think>\n\n")  # cut right after its CoT
    rows[14] = {"messages": [{"content": t[14].prompt}, *rows[14]["messages"][1:]]}  # no role
    refused = {0, 1, 2, 5, 9, 10, 13, 14}
    expected = dict.fromkeys(TRACE_CASES, 0)
    expected.update(
        missing_close_marker=3,
        missing_open_marker=2,
        text_before_cot=1,
        empty_cot=1,
        multiple_assistant_turns=1,
        no_final_assistant_turn=1,
        malformed_markers=1,
        empty_answer=1,
        malformed_row=1,
    )
    return rows, refused, expected


def test_bad_input_statistics_on_real_text(qwen25_tokenizer, traces):
    rows, refused, expected = _bad_variants(traces)
    encoder = ReasoningTraceEncoder(qwen25_tokenizer, max_length=MAX_LENGTH, on_invalid="drop")
    plain = encode(qwen25_tokenizer, traces, "messages")
    too_long = {r for r, ids in enumerate(plain["input_ids"]) if len(ids) > MAX_LENGTH} - refused - {7}
    assert len(too_long) >= 1  # real traces run past 2,048 tokens
    expected.update(too_long=len(too_long), dropped=len(refused) + len(too_long))
    # new_fingerprint: skip hashing the 151k-token tokenizer for the datasets cache (seconds)
    encoded, stats = encode_dataset(
        Dataset.from_list(rows), encoder, batch_size=16, new_fingerprint="bad-q25"
    )
    assert stats.samples == len(rows)
    assert stats.counts == expected
    assert len(encoded) == len(rows) - expected["dropped"]
    assert all(0 < len(ids) <= MAX_LENGTH for ids in encoded["input_ids"])
    report = stats.report()
    assert f"samples: {len(rows)}" in report and "missing_close_marker: 3 (7.5%)" in report


def test_text_parts_content_encodes_like_strings(qwen25_tokenizer, traces):
    """TRL / OpenAI list-of-parts content on real text: the same ids and sections as strings."""
    plain = [{"messages": champ.to_format(t, "messages")["messages"]} for t in traces[:6]]
    parts = [
        {
            "messages": [
                {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
                for m in r["messages"]
            ]
        }
        for r in plain
    ]
    encoder = ReasoningTraceEncoder(qwen25_tokenizer)
    want, got = (
        encoder({"messages": [r["messages"] for r in plain]}),
        encoder({"messages": [r["messages"] for r in parts]}),
    )
    assert got == want and got["trace_flags"] == [0] * len(plain)


def test_reasoning_not_rendered_counted_with_qwen3_all_turns(qwen3_tokenizer, traces):
    rows, _, _ = _bad_variants(traces)
    encoder = ReasoningTraceEncoder(qwen3_tokenizer, turn_policy="all", on_invalid="drop")
    _, stats = encode_dataset(
        Dataset.from_list([rows[7], rows[11], rows[12]]), encoder, new_fingerprint="bad-q3"
    )
    # Qwen3 drops the reasoning of assistant turns before the last user query: supervised as ANSWER
    assert stats.counts["reasoning_not_rendered"] == 1
    assert stats.counts["multiple_assistant_turns"] == 1 and stats.counts["dropped"] == 0
