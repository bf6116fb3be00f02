"""Truncation policies: exact cuts, accounting, and properties over random sections/settings."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_cot_distill.core.sections import Section, section_counts, section_runs
from hf_cot_distill.supervision.truncation import (
    TRUNCATION_POLICIES,
    CutAfterCot,
    KeepFirst,
    KeepWindow,
    LeadSpanProportion,
    SectionPreserving,
    TruncationAccounting,
    cot_marker_token_counts,
    proportion_length,
    truncate_sample,
)

P, C, A = int(Section.PROMPT), int(Section.COT), int(Section.ANSWER)
SECS = np.array([P] * 3 + [C] * 5 + [A] * 2)  # L = 10


def _keep(policy, secs=SECS) -> list[int]:
    return policy.keep_indices(np.asarray(secs)).tolist()


def test_lead_span_proportion_keeps_floor_of_own_length() -> None:
    assert _keep(LeadSpanProportion(0.5)) == list(range(5))
    assert _keep(LeadSpanProportion(0.33)) == list(range(3))
    assert _keep(LeadSpanProportion(1.0)) == list(range(10))
    assert _keep(LeadSpanProportion(0.5), SECS[:7]) == list(range(3))  # ⌊7·0.5⌋, its own length


@pytest.mark.parametrize("x", [0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 0.25, 0.33, 1.0])
def test_proportional_cuts_keep_the_exact_floor(x: float) -> None:
    # ⌊L·x⌋ of the decimal x as written: 0.7 * 90 is 62.99999… in binary floats, but 63 tokens.
    exact = Fraction(str(x))
    lengths = np.arange(1, 4097)
    want = lengths * exact.numerator // exact.denominator
    lead = [len(LeadSpanProportion(x).keep_indices(np.ones(n))) for n in lengths]
    window = [len(KeepWindow("right", window_proportion=x).keep_indices(np.ones(n))) for n in lengths]
    assert lead == want.tolist() and window == want.tolist()
    assert proportion_length(90, 0.7) == 63 and proportion_length(10, 0.3) == 3


def test_budget_windows_and_cut_after_cot() -> None:
    assert _keep(KeepFirst(4)) == [0, 1, 2, 3]
    assert _keep(KeepFirst(40)) == list(range(10))
    assert _keep(KeepWindow("left", window_proportion=0.5)) == [0, 1, 2, 3, 4]
    assert _keep(KeepWindow("middle", window_proportion=0.5)) == [2, 3, 4, 5, 6]
    assert _keep(KeepWindow("right", window_proportion=0.5)) == [5, 6, 7, 8, 9]
    assert _keep(KeepWindow("right", max_tokens=3)) == [7, 8, 9]
    assert _keep(CutAfterCot()) == list(range(8))
    assert _keep(CutAfterCot(), [P, P, A]) == [0, 1, 2]
    assert _keep(KeepFirst(np.int64(4))) == [0, 1, 2, 3]  # numpy ints are ints (stored as int)
    assert type(SectionPreserving(np.int64(8), cot_close_tokens=np.int32(3)).cot_close_tokens) is int


def test_section_preserving_shrinks_cot_tail_and_keeps_its_markers() -> None:
    # COT = indices 3..7; opener 3 and closer 7 stay; tail 6, 5 go first.
    assert _keep(SectionPreserving(8)) == [0, 1, 2, 3, 4, 7, 8, 9]
    assert _keep(SectionPreserving(8, keep_cot_close=False)) == [0, 1, 2, 3, 4, 5, 8, 9]
    assert _keep(SectionPreserving(7)) == [0, 1, 2, 3, 7, 8, 9]
    # Budget below prompt + answer + markers: falls back to keep-first, and says so.
    policy = SectionPreserving(4)
    assert policy.fell_back(SECS) and _keep(policy) == [0, 1, 2, 3]
    # Two CoT runs share the cut in proportion to their length.
    two = [P, C, C, C, C, C, A, P, C, C, C, A]
    kept = np.asarray(two)[SectionPreserving(9).keep_indices(np.asarray(two))]
    assert section_counts(kept)[C] == 5 and section_counts(kept)[P] == 2 and section_counts(kept)[A] == 2


def test_section_preserving_keeps_multi_token_markers_whole() -> None:
    # Qwen2.5 renders <think> as "<th" "ink" ">\n" and </think> as "</" "think" ">\n\n": 3 + 3.
    secs = np.array([P] * 2 + [C] * 10 + [A] * 2)  # COT = 2..11: opener 2-4, closer 9-11
    policy = SectionPreserving(10, cot_open_tokens=3, cot_close_tokens=3)
    assert _keep(policy, secs) == [0, 1, 2, 3, 4, 9, 10, 11, 12, 13]
    eleven = SectionPreserving(11, cot_open_tokens=3, cot_close_tokens=3)
    assert _keep(eleven, secs) == [0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13]  # the CoT is cut from its tail
    # one token less than prompt + answer + both markers: falls back and says so
    assert not policy.fell_back(secs) and SectionPreserving(
        9, cot_open_tokens=3, cot_close_tokens=3
    ).fell_back(secs)
    assert _keep(SectionPreserving(8, False, cot_open_tokens=3), secs) == [0, 1, 2, 3, 4, 5, 12, 13]


def test_bad_settings_are_refused() -> None:
    for make in (
        lambda: LeadSpanProportion(0.0),
        lambda: LeadSpanProportion(1.5),
        lambda: KeepFirst(0),
        lambda: KeepWindow("top", window_proportion=0.5),
        lambda: KeepWindow("left"),
        lambda: KeepWindow("left", window_proportion=0.5, max_tokens=3),
        lambda: SectionPreserving(-2),
        lambda: SectionPreserving(8, cot_open_tokens=0),
        lambda: SectionPreserving(8, cot_close_tokens=True),
        lambda: SectionPreserving(8, cot_close_tokens=2.0),
        lambda: SectionPreserving(8, keep_cot_close=False, cot_close_tokens=3),
        lambda: SectionPreserving(8, keep_cot_close="no"),
    ):
        with pytest.raises(ValueError, match="fix"):
            make()
    assert set(TRUNCATION_POLICIES) == {
        "lead_span_proportion",
        "keep_first",
        "keep_window",
        "cut_after_cot",
        "section_preserving",
    }


def test_accounting_reports_kept_fraction_and_lost_supervision() -> None:
    acc = TruncationAccounting()
    row = {"input_ids": np.arange(10), "section_ids": SECS, "note": "x"}
    supervised = SECS == A  # answer-only supervision
    out = truncate_sample(row, LeadSpanProportion(0.5), supervised, acc)
    assert out["input_ids"].tolist() == [0, 1, 2, 3, 4] and out["note"] == "x"
    assert acc.samples_supervision_lost == 1 and acc.samples_dropped == 0
    assert truncate_sample(row, LeadSpanProportion(0.5), supervised, acc, on_supervision_lost="drop") is None
    assert acc.samples_supervision_lost == 2 and acc.samples_dropped == 1
    assert acc.tokens_kept.tolist() == [0, 3, 2, 0]  # the dropped sample is not trained on
    assert acc.tokens_removed.tolist() == [0, 3, 8, 4]
    assert acc.kept_fraction(Section.COT) == 0.2
    assert "cot: trained on 2/10 tokens (20.0%)" in acc.report()
    assert acc.to_dict()["kept_fraction/answer"] == 0.0
    assert acc.supervised_before == 4 and acc.supervised_kept == 0


@st.composite
def random_sections(draw) -> np.ndarray:
    n_examples = draw(st.integers(1, 3))
    parts = []
    for _ in range(n_examples):
        parts += (
            [P] * draw(st.integers(1, 6)) + [C] * draw(st.integers(0, 12)) + [A] * draw(st.integers(0, 4))
        )
    return np.asarray(parts)


POLICIES = st.one_of(
    st.builds(LeadSpanProportion, st.floats(0.01, 1.0)),
    st.builds(KeepFirst, st.integers(1, 60)),
    st.builds(KeepWindow, st.sampled_from(["left", "middle", "right"]), st.floats(0.01, 1.0)),
    st.builds(
        lambda pos, n: KeepWindow(pos, max_tokens=n),
        st.sampled_from(["left", "middle", "right"]),
        st.integers(1, 60),
    ),
    st.just(CutAfterCot()),
    st.builds(
        lambda n, close, n_open, n_close: SectionPreserving(n, close, n_open, n_close if close else 1),
        st.integers(1, 60),
        st.booleans(),
        st.integers(1, 4),
        st.integers(1, 4),
    ),
)
PREFIX_POLICIES = (LeadSpanProportion, KeepFirst, CutAfterCot)


@settings(max_examples=300, deadline=None)
@given(secs=random_sections(), policy=POLICIES, supervised_sections=st.sets(st.sampled_from([P, C, A])))
def test_truncation_properties(secs: np.ndarray, policy, supervised_sections: set[int]) -> None:
    ids = np.arange(100, 100 + len(secs))
    supervised = np.isin(secs, list(supervised_sections))
    acc = TruncationAccounting()
    drop = bool(len(secs) % 2)
    out = truncate_sample(
        {"input_ids": ids, "section_ids": secs}, policy, supervised, acc, "drop" if drop else "keep"
    )
    keep = policy.keep_indices(secs)
    # targets only: the first token of the sample, and of what is kept, is predicted by nothing
    before, kept = supervised[1:], supervised[keep[1:]]
    lost = before.any() and not kept.any()
    assert acc.samples_dropped == int(len(keep) == 0 or (lost and drop))
    if out is None:
        assert acc.tokens_kept.sum() == 0 and acc.supervised_kept == 0
        return
    assert np.all(np.diff(keep) > 0) and (keep.size == 0 or (keep[0] >= 0 and keep[-1] < len(secs)))
    # counts add up
    assert acc.tokens_before.tolist() == section_counts(secs).tolist()
    assert acc.tokens_kept.tolist() == section_counts(out["section_ids"]).tolist()
    assert acc.tokens_removed.sum() == len(secs) - len(out["input_ids"])
    # no supervised token lost without being reported
    assert (acc.supervised_before, acc.supervised_kept) == (before.sum(), kept.sum())
    assert acc.samples_supervision_lost == int(lost)
    # kept prefix equals the original prefix; windows are contiguous
    if isinstance(policy, PREFIX_POLICIES):
        assert out["input_ids"].tolist() == ids[: len(out["input_ids"])].tolist()
    if isinstance(policy, KeepWindow) and len(keep):
        assert out["input_ids"].tolist() == ids[keep[0] : keep[0] + len(keep)].tolist()
    # sections stay contiguous and in order: runs of the output are a subsequence of the input's
    in_runs = [r[0] for r in section_runs(secs)]
    out_runs = [r[0] for r in section_runs(out["section_ids"])]
    it = iter(in_runs)
    assert all(any(s == t for t in it) for s in out_runs)
    if isinstance(policy, SectionPreserving):
        assert len(keep) == min(len(secs), policy.max_tokens)
        if not policy.fell_back(secs):
            for s in (P, A):
                assert section_counts(out["section_ids"])[s] == section_counts(secs)[s]
            assert len(section_runs(out["section_ids"])) == len(section_runs(secs))
            # every CoT run keeps its marker tokens: the first cot_open_tokens, the last cot_close_tokens
            n_close = policy.cot_close_tokens if policy.keep_cot_close else 0
            for sec, start, end in section_runs(secs):
                if sec == C:
                    head = range(start, min(end, start + policy.cot_open_tokens))
                    tail = range(max(start, end - n_close), end)
                    assert set(head) | set(tail) <= set(keep.tolist())


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=2, max_size=6), x=st.floats(0.05, 1.0))
def test_accounting_merges_across_batches(lengths: list[int], x: float) -> None:
    rows = [np.asarray([P] * 2 + [C] * n + [A] * 2) for n in lengths]
    whole, first, second = TruncationAccounting(), TruncationAccounting(), TruncationAccounting()
    half = len(rows) // 2
    for i, secs in enumerate(rows):
        truncate_sample({"section_ids": secs}, LeadSpanProportion(x), secs == C, whole)
        truncate_sample(
            {"section_ids": secs}, LeadSpanProportion(x), secs == C, first if i < half else second
        )
    merged = first + second
    assert merged.to_dict() == whole.to_dict()
    assert merged.tokens_kept.tolist() == whole.tokens_kept.tolist()


@pytest.mark.parametrize(("name", "counts"), [("qwen25", (3, 3)), ("qwen3", (1, 1))])
def test_think_markers_survive_section_preserving_on_champ_traces(name, counts, request) -> None:
    """Real tokenizers on real traces: the cut CoT still opens with ``<think>`` and closes with
    ``</think>`` (Qwen2.5 splits both into three tokens, Qwen3 has them as one token each)."""
    champ = pytest.importorskip("hf_cot_distill.data.traces.champ")
    pytest.importorskip("champ_dataset", reason="dev extra champ-dataset not installed")
    from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder

    tok = request.getfixturevalue(f"{name}_tokenizer")
    assert cot_marker_token_counts(tok) == counts
    measured = SectionPreserving.for_tokenizer(100, tok)
    assert (measured.cot_open_tokens, measured.cot_close_tokens) == counts
    traces = (
        champ.champ_traces(sources=("solution",))[::27]
        + champ.champ_traces(sources=("model",), settings=champ.PROBLEM_ONLY_SETTINGS)[::200]
    )
    records = [champ.to_format(t, "messages") for t in traces]
    out = ReasoningTraceEncoder(tok)({"messages": [r["messages"] for r in records]})
    cut = 0
    for ids, secs in zip(out["input_ids"], out["section_ids"]):
        ids, secs = np.asarray(ids), np.asarray(secs)
        cot_ids = ids[secs == C]
        for budget in (len(ids) - 6, len(ids) - section_counts(secs)[C] // 2, len(ids) - len(cot_ids) + 7):
            policy = SectionPreserving(budget, cot_open_tokens=counts[0], cot_close_tokens=counts[1])
            keep = policy.keep_indices(secs)
            assert not policy.fell_back(secs) and len(keep) == budget
            kept_cot = ids[keep][secs[keep] == C]
            text = tok.decode(kept_cot)
            assert text.startswith("<think>\n") and text.rstrip("\n").endswith("</think>"), text[-40:]
            assert text.count("</think>") == 1 and text.count("<think>") == 1
            n_close = counts[1]
            head = len(kept_cot) - n_close
            assert kept_cot[:head].tolist() == cot_ids[:head].tolist()  # cut from the tail...
            assert kept_cot[head:].tolist() == cot_ids[-n_close:].tolist()  # ...before the closer
            cut += 1
    assert cut == 3 * len(traces) >= 15


def test_marker_counts_follow_the_render_markers(qwen25_tokenizer, qwen3_tokenizer) -> None:
    from types import SimpleNamespace

    from hf_cot_distill.data.traces.formats import MARKER_PRESETS

    # OpenThoughts markers are no Qwen token: many pieces either way, and the same pieces in both
    openthoughts = MARKER_PRESETS["openthoughts"]
    assert cot_marker_token_counts(qwen25_tokenizer, openthoughts) == (8, 8)
    assert cot_marker_token_counts(qwen3_tokenizer, openthoughts) == (8, 8)
    # a closing marker that heads the answer ("### Answer") is no part of the CoT: nothing to keep
    headers = SimpleNamespace(
        think_open="### Reasoning", think_close="### Answer", answer_separator="\n", close_opens_answer=True
    )
    n_open, n_close = cot_marker_token_counts(qwen25_tokenizer, headers)
    assert n_open > 1 and n_close == 1
    assert SectionPreserving.for_tokenizer(64, qwen25_tokenizer, markers=headers).cot_close_tokens == 1
    with pytest.raises(ValueError, match=r"markers.think_close='': must be a non-empty string"):
        cot_marker_token_counts(qwen25_tokenizer, SimpleNamespace(think_open="<t>", think_close=""))
