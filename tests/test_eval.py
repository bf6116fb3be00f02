"""Evaluation: answer extraction, metrics on hand-made predictions, baselines, CoT-ICL generation."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_cot_distill.core.sections import section_counts
from hf_cot_distill.data import CoTICLConfig, generate_batch
from hf_cot_distill.eval import (
    BoxedAnswerAccuracy,
    CoTICLAccuracy,
    FormatCompliance,
    TokenCoverage,
    answers_equivalent,
    chance_baselines,
    evaluate_cot_icl,
    extract_boxed,
    format_compliance,
    math_verify_available,
    normalize_answer,
    parse_generation,
    reference_chain,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{x^{2}+\{a\}}", r"x^{2}+\{a\}"),
        (r"\boxed {7}", "7"),
        (r"\boxed 5 apples", "5"),
        (r"\fbox{ok}", "ok"),
        (r"\boxed{unclosed", None),
        ("no box here", None),
        ("", None),
        (r"\boxed{a} and later \boxed{b{c}d}", "b{c}d"),
        # a run of backslashes before a brace escapes it only when odd: \\ is a LaTeX line break
        (r"\boxed{a\\}", r"a\\"),
        (r"\boxed{a\\\}b}", r"a\\\}b"),
        (r"\boxed{x\\{y}}", r"x\\{y}"),
        (r"\boxed{\begin{matrix}1\\2\end{matrix}}", r"\begin{matrix}1\\2\end{matrix}"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_normalize_answer():
    assert normalize_answer(r" $\frac{1}{2}$. ") == r"\frac{1}{2}"
    assert normalize_answer(r"\dfrac{1}{2}") == normalize_answer(r"\frac{1}{2}")
    assert normalize_answer(r"\text{Paris}") == "paris"
    assert normalize_answer(r"\left( 1, 2 \right)") == "(1,2)"
    assert normalize_answer("12") != normalize_answer("21")


def test_boxed_accuracy_exact_values():
    preds = [r"\boxed{42}", r"\boxed{ 42 }", r"\boxed{\text{Paris}}", "no answer"]
    refs = ["42", "42", "paris", "7"]
    out = BoxedAnswerAccuracy(math_verify=False).compute(predictions=preds, references=refs)
    assert out == {"exact_match": 0.5, "normalized_match": 0.75, "extracted": 0.75, "count": 4}
    combined = evaluate.combine([BoxedAnswerAccuracy()]).compute(predictions=preds, references=refs)
    assert combined["normalized_match"] == 0.75


def test_math_verify_equivalence():
    # math-verify is a dev dependency: these run in `make test`.
    assert math_verify_available()
    assert answers_equivalent(r"\frac{1}{2}", "0.5")
    assert answers_equivalent("x(x+2)", "x^2+2x")
    assert answers_equivalent(r"\text{Paris}", "paris")  # not math: the normalized match decides
    assert not answers_equivalent("0.51", "0.5")
    assert not answers_equivalent(None, "1")
    preds = [r"\boxed{\frac{1}{2}}", r"\boxed{0.5}", r"\boxed{2}", "none"]
    out = BoxedAnswerAccuracy().compute(predictions=preds, references=["0.5"] * 4)
    assert out["normalized_match"] == 0.25 and out["math_equivalent"] == 0.5
    assert "math_equivalent" not in BoxedAnswerAccuracy(math_verify=False).compute(
        predictions=preds, references=["0.5"] * 4
    )
    with pytest.raises(TypeError, match="math_verify"):
        BoxedAnswerAccuracy(math_verify="yes")


def test_format_compliance():
    good = "<think>step</think>\n\\boxed{3}"
    assert format_compliance(good)["compliant"]
    assert not format_compliance("<think>step \\boxed{3}")["compliant"]  # unclosed think
    assert not format_compliance("\\boxed{3} <think>x</think>")["compliant"]  # answer before think
    assert format_compliance("\\boxed{3}")["compliant"]
    assert not format_compliance("\\boxed{3}", require_think=True)["compliant"]
    out = FormatCompliance(answer_header="### Answer", think_open=None, think_close=None).compute(
        predictions=["### Answer\n\\boxed{a}", "\\boxed{a}"], references=["", ""]
    )
    assert out["format_compliance"] == 0.5 and out["format_has_boxed"] == 1.0


def test_cot_icl_accuracy_exact_values():
    preds = [[5, 6, 7], [5, 0, 7], [-1, -1, 7], [5, 6], []]
    refs = [[5, 6, 7]] * 5
    out = CoTICLAccuracy().compute(predictions=preds, references=refs)
    assert out["answer_accuracy"] == pytest.approx(3 / 5)  # [5, 6] ends in 6, [] has nothing
    assert out["chain_accuracy"] == pytest.approx(1 / 5)
    assert out["position_accuracy"] == pytest.approx([3 / 5, 2 / 5, 3 / 5])


def test_chance_baselines_on_crafted_data():
    answers = [1, 1, 2, 3]
    contexts = [[1, 1, 2], [2, 2, 1], [2, 3, 3], [4, 3, 4]]
    out = chance_baselines(answers, contexts, n_usable=10)
    assert out == {"uniform": 0.1, "marginal_majority": 0.5, "in_context_majority": 0.25}
    # ties go to the earliest example: [2, 3] -> 2
    assert chance_baselines([2], [[2, 3]], 4)["in_context_majority"] == 1.0


def test_token_coverage():
    out = TokenCoverage().compute(
        predictions=[[10, 5, 0], [10, 20, 2]], references=[[10, 20, 2], [10, 20, 2]]
    )
    assert out["cot_coverage"] == pytest.approx(25 / 40) and out["answer_coverage"] == pytest.approx(0.5)
    assert out["samples_with_answer"] == 0.5 and out["prompt_coverage"] == 1.0
    with pytest.raises(ValueError, match="between 0"):
        TokenCoverage().compute(predictions=[[11, 0, 0]], references=[[10, 0, 0]])


def test_token_coverage_reads_section_counts_rows_and_refuses_other_widths():
    # section_counts / TruncationAccounting give [pad, prompt, cot, answer]; the PAD count is dropped
    kept = [section_counts([1, 1, 2, 2]).tolist()] * 2 + [section_counts([0, 1, 2, 3]).tolist()]
    before = [section_counts([1, 1, 2, 2, 3]).tolist()] * 2 + [section_counts([0, 1, 2, 3]).tolist()]
    out = TokenCoverage().compute(predictions=kept, references=before)
    assert out["answer_coverage"] == pytest.approx(1 / 3) and out["samples_with_answer"] == pytest.approx(
        1 / 3
    )
    assert out["prompt_coverage"] == 1.0 and out["cot_coverage"] == 1.0
    three_wide = TokenCoverage().compute(
        predictions=[row[1:] for row in kept], references=[row[1:] for row in before]
    )
    assert three_wide == out
    with pytest.raises(ValueError, match=r"predictions: got counts of shape \(2, 2\); expected .* 3 counts"):
        TokenCoverage().compute(predictions=[[1, 2], [3, 4]], references=[[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"references: got counts of shape \(1, 5\)"):
        TokenCoverage().compute(predictions=[[0, 0, 0]], references=[[1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="predictions: rows of different lengths"):
        TokenCoverage().compute(predictions=[[0, 0, 0], [0, 0, 0, 0]], references=[[0, 0, 0]] * 2)


@pytest.mark.parametrize("n_usable", [0, -3, 2.5, True])
def test_chance_baselines_refuses_a_bad_n_usable(n_usable):
    with pytest.raises(
        ValueError, match=f"n_usable={n_usable!r}: must be an int >= 1; fix: pass the number of token ids"
    ):
        chance_baselines([1], [[1]], n_usable=n_usable)
    assert chance_baselines([1], [[1]], n_usable=np.int64(4))["uniform"] == 0.25


def test_parse_generation_special_and_plain():
    cot = CoTICLConfig(prompt_strategy="cot_special_token", vocab_size=20)
    st = cot.special_tokens
    assert parse_generation(
        cot, [st.think_start, 3, 4, st.think_end, st.answer_start, 5, st.answer_end], 3
    ) == [3, 4, 5]
    assert parse_generation(cot, [st.answer_start, 5, st.answer_end, st.eos], 3) == [-1, -1, 5]  # no think
    assert parse_generation(cot, [st.think_start, 3], 3) == [-1, -1, -1]  # cut off
    plain = CoTICLConfig(prompt_strategy="cot", vocab_size=20)
    assert parse_generation(plain, [1, 2, 3, 4], 3) == [1, 2, 3]
    std = CoTICLConfig(prompt_strategy="standard_special_token", vocab_size=20)
    assert parse_generation(std, [std.special_tokens.answer_start, 9], 3) == [9]


class OracleModel(torch.nn.Module):
    """Generates exactly the target of the eval view it is given (found by its context)."""

    def __init__(self, targets: dict[tuple, list[int]], pad: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.targets, self.pad, self.seen = targets, pad, []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            ctx = tuple(i for i, m in zip(ids, mask) if m)
            self.seen.append(ctx)
            out = (self.targets.get(ctx, []) + [self.pad] * max_new_tokens)[:max_new_tokens]
            rows.append(ids + out)
        return torch.tensor(rows)


@pytest.mark.parametrize("strategy", ["cot", "standard", "cot_special_token", "hybrid_special_token"])
def test_evaluate_cot_icl_with_an_oracle_is_perfect(strategy):
    config = CoTICLConfig(
        prompt_strategy=strategy, n_examples_choices=(5,), vocab_size=64, cot_example_prob=0.5
    )
    rows = generate_batch(config, range(12), split="eval").rows()
    pad = config.special_tokens.pad if config.special_tokens else 0
    model = OracleModel({tuple(r["eval_input_ids"]): r["eval_target_ids"] for r in rows}, pad)
    out = evaluate_cot_icl(model, config, rows, batch_size=5)
    assert out["count"] == 12
    assert out["answer_accuracy"] == 1.0
    if strategy != "hybrid_special_token":  # hybrid targets may skip the think block
        assert out["chain_accuracy"] == 1.0
    assert out["baseline_uniform"] == pytest.approx(1 / config.n_usable)
    assert 0.0 <= out["baseline_in_context_majority"] <= 1.0


def test_evaluate_cot_icl_drop_k_changes_the_context():
    config = CoTICLConfig(prompt_strategy="cot_special_token", n_examples_choices=(6,), vocab_size=64)
    rows = generate_batch(config, range(4), split="eval").rows()
    model = OracleModel({}, config.special_tokens.pad)
    out = evaluate_cot_icl(model, config, rows, drop_k=3)
    assert out["answer_accuracy"] == 0.0 and out["drop_k"] == 3
    think = config.special_tokens.think_start
    assert all(ctx.count(think) == 5 - 3 for ctx in model.seen)


def test_evaluate_cot_icl_runs_real_generation_on_a_tiny_llama():
    config = CoTICLConfig(prompt_strategy="cot_special_token", n_examples_choices=(4,), vocab_size=64)
    rows = generate_batch(config, range(6), split="eval").rows()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    )
    model.train()
    out = evaluate_cot_icl(model, config, rows, batch_size=4)
    assert model.training  # restored
    assert len(out["position_accuracy"]) == 2 and 0.0 <= out["answer_accuracy"] <= 1.0
    assert reference_chain(config, rows[0]) == rows[0]["example_chains"][-1]


class TextOracle(torch.nn.Module):
    """Answers every prompt with a fixed completion per prompt (by the prompt's token ids)."""

    def __init__(self, tokenizer, answers: dict[tuple, str]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.answers = tokenizer, answers

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, **kwargs):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = tuple(i for i, m in zip(ids, mask) if m)
            new = self.tok(self.answers[prompt], add_special_tokens=False)["input_ids"][:max_new_tokens]
            rows.append(ids + new + [pad_token_id] * (max_new_tokens - len(new)))
        return torch.tensor(rows)


def test_evaluate_symbolic_end_to_end_with_a_text_oracle():
    from hf_cot_distill.data.synthetic.symbolic import SymbolicConfig, generate_symbolic_task
    from hf_cot_distill.eval import evaluate_symbolic
    from tests.tiny_tokenizer import tiny_qwen2_tokenizer

    tok = tiny_qwen2_tokenizer()
    rows = [generate_symbolic_task(SymbolicConfig(n_examples=2), i, "eval") for i in range(4)]
    answers = {}
    for i, r in enumerate(rows):
        prompt = tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
        ids = tuple(tok(prompt, add_special_tokens=False)["input_ids"])
        # two right (one with the header), one wrong, one unformatted
        answers[ids] = [
            f"### Answer\n\\boxed{{{r['answer']}}}",
            f"\\boxed{{{r['answer']}}}",
            "### Answer\n\\boxed{zz}",
            "dunno",
        ][i]
    out = evaluate_symbolic(TextOracle(tok, answers), tok, rows, max_new_tokens=64, batch_size=3)
    assert out["exact_match"] == 0.5 and out["extracted"] == 0.75
    assert out["format_compliance"] == 0.5
    assert tok.padding_side == "right"  # restored


def test_decode_completions_cuts_at_the_first_stop_and_keeps_special_tokens():
    from hf_cot_distill.eval.generation import decode_completions, stop_token_ids
    from tests.qwen_tokenizers import load_qwen25_tokenizer

    tok = load_qwen25_tokenizer()
    im_start, im_end, pad = 151644, 151645, 151643
    assert stop_token_ids(tok) == {im_end, pad}
    word = tok.encode("final answer", add_special_tokens=False)
    rows = torch.tensor(
        [
            [im_start, *word, im_end, *word, pad],  # text after the end of the turn is not decoded
            [*word, pad, pad, pad, im_end, *word[:1]],  # ended by the pad token (no eos generated)
            [im_start, *word, im_start, *word, *word[:1]][: len(word) * 2 + 3],  # no stop: all of it
        ]
    )
    texts = decode_completions(tok, rows)
    assert texts[0] == "<|im_start|>final answer"
    assert texts[1] == "final answer"
    assert texts[2] == tok.decode(rows[2].tolist()) and texts[2].count("<|im_start|>") == 2


def test_paper_rendered_completions_are_format_compliant():
    """The paper rendering's answer header starts with the special token <|im_start|>: the
    completions keep it (decoded with special tokens, cut at <|im_end|>), so format compliance
    counts it; decoded without special tokens, the header would be gone and compliance 0."""
    from hf_cot_distill.data.synthetic.symbolic import (
        PAPER_ANSWER_HEADER,
        SymbolicConfig,
        generate_symbolic_task,
    )
    from hf_cot_distill.eval import evaluate_symbolic
    from tests.qwen_tokenizers import load_qwen25_tokenizer

    tok = load_qwen25_tokenizer()
    config = SymbolicConfig(render="paper", n_examples=2, word_length=4)
    rows = [generate_symbolic_task(config, i, "eval") for i in range(4)]
    answers, kinds = {}, []
    for i, r in enumerate(rows):
        prompt = tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
        ids = tuple(tok(prompt, add_special_tokens=False)["input_ids"])
        # the reference turn itself (CoT + header + box), a direct answer, a wrong word, no header;
        # each ends its turn with <|im_end|> and runs on after it (never decoded)
        reference = r["messages"][-1]["content"]
        answers[ids] = [
            reference,
            f"{PAPER_ANSWER_HEADER}\n\\boxed{{{r['answer']}}}",
            f"{PAPER_ANSWER_HEADER}\n\\boxed{{zz}}",
            f"final answer \\boxed{{{r['answer']}}}",
        ][i] + "<|im_end|>\n<|im_start|>user\n\\boxed{runaway}"
        kinds.append(reference.startswith("<|im_start|>think"))
    assert kinds[0]  # the first is a CoT answer: two in-turn <|im_start|> tokens
    out = evaluate_symbolic(
        TextOracle(tok, answers),
        tok,
        rows,
        answer_header=PAPER_ANSWER_HEADER,
        max_new_tokens=96,
        batch_size=3,
    )
    assert out["completions"][0] == rows[0]["messages"][-1]["content"]
    assert out["format_compliance"] == 0.75 and out["format_has_answer_header"] == 0.75
    assert out["exact_match"] == 0.75 and out["extracted"] == 1.0  # `runaway` after <|im_end|> is not read
    stripped = tok.decode(
        tok.encode(answers[next(iter(answers))], add_special_tokens=False), skip_special_tokens=True
    )
    assert PAPER_ANSWER_HEADER not in stripped  # what the old decoding gave: no header, compliance 0
