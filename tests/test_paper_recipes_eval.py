"""The Distilling-the-Essence eval recipe: AIME 2025, boxed answers, math-verify equivalence.

The paper's code evaluates with lighteval 0.10.0 (``lighteval|aime25|0|0``: ``yentinglin/aime_2025``,
split ``train``, its ``aime_prompt_fn`` template, chat template, vLLM with ``max_new_tokens`` 32768,
``temperature`` 0.6, ``top_p`` 0.95, one sample: pass@1). ``AIME25_RECIPE`` below is that
setting as a :class:`MathEvalSpec` YAML, shipped as ``recipes/eval/aime25_boxed.yaml`` (run by
``hf-cot-distill eval-math --config aime25_boxed``: tests/test_eval_math_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_cot_distill.eval.math_benchmark import (
    MathEvalSpec,
    evaluate_math_benchmark,
    load_math_eval_yaml,
    problems_and_answers,
    score_completions,
)

pytest.importorskip("math_verify", reason="the `math` extra (math-verify) is not installed")

ROOT = Path(__file__).resolve().parents[1]
AIME25_RECIPE = ROOT / "recipes/eval/aime25_boxed.yaml"
LIGHTEVAL_TEMPLATE = (  # lighteval 0.10.0 default_prompts.aime_prompt_fn, after .format and .strip()
    "Solve the following math problem efficiently and clearly.  The last line of your response should be of "
    "the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct' (without "
    "quotes) where ANSWER is just the final number or expression that solves the problem. Think step by step "
    "before answering.\n\n"
)


@pytest.fixture()
def spec() -> MathEvalSpec:
    return load_math_eval_yaml(AIME25_RECIPE)


def test_recipe_is_the_paper_setting(spec):
    assert (spec.dataset_name, spec.split, spec.problem_field, spec.answer_field) == (
        "yentinglin/aime_2025", "train", "problem", "answer"
    )  # fmt: skip
    assert (spec.max_new_tokens, spec.temperature, spec.top_p, spec.num_samples) == (32768, 0.6, 0.95, 1)
    assert spec.prompt("Find $x$ with {braces}.") == LIGHTEVAL_TEMPLATE + "Find $x$ with {braces}."
    text = AIME25_RECIPE.read_text()
    assert "arXiv 2512.21002" in text and "lighteval|aime25|0|0" in text  # the source, stated


def test_boxed_answers_scored_by_math_verify(spec):
    rows = [
        {"problem": "p1", "answer": "33"},
        {"problem": "p2", "answer": "1/2"},
        {"problem": "p3", "answer": 70},
    ]
    problems, answers = problems_and_answers(spec, rows)
    assert problems == ["p1", "p2", "p3"] and answers == ["33", "1/2", "70"]  # AIME integers as text
    completions = [
        ["<think>\n...\n</think>\nTherefore, the final answer is: $\\boxed{33}$. I hope it is correct"],
        ["so $\\boxed{\\frac{1}{2}}$"],  # equivalent, not the same string
        ["the answer is 70"],  # no box: not extracted, not counted
    ]
    scores = score_completions(completions, answers)
    assert scores["math_equivalent"] == pytest.approx(2 / 3)
    assert scores["exact_match"] == pytest.approx(1 / 3) and scores["extracted"] == pytest.approx(2 / 3)
    assert (scores["count"], scores["num_samples"]) == (3, 1)
    two = score_completions([["\\boxed{33}", "\\boxed{34}"]], ["33"])  # avg@2
    assert two["math_equivalent"] == 0.5 and two["num_samples"] == 2


def test_generation_path_on_a_tiny_chat_model(qwen25_tokenizer):  # noqa: F811
    from tests.tiny_models import tiny_qwen2

    model = tiny_qwen2(seed=0, vocab_size=151936)
    model.config.pad_token_id, model.config.eos_token_id = 151643, 151645
    for temperature in (0.6, 0.0):
        spec = MathEvalSpec(
            dataset_name="local", prompt_template="Q: {problem}", max_new_tokens=3, temperature=temperature,
            num_samples=2 if temperature else 1, seed=1,
        )  # fmt: skip
        rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"}]
        res = evaluate_math_benchmark(model, qwen25_tokenizer, spec, rows)
        assert [len(c) for c in res["completions"]] == [spec.num_samples] * 2
        assert res["count"] == 2 and 0.0 <= res["math_equivalent"] <= 1.0
        again = evaluate_math_benchmark(model, qwen25_tokenizer, spec, rows)
        assert again["completions"] == res["completions"]  # seeded per problem


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt_template": "no slot"}, r"prompt_template=.*must hold '\{problem\}' exactly once"),
        ({"top_p": 0.0}, r"MathEvalSpec\.top_p=0\.0"),
        ({"temperature": 0.0, "num_samples": 4}, r"num_samples=4: greedy decoding"),
        ({"max_new_tokens": 0}, r"MathEvalSpec\.max_new_tokens=0"),
    ],
)
def test_bad_specs_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        MathEvalSpec(**{"dataset_name": "d", "prompt_template": "{problem}", **change})


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset_name: d\nprompt_template: '{problem}'\ntemprature: 0.6\n")
    with pytest.raises(ValueError, match=r"temprature.*temperature"):
        load_math_eval_yaml(bad)
    bad.write_text("dataset_name: d\n")
    with pytest.raises(ValueError, match=r"missing prompt_template"):
        load_math_eval_yaml(bad)
    with pytest.raises(ValueError, match=r"no column 'problem'"):
        problems_and_answers(MathEvalSpec(dataset_name="d", prompt_template="{problem}"), [{"question": "q"}])


from tests.qwen_tokenizers import qwen25_tokenizer  # noqa: E402, F401  (pytest fixture)
