"""Metrics as `evaluate.Metric` subclasses, instantiated directly (no Hub download).

They compose with ``evaluate.combine`` and plug into a ``compute_metrics`` function::

    from hf_cot_distill.eval import BoxedAnswerAccuracy, CoTICLAccuracy
    BoxedAnswerAccuracy().compute(predictions=["... \\\\boxed{42}"], references=["42"])
"""

from __future__ import annotations

from collections import Counter

import datasets
import evaluate
import numpy as np

from hf_cot_distill.core.sections import NUM_SECTIONS
from hf_cot_distill.core.validation import check_int
from hf_cot_distill.eval.answers import (
    answers_equivalent,
    answers_match,
    extract_boxed,
    format_compliance,
    math_verify_available,
)

_CITATION_COT_ICL = (
    "@inproceedings{kothapalli2025coticllab, title={CoT-ICL Lab: A Synthetic Framework for Studying "
    "Chain-of-Thought Learning from In-Context Demonstrations}, author={Kothapalli, Vignesh and "
    "Firooz, Hamed and Sanjabi, Maziar}, booktitle={ACL}, year={2025}}"
)


def _check_lengths(predictions: list, references: list) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} items but references has {len(references)}; "
            "pass one prediction per reference."
        )


class BoxedAnswerAccuracy(evaluate.Metric):
    """Accuracy of the last ``\\boxed{}`` answer of each completion.

    Returns ``exact_match`` (string equality after stripping), ``normalized_match``
    (see ``normalize_answer``), ``extracted`` (share of completions with a parseable box), and
    ``math_equivalent`` (symbolic equivalence, see ``answers_equivalent``) when ``math_verify``
    is on. ``math_verify``: ``None`` (default) = on when the ``math-verify`` package is installed;
    ``True`` = required (ImportError naming the extra if missing); ``False`` = off.
    """

    def __init__(self, math_verify: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        if math_verify is not None and not isinstance(math_verify, (bool, np.bool_)):
            # TypeError, not ValueError: tests/test_eval.py::test_math_verify_equivalence relies on it
            raise TypeError(
                f"math_verify={math_verify!r}: must be true, false or None; fix: None (auto) or a bool."
            )
        if math_verify and not math_verify_available():
            raise ImportError("math_verify=True needs math-verify; fix: pip install 'hf-cot-distill[math]'.")
        self.math_verify = math_verify_available() if math_verify is None else bool(math_verify)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Exact and normalized match of the last \\boxed{} answer.",
            citation="",
            inputs_description="predictions: completions (str); references: gold answers (str).",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        _check_lengths(predictions, references)
        if not predictions:
            empty = {"exact_match": 0.0, "normalized_match": 0.0, "extracted": 0.0, "count": 0}
            return {**empty, "math_equivalent": 0.0} if self.math_verify else empty
        boxed = [extract_boxed(p) for p in predictions]
        out = {
            "exact_match": float(
                np.mean([answers_match(b, r, normalized=False) for b, r in zip(boxed, references)])
            ),
            "normalized_match": float(np.mean([answers_match(b, r) for b, r in zip(boxed, references)])),
            "extracted": float(np.mean([b is not None for b in boxed])),
            "count": len(predictions),
        }
        if self.math_verify:
            out["math_equivalent"] = float(
                np.mean([answers_equivalent(b, r) for b, r in zip(boxed, references)])
            )
        return out


class FormatCompliance(evaluate.Metric):
    """Share of completions that follow the think/answer format (see ``format_compliance``).

    ``references`` are ignored (pass the completions twice or empty strings)."""

    def __init__(
        self,
        think_open: str | None = "<think>",
        think_close: str | None = "</think>",
        answer_header: str | None = None,
        require_think: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.format_kwargs = dict(
            think_open=think_open,
            think_close=think_close,
            answer_header=answer_header,
            require_think=require_think,
        )

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Think/answer format compliance rate.",
            citation="",
            inputs_description="predictions: completions (str); references: unused (str).",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        flags = [format_compliance(p, **self.format_kwargs) for p in predictions]
        if not flags:
            return {"format_compliance": 0.0, "count": 0}
        out = {f"format_{k}": float(np.mean([f[k] for f in flags])) for k in flags[0]}
        out["format_compliance"] = out.pop("format_compliant")
        out["count"] = len(flags)
        return out


class CoTICLAccuracy(evaluate.Metric):
    """CoT-ICL Lab accuracy: the answer (last chain token) and every chain position.

    ``predictions``/``references`` are chains of token ids, answer last, aligned position by
    position (a parser writes -1 for a position the model did not produce, e.g. a skipped
    think block). A shorter prediction counts its missing positions as wrong; the answer is
    right iff the last predicted token equals the reference answer. Returns
    ``answer_accuracy``, ``chain_accuracy`` (every position right) and ``position_accuracy``
    (a list, one value per chain position).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Answer and per-chain-position accuracy on CoT-ICL Lab tasks.",
            citation=_CITATION_COT_ICL,
            inputs_description="predictions/references: list[int] chains (answer last).",
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.Value("int64")),
                    "references": datasets.List(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions: list[list[int]], references: list[list[int]]) -> dict:
        _check_lengths(predictions, references)
        if not references:
            return {"answer_accuracy": 0.0, "chain_accuracy": 0.0, "position_accuracy": [], "count": 0}
        width = max(len(r) for r in references)
        hits = np.zeros(width)
        totals = np.zeros(width)
        answer, chain = [], []
        for pred, ref in zip(predictions, references):
            ok = [j < len(pred) and pred[j] == tok for j, tok in enumerate(ref)]
            hits[: len(ref)] += ok
            totals[: len(ref)] += 1
            answer.append(bool(pred) and pred[-1] == ref[-1])
            chain.append(all(ok) and len(pred) == len(ref))
        return {
            "answer_accuracy": float(np.mean(answer)),
            "chain_accuracy": float(np.mean(chain)),
            "position_accuracy": (hits / np.maximum(totals, 1)).tolist(),
            "count": len(references),
        }


def chance_baselines(answers: list[int], context_answers: list[list[int]], n_usable: int) -> dict[str, float]:
    """The baselines reported beside every CoT-ICL accuracy.

    Args:
        answers: the gold answer of each eval task.
        context_answers: per task, the answers of its in-context examples.
        n_usable: number of token ids an answer can take.
    Returns:
        ``uniform`` (1 / n_usable), ``marginal_majority`` (always predict the most frequent
        answer of the eval set), ``in_context_majority`` (predict each task's most frequent
        in-context answer; ties broken by the earliest example).
    """
    check_int("n_usable", n_usable, minimum=1, fix="pass the number of token ids an answer can take")
    if len(answers) != len(context_answers):
        raise ValueError("answers and context_answers must have one entry per task.")
    if not answers:
        return {"uniform": 1.0 / n_usable, "marginal_majority": 0.0, "in_context_majority": 0.0}
    top, top_count = Counter(answers).most_common(1)[0]
    icm = []
    for gold, ctx in zip(answers, context_answers):
        if not ctx:
            icm.append(False)
            continue
        counts = Counter(ctx)
        best = max(counts.values())
        guess = next(a for a in ctx if counts[a] == best)
        icm.append(guess == gold)
    return {
        "uniform": 1.0 / n_usable,
        "marginal_majority": top_count / len(answers),
        "in_context_majority": float(np.mean(icm)),
    }


def _section_count_rows(field: str, rows: list[list[int]]) -> np.ndarray:
    """``(n, 3)`` ``[prompt, cot, answer]`` counts; a 4-wide row is ``[pad, prompt, cot, answer]``
    (what ``section_counts`` and ``TruncationAccounting.tokens_*`` give) and loses its PAD count."""
    try:
        counts = np.asarray(rows, dtype=np.float64)
    except ValueError as err:  # rows of different lengths
        raise ValueError(
            f"{field}: rows of different lengths; give every sample [prompt, cot, answer] counts "
            f"(or [pad, prompt, cot, answer] as section_counts returns)."
        ) from err
    if counts.size == 0:
        return counts.reshape(0, 3)
    if counts.ndim != 2 or counts.shape[1] not in (3, NUM_SECTIONS):
        raise ValueError(
            f"{field}: got counts of shape {counts.shape}; expected one row per sample of 3 counts "
            f"[prompt, cot, answer], or {NUM_SECTIONS} with PAD first (section_counts(ids).tolist(), "
            "TruncationAccounting.tokens_kept)."
        )
    return counts[:, 1:] if counts.shape[1] == NUM_SECTIONS else counts


class TokenCoverage(evaluate.Metric):
    """Share of each section's tokens seen in training under a truncation policy.

    ``predictions``: tokens kept per sample, ``references``: tokens before truncation, both as
    ``[prompt, cot, answer]`` counts per sample, or as ``[pad, prompt, cot, answer]`` (the
    layout of ``section_counts``; the PAD count is dropped). Other widths raise. Returns ``prompt_coverage``, ``cot_coverage``,
    ``answer_coverage`` (token-weighted) and ``samples_with_answer`` (share of samples that
    kept at least one answer token).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Token coverage of each section under truncation.",
            citation="",
            inputs_description=(
                "predictions: kept [P, C, A] (or [PAD, P, C, A]) counts; references: the counts before truncation."
            ),
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.Value("int64")),
                    "references": datasets.List(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions: list[list[int]], references: list[list[int]]) -> dict[str, float]:
        _check_lengths(predictions, references)
        kept = _section_count_rows("predictions", predictions)
        total = _section_count_rows("references", references)
        if (kept > total).any() or (kept < 0).any():
            raise ValueError("kept token counts must be between 0 and the original counts.")
        sums_k, sums_t = kept.sum(0), total.sum(0)
        cov = np.divide(sums_k, sums_t, out=np.ones(3), where=sums_t > 0)
        has_answer = total[:, 2] > 0
        return {
            "prompt_coverage": float(cov[0]),
            "cot_coverage": float(cov[1]),
            "answer_coverage": float(cov[2]),
            "samples_with_answer": float((kept[has_answer, 2] > 0).mean()) if has_answer.any() else 1.0,
        }
