"""CHAMP real reasoning traces: counts, exact layouts, invariants, statistics, errors."""

from __future__ import annotations

import importlib.util

import pytest

from hf_cot_distill.data.traces import champ
from hf_cot_distill.data.traces.champ import (
    CONVERSATIONS_SYSTEM_PROMPT,
    PROBLEM_ONLY_SETTINGS,
    TRACE_FORMATS,
    ChampTrace,
    boxed,
    champ_dataset,
    champ_json_path,
    champ_records,
    champ_traces,
    section_length_stats,
    to_format,
)

pytest.importorskip("champ_dataset", reason="dev extra champ-dataset not installed")

KNOWN_ID = "P_Combinatorics_1"
KNOWN_STEPS = (
    "Let x_n, y_n, z_n be the number of length-n strings that end with digit 1, 2, 3 respectively.\n"
    "Thus, we have x_1=y_1=z_1=1.\n"
    "For a string ending with 1, we can append 1 and 2; for a string ending with 2, we can append 1, 2 "
    "and 3; for a string ending with 3, we can append 2 and 3.\n"
    "Thus, we have x_(n+1)=x_n+y_n, y_(n+1)=x_n+y_n+z_n, and z_(n+1)=y_n+z_n.\n"
    "Starting from (1, 1, 1), we have the sequence of (x_n, y_n, z_n) to be (1, 1, 1), (2, 3, 2), "
    "(5, 7, 5), (12, 17, 12), (29, 41, 29), (70, 99, 70).\n"
    "Thus, in total, there are x_6+y_6+z_6=70+99+70=239 such strings."
)
KNOWN_PROMPT = (
    "Let a string consist of digit 1, 2, 3. How many such strings of length 6 have adjacent digit "
    "differing by less than or equal to 1?"
)
META = {
    "id": f"{KNOWN_ID}/solution",
    "category": "Combinatorics",
    "source": "solution",
    "reference_answer": "239",
}


@pytest.fixture(scope="module")
def default_traces() -> list[ChampTrace]:
    return champ_traces()


@pytest.fixture(scope="module")
def all_traces() -> list[ChampTrace]:
    return champ_traces(settings=PROBLEM_ONLY_SETTINGS)


@pytest.fixture(scope="module")
def known(default_traces: list[ChampTrace]) -> ChampTrace:
    return next(t for t in default_traces if t.id == f"{KNOWN_ID}/solution")


def test_counts(default_traces: list[ChampTrace], all_traces: list[ChampTrace]) -> None:
    assert len(champ_traces(sources=("solution",))) == 270
    # 4 models x 270 problems = 1080 zero-shot conversations, 12 of them cut by a length limit.
    assert len(champ_traces(sources=("model",))) == 1068
    assert len(default_traces) == 270 + 1068
    # 5-Shot: 14 cut, 1 summary with unbalanced braces; "No C w/o H": 12 cut.
    assert len(champ_traces(sources=("model",), settings=("5-Shot",))) == 1065
    assert len(champ_traces(sources=("model",), settings=("No C w/o H",))) == 1068
    assert len(all_traces) == 270 + 1068 + 1065 + 1068
    assert len(champ_traces(sources=("model",), models=("GPT-4",))) <= 270
    assert len({t.id for t in all_traces}) == len(all_traces)


def test_known_solution_trace(known: ChampTrace) -> None:
    assert known == ChampTrace(
        id=f"{KNOWN_ID}/solution",
        problem_id=KNOWN_ID,
        category="Combinatorics",
        source="solution",
        prompt=KNOWN_PROMPT,
        reasoning=KNOWN_STEPS,
        answer="\\boxed{239}",
        reference_answer="239",
    )


def test_known_model_trace(default_traces: list[ChampTrace]) -> None:
    trace = next(t for t in default_traces if t.id == f"{KNOWN_ID}/GPT-4 Turbo|0-Shot")
    assert trace.source == "model"
    assert trace.prompt == KNOWN_PROMPT
    assert trace.reasoning.endswith(
        "Therefore, there are 239 strings of length 6 where each pair of adjacent digits differs by at most 1."
    )
    assert trace.answer == (
        "\\boxed{There are 239 strings of length 6 where each pair of adjacent digits differs by at most 1.}"
    )
    assert trace.reference_answer == "239"


def test_messages_layout(known: ChampTrace) -> None:
    assert to_format(known, "messages") == {
        "messages": [
            {"role": "user", "content": KNOWN_PROMPT},
            {"role": "assistant", "content": f"<think>\n{KNOWN_STEPS}\n</think>\n\n\\boxed{{239}}"},
        ],
        **META,
    }


def test_conversations_layout(known: ChampTrace) -> None:
    value = (
        f"<|begin_of_thought|>\n\n{KNOWN_STEPS}\n\n<|end_of_thought|>\n\n"
        "<|begin_of_solution|>\n\n\\boxed{239}\n\n<|end_of_solution|>"
    )
    assert to_format(known, "conversations") == {
        "system": CONVERSATIONS_SYSTEM_PROMPT,
        "conversations": [{"from": "user", "value": KNOWN_PROMPT}, {"from": "assistant", "value": value}],
        **META,
    }


def test_prompt_completion_layout(known: ChampTrace) -> None:
    assert to_format(known, "prompt_completion") == {
        "prompt": KNOWN_PROMPT,
        "completion": f"<think>\n{KNOWN_STEPS}\n</think>\n\n\\boxed{{239}}",
        **META,
    }


def test_reasoning_content_layout(known: ChampTrace) -> None:
    assert to_format(known, "reasoning_content") == {
        "prompt": KNOWN_PROMPT,
        "reasoning_content": KNOWN_STEPS,
        "content": "\\boxed{239}",
        **META,
    }


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    return depth == 0


def test_invariants(all_traces: list[ChampTrace]) -> None:
    for t in all_traces:
        assert t.prompt and t.prompt == t.prompt.strip(), t.id
        assert t.reasoning and t.reasoning == t.reasoning.strip(), t.id
        assert t.answer.startswith("\\boxed{") and t.answer.endswith("}"), t.id
        assert _balanced(t.answer[len("\\boxed{") : -1]), t.id
        assert t.answer != "\\boxed{}", t.id
        assert "<think>" not in t.reasoning + t.answer, t.id


def test_layouts_parse_back_with_format_adapters(default_traces: list[ChampTrace]) -> None:
    """Every record reads back, through the package's own layout adapters, to the same sections."""
    formats = pytest.importorskip("hf_cot_distill.data.traces.formats")
    for fmt in TRACE_FORMATS:
        assert formats.detect_format(list(to_format(default_traces[0], fmt))) == fmt
        for trace in default_traces[::25]:
            sample = formats.FORMAT_ADAPTERS[fmt](to_format(trace, fmt))
            assert (sample.reasoning, sample.answer) == (trace.reasoning, trace.answer), (fmt, trace.id)
            assert sample.prompt_messages[-1] == {"role": "user", "content": trace.prompt}


def test_deterministic_and_dataset_matches_records() -> None:
    assert champ_traces() == champ_traces()
    records = champ_records("reasoning_content", sources=("solution",))
    dataset = champ_dataset("reasoning_content", sources=("solution",))
    assert dataset.num_rows == 270
    assert dataset.column_names == list(records[0])
    assert dataset.to_list() == records


def test_section_length_stats_exact() -> None:
    def trace(prompt: str, reasoning: str, answer: str) -> ChampTrace:
        return ChampTrace("x", "x", "c", "solution", prompt, reasoning, answer, "a")

    stats = section_length_stats(
        [trace("ab", "r" * 10, "\\boxed{1}"), trace("abcd", "r" * 30, "\\boxed{12}")]
    )
    assert stats["prompt"] == {
        "count": 2,
        "min": 2,
        "max": 4,
        "mean": 3.0,
        "median": 3.0,
        "p90": 4,
        "total": 6,
    }
    assert stats["reasoning"]["total"] == 40
    assert stats["answer"]["max"] == 10


def test_section_length_stats_on_champ(default_traces: list[ChampTrace]) -> None:
    stats = section_length_stats(default_traces)
    assert set(stats) == {"prompt", "reasoning", "answer"}
    for section, s in stats.items():
        assert s["count"] == len(default_traces)
        assert s["total"] == sum(len(getattr(t, section)) for t in default_traces)
        assert 0 < s["min"] <= s["median"] <= s["p90"] <= s["max"]
    # Reasoning dominates: the CoT is the bulk of every real trace set.
    assert stats["reasoning"]["total"] > 5 * (stats["prompt"]["total"] + stats["answer"]["total"])


def test_errors(default_traces: list[ChampTrace]) -> None:
    with pytest.raises(ValueError, match="fmt"):
        to_format(default_traces[0], "sharegpt")
    with pytest.raises(ValueError, match="fmt"):
        champ_records("alpaca")
    with pytest.raises(ValueError, match="settings"):
        champ_traces(settings=("1/3 Soln",))
    with pytest.raises(ValueError, match="models"):
        champ_traces(models=("GPT-5",))
    with pytest.raises(TypeError, match="tuple"):
        champ_traces(sources="solution")
    with pytest.raises(ValueError, match="unbalanced"):
        boxed("f(x} = 1")
    with pytest.raises(ValueError, match="empty"):
        section_length_stats([])


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        champ.importlib.util, "find_spec", lambda name: None if name == "champ_dataset" else real(name)
    )
    with pytest.raises(ImportError, match=r"pip install champ-dataset==1\.0\.0"):
        champ_json_path()


def test_held_out_split_is_by_problem_and_complete(default_traces: list[ChampTrace]) -> None:
    splits = champ.held_out_split(10, columns=("messages", "id", "source"))
    assert set(splits) == {"train", "test"}
    assert all(set(r) == {"messages", "id", "source"} for s in splits.values() for r in s)
    ids = {s: {r["id"] for r in rows} for s, rows in splits.items()}
    assert len(ids["train"]) + len(ids["test"]) == len(default_traces)  # nothing dropped, nothing twice
    problem = {t.id: t.problem_id for t in default_traces}
    train_p = {problem[i] for i in ids["train"]}
    test_p = {problem[i] for i in ids["test"]}
    assert not train_p & test_p  # a problem's traces all land on one side
    expected = set(list(champ.load_champ_problems())[::10])
    assert test_p <= expected and test_p  # the held-out problems are every 10th in file order
    assert len(test_p) < len(train_p)


def test_held_out_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="held_out_every"):
        champ.held_out_split(0)
    with pytest.raises(ValueError, match="fmt"):
        champ.held_out_split(10, fmt="nope")
