"""Answer extraction and matching for reasoning traces and symbolic tasks.

``extract_boxed`` returns the content of the *last* ``\\boxed{...}`` (nested braces allowed;
``\\fbox`` too), which is where reasoning models and our symbolic tasks put the final answer.
``normalize_answer`` makes exact match forgiving about formatting only (spaces, ``$``,
``\\text{}``, ``\\left``/``\\right``, a trailing period), never about values.
``answers_equivalent`` is symbolic equivalence through the maintained ``math-verify`` package
(``1/2`` vs ``0.5``, ``x(x+2)`` vs ``x^2+2x``), installed with the ``math`` extra.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``; ``None`` if there is none
    or its braces never close. Also accepts the brace-less form ``\\boxed 5`` (one token).
    """
    if not text:
        return None
    best: tuple[int, str] | None = None
    for command in _BOX_COMMANDS:
        start = text.rfind(command)
        while start != -1:
            found = _parse_box(text, start + len(command))
            if found is not None:
                if best is None or start > best[0]:
                    best = (start, found)
                break
            start = text.rfind(command, 0, start)
    return None if best is None else best[1]


def _parse_box(text: str, i: int) -> str | None:
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        match = re.match(r"[^\s$]+", text[i:])
        return match.group(0) if match else None
    depth, begin, j = 0, i + 1, i
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            # A backslash escapes the next character: \{ and \} are literal braces, and \\ (a
            # LaTeX line break) is a pair, so the brace after a run of backslashes is escaped iff
            # the run is odd.
            j += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[begin:j]
        j += 1
    return None


_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize_answer(answer: str | None) -> str:
    """A formatting-insensitive form of an answer (for 'normalized match')."""
    if answer is None:
        return ""
    s = answer.strip()
    s = _TEXT_CMD.sub(r"\1", s)
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "$"):
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    return s.lower()


def answers_match(prediction: str | None, reference: str, normalized: bool = True) -> bool:
    """Exact (or normalized) match of an extracted answer with the reference."""
    if prediction is None:
        return False
    if normalized:
        return normalize_answer(prediction) == normalize_answer(reference)
    return prediction.strip() == reference.strip()


def math_verify_available() -> bool:
    """Is the optional ``math-verify`` package importable?"""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def answers_equivalent(prediction: str | None, reference: str, timeout_seconds: int | None = 5) -> bool:
    """Symbolic equivalence of an extracted answer and the reference (``math-verify``).

    Both strings are parsed as LaTeX / plain expressions (wrapped in ``$...$`` so a bare answer
    parses as math); a normalized string match counts too, so answers that are not math (names,
    words) are judged as :func:`answers_match` judges them. ``timeout_seconds``: per parse and
    per comparison (math-verify's timeouts use SIGALRM, so pass ``None`` off the main thread).
    Raises ``ImportError`` naming the extra when math-verify is not installed.
    """
    if prediction is None:
        return False
    if answers_match(prediction, reference):
        return True
    try:
        from math_verify import parse, verify
    except ImportError as err:
        raise ImportError(
            "answers_equivalent needs math-verify; fix: pip install 'hf-cot-distill[math]'."
        ) from err
    gold = parse(f"${reference}$", parsing_timeout=timeout_seconds)
    pred = parse(f"${prediction}$", parsing_timeout=timeout_seconds)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=timeout_seconds))


def format_compliance(
    text: str,
    *,
    think_open: str | None = "<think>",
    think_close: str | None = "</think>",
    answer_header: str | None = None,
    require_think: bool = False,
) -> dict[str, bool]:
    """Does a completion follow the think/answer format?

    Returns flags: ``has_boxed`` (a parseable box), ``think_balanced`` (no unclosed or stray
    think marker; trivially true without markers), ``has_think``, ``answer_after_think``
    (the box comes after the think block closes), ``has_answer_header`` (when one is given),
    and ``compliant`` (all the required ones).
    """
    has_boxed = extract_boxed(text) is not None
    flags = {"has_boxed": has_boxed}
    if think_open and think_close:
        n_open, n_close = text.count(think_open), text.count(think_close)
        has_think = n_open >= 1 or n_close >= 1
        balanced = n_open <= 1 and n_close == (1 if has_think else 0) and n_open <= n_close
        close_at = text.rfind(think_close)
        box_at = max(text.rfind(c) for c in _BOX_COMMANDS)
        flags["has_think"] = has_think
        flags["think_balanced"] = balanced
        flags["answer_after_think"] = (not has_think) or (close_at != -1 and box_at > close_at)
    else:
        flags["has_think"] = False
        flags["think_balanced"] = True
        flags["answer_after_think"] = True
    if answer_header:
        flags["has_answer_header"] = answer_header in text
    required = [has_boxed, flags["think_balanced"], flags["answer_after_think"]]
    if require_think:
        required.append(flags["has_think"])
    if answer_header:
        required.append(flags["has_answer_header"])
    flags["compliant"] = all(required)
    return flags
