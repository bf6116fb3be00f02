"""Real reasoning traces from the CHAMP dataset, in every trace layout we read.

CHAMP (``champ-dataset==1.0.0``, MIT; a *dev* extra, never a runtime dependency) ships
``champ_dataset/dataset_files/v0.json``: 270 competition math problems, each with a human
step-by-step ``solution`` and a final ``_answer``, and 72 model ``conversations`` per problem
(4 models x 18 prompt settings; messages with ``role``/``text``/``error``). Conversations
end with the model's worked answer, the user request "Now, summarize the answer above in one
sentence, ..." and the model's one-sentence summary. Nothing carries ``<think>`` tags: this
module wraps the reasoning and the final answer itself.

A :class:`ChampTrace` is one (prompt, reasoning, answer) triple:

* ``source="solution"``: the problem text; the human solution steps, one per line; the reference
  answer in ``\\boxed{}``.
* ``source="model"``: the problem text; the model's worked answer (its chain of thought, not
  necessarily correct); its one-sentence summary in ``\\boxed{}``. Only the prompt settings whose
  last question is the bare problem (:data:`PROBLEM_ONLY_SETTINGS`) are offered, so the prompt is
  exactly what the model saw last. Conversations cut by a length limit (any message with an
  ``error``) are skipped, as is a summary with unbalanced braces (it cannot be boxed).

Any trace whose text contains one of :data:`RESERVED_MARKERS` is skipped (none in v0.json).

:func:`to_format` writes a trace in one of :data:`TRACE_FORMATS`, the layouts of
``hf_cot_distill.data.traces.formats`` (``FORMAT_ADAPTERS``):

* ``"messages"``: user + assistant ``messages``; assistant content ``<think>\\nR\\n</think>\\n\\nA``.
* ``"conversations"``: OpenThoughts/Bespoke ``system`` + ``conversations`` (``from``/``value``),
  ``<|begin_of_thought|>\\n\\nR\\n\\n<|end_of_thought|>\\n\\n<|begin_of_solution|>\\n\\nA\\n\\n<|end_of_solution|>``.
* ``"prompt_completion"``: ``prompt`` string; ``completion`` = ``<think>\\nR\\n</think>\\n\\nA``.
* ``"reasoning_content"``: R1 style, ``prompt`` + ``reasoning_content`` (R) + ``content`` (A).

Every record also carries ``id``, ``category``, ``source`` and ``reference_answer`` columns.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hf_cot_distill.core.validation import check_choice

TRACE_FORMATS: tuple[str, ...] = ("messages", "conversations", "prompt_completion", "reasoning_content")
SOURCES: tuple[str, ...] = ("solution", "model")
#: The four models of CHAMP's conversations, in file order.
CHAMP_MODELS: tuple[str, ...] = ("GPT-3.5", "GPT-4", "GPT-4 Turbo", "PaLM 2 Medium")
#: Prompt settings whose last user question is the bare problem ("Solve the following problem...").
#: The others add hints, concepts or partial solutions that the trace's prompt would not show.
PROBLEM_ONLY_SETTINGS: tuple[str, ...] = ("0-Shot", "5-Shot", "No C w/o H")
#: Strings a trace must not contain: the markers the layouts and Qwen chat templates parse.
RESERVED_MARKERS: tuple[str, ...] = (
    "<think>",
    "</think>",
    "<|begin_of_thought|>",
    "<|end_of_thought|>",
    "<|begin_of_solution|>",
    "<|end_of_solution|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
)
SUMMARY_REQUEST_PREFIX = "Now, summarize the answer above in one sentence"
CONVERSATIONS_SYSTEM_PROMPT = (
    "Reason step by step between <|begin_of_thought|> and <|end_of_thought|>, then give the final "
    "solution between <|begin_of_solution|> and <|end_of_solution|> with the answer in \\boxed{}."
)
_INSTALL_HINT = (
    "CHAMP reasoning traces need the dev-only package `champ-dataset` (never a runtime dependency); "
    "install it with `pip install 'hf-cot-distill[dev]'` or `pip install champ-dataset==1.0.0`."
)


@dataclass(frozen=True)
class ChampTrace:
    """One CHAMP reasoning trace: prompt, chain of thought and boxed final answer (plain text)."""

    id: str  # "<problem id>/solution" or "<problem id>/<model>|<setting>"
    problem_id: str
    category: str
    source: str  # one of SOURCES
    prompt: str
    reasoning: str
    answer: str  # "\boxed{...}"
    reference_answer: str  # CHAMP's ground-truth answer, unboxed


def champ_json_path() -> Path:
    """Path of ``v0.json`` in the installed ``champ-dataset`` package.

    Raises:
        ImportError: ``champ-dataset`` is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("champ_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(_INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_files" / "v0.json"
    if not path.is_file():
        raise ImportError(f"{path} is missing; reinstall it. {_INSTALL_HINT}")
    return path


@lru_cache(maxsize=2)
def _load_problems(path: str) -> dict[str, dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["problems"]


def load_champ_problems(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The raw ``problems`` mapping of ``v0.json`` (cached per path; treat it as read-only)."""
    return _load_problems(str(path if path is not None else champ_json_path()))


def boxed(answer: str) -> str:
    """``\\boxed{answer}``; refuses text whose braces do not balance (the box would not close)."""
    depth = 0
    for ch in answer:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            break
    if depth != 0:
        raise ValueError(f"answer: {answer[:80]!r} has unbalanced braces; fix: clean it before boxing.")
    return f"\\boxed{{{answer.strip()}}}"


def _solution_trace(problem: dict[str, Any]) -> ChampTrace:
    pid = problem["identifier"]
    return ChampTrace(
        id=f"{pid}/solution",
        problem_id=pid,
        category=problem["category"],
        source="solution",
        prompt=problem["_text"].strip(),
        reasoning="\n".join(step["_text"].strip() for step in problem["solution"]["steps"]),
        answer=boxed(problem["_answer"]),
        reference_answer=problem["_answer"],
    )


def _model_trace(problem: dict[str, Any], key: str, messages: list[dict[str, Any]]) -> ChampTrace | None:
    """The trace of one conversation, or ``None`` when it was cut, empty or unboxable."""
    if any(m["error"] is not None for m in messages) or len(messages) < 5:
        return None
    worked, request, summary = messages[-3], messages[-2], messages[-1]
    if not (request["role"] == "User" and request["text"].startswith(SUMMARY_REQUEST_PREFIX)):
        return None
    reasoning, summary_text = worked["text"].strip(), summary["text"].strip()
    if not reasoning or not summary_text:
        return None
    try:
        answer = boxed(summary_text)
    except ValueError:
        return None
    pid = problem["identifier"]
    return ChampTrace(
        id=f"{pid}/{key}",
        problem_id=pid,
        category=problem["category"],
        source="model",
        prompt=problem["_text"].strip(),
        reasoning=reasoning,
        answer=answer,
        reference_answer=problem["_answer"],
    )


def _check_choices(name: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    if isinstance(values, str):  # TypeError: tests/test_champ.py::test_errors relies on it
        raise TypeError(
            f"{name}={values!r}: must be a tuple of strings; fix: pass a tuple, e.g. ({values!r},)."
        )
    for i, value in enumerate(values):
        check_choice(f"{name}[{i}]", value, allowed)


def champ_traces(
    sources: Sequence[str] = SOURCES,
    models: Sequence[str] = CHAMP_MODELS,
    settings: Sequence[str] = ("0-Shot",),
    path: str | Path | None = None,
) -> list[ChampTrace]:
    """CHAMP traces in file order (problem by problem: the human solution, then each conversation).

    Args:
        sources: any of ``"solution"`` (270 human traces) and ``"model"`` (model conversations).
        models: which of :data:`CHAMP_MODELS` to take conversations from.
        settings: which of :data:`PROBLEM_ONLY_SETTINGS` to take conversations from.
        path: another copy of ``v0.json``; default: the installed package's.
    """
    _check_choices("sources", sources, SOURCES)
    _check_choices("models", models, CHAMP_MODELS)
    _check_choices("settings", settings, PROBLEM_ONLY_SETTINGS)
    traces: list[ChampTrace | None] = []
    for problem in load_champ_problems(path).values():
        if "solution" in sources:
            traces.append(_solution_trace(problem))
        if "model" not in sources:
            continue
        for key, conversation in problem["conversations"].items():
            model, setting = key.split("|", 1)
            if model in models and setting in settings:
                traces.append(_model_trace(problem, key, conversation["messages"]))
    return [t for t in traces if t is not None and not _has_reserved_marker(t)]


def _has_reserved_marker(trace: ChampTrace) -> bool:
    text = "\n".join((trace.prompt, trace.reasoning, trace.answer))
    return any(marker in text for marker in RESERVED_MARKERS)


def _think_block(trace: ChampTrace) -> str:
    return f"<think>\n{trace.reasoning}\n</think>\n\n{trace.answer}"


def to_format(trace: ChampTrace, fmt: str = "messages") -> dict[str, Any]:
    """One record of layout ``fmt`` (one of :data:`TRACE_FORMATS`) plus the metadata columns."""
    check_choice("fmt", fmt, TRACE_FORMATS)
    if fmt == "messages":
        body: dict[str, Any] = {
            "messages": [
                {"role": "user", "content": trace.prompt},
                {"role": "assistant", "content": _think_block(trace)},
            ]
        }
    elif fmt == "conversations":
        value = (
            f"<|begin_of_thought|>\n\n{trace.reasoning}\n\n<|end_of_thought|>\n\n"
            f"<|begin_of_solution|>\n\n{trace.answer}\n\n<|end_of_solution|>"
        )
        body = {
            "system": CONVERSATIONS_SYSTEM_PROMPT,
            "conversations": [{"from": "user", "value": trace.prompt}, {"from": "assistant", "value": value}],
        }
    elif fmt == "prompt_completion":
        body = {"prompt": trace.prompt, "completion": _think_block(trace)}
    else:  # reasoning_content
        body = {"prompt": trace.prompt, "reasoning_content": trace.reasoning, "content": trace.answer}
    return {
        **body,
        "id": trace.id,
        "category": trace.category,
        "source": trace.source,
        "reference_answer": trace.reference_answer,
    }


def champ_records(fmt: str = "messages", **trace_kwargs: Any) -> list[dict[str, Any]]:
    """:func:`champ_traces` (``trace_kwargs``) written in layout ``fmt`` as plain dicts."""
    check_choice("fmt", fmt, TRACE_FORMATS)
    return [to_format(trace, fmt) for trace in champ_traces(**trace_kwargs)]


def champ_dataset(fmt: str = "messages", **trace_kwargs: Any) -> Any:
    """:func:`champ_records` as a ``datasets.Dataset`` (``Dataset.from_list``)."""
    from datasets import Dataset

    return Dataset.from_list(champ_records(fmt, **trace_kwargs))


def held_out_split(
    held_out_every: int = 10,
    fmt: str = "messages",
    columns: Sequence[str] | None = None,
    **trace_kwargs: Any,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`champ_traces` split by problem: every ``held_out_every``-th problem (file order) is ``test``.

    A problem's traces all land on one side, so a held-out score never measures a problem the
    student trained on. Rows are :func:`to_format` records; ``columns`` keeps only those keys.
    """
    if not isinstance(held_out_every, int) or isinstance(held_out_every, bool) or held_out_every < 1:
        raise ValueError(f"held_out_every must be a positive int, got {held_out_every!r}")
    check_choice("fmt", fmt, TRACE_FORMATS)
    held_out = set(list(load_champ_problems())[::held_out_every])
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for trace in champ_traces(**trace_kwargs):
        row = to_format(trace, fmt)
        if columns is not None:
            row = {k: row[k] for k in columns}
        splits["test" if trace.problem_id in held_out else "train"].append(row)
    return splits


def section_length_stats(traces: Iterable[ChampTrace]) -> dict[str, dict[str, float]]:
    """Length statistics in characters per section (``prompt``, ``reasoning``, ``answer``).

    Returns ``{section: {"count", "min", "max", "mean", "median", "p90", "total"}}``; ``p90`` is
    the nearest-rank 90th percentile. Raises ``ValueError`` on an empty set.
    """
    traces = list(traces)
    if not traces:
        raise ValueError("traces: empty; fix: pass at least one trace (check the champ_traces filters).")
    stats: dict[str, dict[str, float]] = {}
    for section in ("prompt", "reasoning", "answer"):
        lengths = sorted(len(getattr(t, section)) for t in traces)
        n = len(lengths)
        stats[section] = {
            "count": n,
            "min": lengths[0],
            "max": lengths[-1],
            "mean": sum(lengths) / n,
            "median": statistics.median(lengths),
            "p90": lengths[max(0, -(-9 * n // 10) - 1)],
            "total": sum(lengths),
        }
    return stats
