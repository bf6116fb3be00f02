"""Math benchmarks with boxed answers (AIME-style), scored by math-verify equivalence.

An eval spec (:class:`MathEvalSpec`, from a flat YAML with :func:`load_math_eval_yaml`) names the
problems (a dataset with a problem and an answer column), the prompt each problem is asked with (a
template holding ``{problem}``), and the sampling settings. :func:`evaluate_math_benchmark` asks a
chat model every problem once per sample (the chat template with the generation prompt), takes the
last ``\\boxed{}`` of each completion and scores it against the reference with
:class:`~hf_cot_distill.eval.metrics.BoxedAnswerAccuracy` (``math_equivalent`` through
math-verify, plus exact / normalized match and the share of completions with a box); with
``num_samples`` > 1 the scores are the means over samples (avg@n; pass@1 when n = 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_cot_distill.core.validation import check_float, check_int, check_known_keys
from hf_cot_distill.eval.answers import math_verify_available
from hf_cot_distill.eval.generation import decode_completions
from hf_cot_distill.eval.metrics import BoxedAnswerAccuracy


@dataclass(frozen=True)
class MathEvalSpec:
    """What to ask and how to sample; defaults: none (a spec names its benchmark)."""

    dataset_name: str
    prompt_template: str
    dataset_config: str | None = None
    split: str = "train"
    problem_field: str = "problem"
    answer_field: str = "answer"
    max_new_tokens: int = 32768
    temperature: float = 0.6
    top_p: float = 0.95
    num_samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dataset_name", "split", "problem_field", "answer_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"MathEvalSpec.{name}={value!r}: must be a non-empty string; fix: set it.")
        if not isinstance(self.prompt_template, str) or self.prompt_template.count("{problem}") != 1:
            raise ValueError(
                f"MathEvalSpec.prompt_template={self.prompt_template!r:.80}: must hold '{{problem}}' exactly "
                "once (where the problem goes); fix: e.g. 'Solve: {problem}'."
            )
        check_int("MathEvalSpec.max_new_tokens", self.max_new_tokens, minimum=1)
        check_int("MathEvalSpec.num_samples", self.num_samples, minimum=1)
        check_int("MathEvalSpec.seed", self.seed, minimum=0)
        fix = "use a number >= 0 (0 = greedy decoding)"
        check_float("MathEvalSpec.temperature", self.temperature, minimum=0, fix=fix)
        fix = "use a number in (0, 1] (1 = no nucleus cut)"
        check_float("MathEvalSpec.top_p", self.top_p, minimum=0, maximum=1, min_open=True, fix=fix)
        if self.temperature == 0 and self.num_samples > 1:
            raise ValueError(
                f"MathEvalSpec.num_samples={self.num_samples}: greedy decoding (temperature 0) gives one "
                "completion; fix: num_samples: 1, or a temperature > 0."
            )

    def prompt(self, problem: str) -> str:
        """The user turn for ``problem`` (literal replacement: the template may hold other braces)."""
        return self.prompt_template.replace("{problem}", problem)


def load_math_eval_yaml(path: str | Path) -> MathEvalSpec:
    """A :class:`MathEvalSpec` from a flat YAML of its fields; unknown keys name the closest field."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}); fix the file.") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of MathEvalSpec fields, got {type(raw).__name__}.")
    check_known_keys(str(path), raw, (f.name for f in dataclasses.fields(MathEvalSpec)))
    missing = [
        f.name
        for f in dataclasses.fields(MathEvalSpec)
        if f.default is dataclasses.MISSING and f.name not in raw
    ]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}; fix: add them (see MathEvalSpec).")
    return MathEvalSpec(**raw)


def problems_and_answers(
    spec: MathEvalSpec, rows: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[str]]:
    """The problem texts and reference answers of ``rows`` (answers as strings: AIME's are ints)."""
    problems, answers = [], []
    for i, row in enumerate(rows):
        for name in (spec.problem_field, spec.answer_field):
            if name not in row:
                raise ValueError(
                    f"rows[{i}]: no column {name!r} (columns: {sorted(row)}); fix: set problem_field / "
                    "answer_field to the dataset's columns."
                )
        problems.append(str(row[spec.problem_field]))
        answers.append(str(row[spec.answer_field]).strip())
    return problems, answers


@torch.no_grad()
def sample_completions(
    model: torch.nn.Module, tokenizer: Any, spec: MathEvalSpec, problems: Sequence[str]
) -> list[list[str]]:
    """``num_samples`` completions per problem (one at a time: long reasoning needs no padding),
    each cut at its end of sequence and decoded as :func:`~hf_cot_distill.eval.generation.decode_completions`
    decodes (special tokens kept). Sampling is seeded per (spec.seed, problem index)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[str]] = []
    try:
        for i, problem in enumerate(problems):
            messages = [{"role": "user", "content": spec.prompt(problem)}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
            sampling = (
                {"do_sample": True, "temperature": spec.temperature, "top_p": spec.top_p, "top_k": 0}
                if spec.temperature > 0
                else {"do_sample": False}
            )
            torch.manual_seed(spec.seed * 1_000_003 + i)
            gen = model.generate(
                **enc,
                max_new_tokens=spec.max_new_tokens,
                num_return_sequences=spec.num_samples,
                pad_token_id=tokenizer.pad_token_id
                if tokenizer.pad_token_id is not None
                else tokenizer.eos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.append(decode_completions(tokenizer, new))
    finally:
        model.train(was_training)
    return out


def score_completions(completions: Sequence[Sequence[str]], answers: Sequence[str]) -> dict[str, float]:
    """Mean over samples of :class:`BoxedAnswerAccuracy` (math-verify required) per sample index."""
    if len(completions) != len(answers):
        raise ValueError(
            f"completions: {len(completions)} problems but {len(answers)} answers; pass one per problem."
        )
    if not math_verify_available():
        raise ImportError(
            "math benchmarks are scored with math-verify; fix: pip install 'hf-cot-distill[math]'."
        )
    n = {len(c) for c in completions}
    if len(n) != 1:
        raise ValueError(
            f"completions: problems have {sorted(n)} samples each; pass the same number for all."
        )
    metric = BoxedAnswerAccuracy(math_verify=True)
    per_sample = [
        metric.compute(predictions=[c[k] for c in completions], references=list(answers))
        for k in range(n.pop())
    ]
    keys = ("math_equivalent", "exact_match", "normalized_match", "extracted")
    result = {k: float(sum(s[k] for s in per_sample) / len(per_sample)) for k in keys}
    result.update(count=len(answers), num_samples=len(per_sample))
    return result


def evaluate_math_benchmark(
    model: torch.nn.Module, tokenizer: Any, spec: MathEvalSpec, rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Ask, sample, extract and score; returns the scores and the completions (per problem)."""
    problems, answers = problems_and_answers(spec, rows)
    completions = sample_completions(model, tokenizer, spec, problems)
    return {**score_completions(completions, answers), "completions": completions}
