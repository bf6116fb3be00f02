"""Evaluation: CoT-ICL accuracies with chance baselines, boxed answers, format compliance, coverage."""

from hf_cot_distill.eval.answers import (
    answers_equivalent,
    answers_match,
    extract_boxed,
    format_compliance,
    math_verify_available,
    normalize_answer,
)
from hf_cot_distill.eval.callback import CoTICLEvalCallback
from hf_cot_distill.eval.cot_icl import evaluate_cot_icl, generate_chains, parse_generation, reference_chain
from hf_cot_distill.eval.generation import evaluate_symbolic, generate_completions
from hf_cot_distill.eval.metrics import (
    BoxedAnswerAccuracy,
    CoTICLAccuracy,
    FormatCompliance,
    TokenCoverage,
    chance_baselines,
)

__all__ = [
    "BoxedAnswerAccuracy",
    "CoTICLAccuracy",
    "CoTICLEvalCallback",
    "FormatCompliance",
    "TokenCoverage",
    "answers_equivalent",
    "answers_match",
    "math_verify_available",
    "chance_baselines",
    "evaluate_cot_icl",
    "evaluate_symbolic",
    "extract_boxed",
    "format_compliance",
    "generate_chains",
    "generate_completions",
    "normalize_answer",
    "parse_generation",
    "reference_chain",
]
