"""The paper rendering of the CoT-Recipe symbolic tasks (``render: paper``): the texts character for
character as the issue quotes the paper's code, the word rule, and the sections on the real
Qwen2.5 and Qwen3 tokenizers, where the ``<|im_start|>`` inside an assistant turn is one special
token (151644): the one opening ``think`` is the first COT token, the one opening ``final answer``
the first ANSWER token, the assistant header's stays PROMPT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from hf_cot_distill.core.sections import Section
from hf_cot_distill.data.builder import load_generator_yaml
from hf_cot_distill.data.synthetic.symbolic import (
    PAPER_ANSWER_HEADER,
    PAPER_THINK_HEADER,
    SymbolicConfig,
    chain_word,
    generate_symbolic_task,
)
from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encode_dataset
from hf_cot_distill.data.traces.formats import MARKER_PRESETS, TraceMarkers
from hf_cot_distill.eval.answers import extract_boxed
from hf_cot_distill.eval.metrics import BoxedAnswerAccuracy
from tests.qwen_tokenizers import (
    qwen3_tokenizer,  # noqa: F401  (pytest fixture)
    qwen25_tokenizer,  # noqa: F401  (pytest fixture)
)

ROOT = Path(__file__).resolve().parents[1]
IM_START, IM_END = 151644, 151645

# The issue's literal texts (a Python repr for the system prompt: \n is a newline, \\ one backslash).
ISSUE_SYSTEM_PROMPT = 'You are a helpful problem solver who follows instructions.\n\nGiven some examples of string transformations, you must figure out the underlying transformation rule\nand apply it to the set of words in the last example.\n\nInstructions for the response:\na. If you choose to think out loud, you must start your response with: <|im_start|>think\n.\nb. The final answer must always be provided in the: <|im_start|>final answer\n\\boxed{} format.\nc. You should not think or explain after providing the final answer.\n'  # fmt: skip
ISSUE_USER = "Given the input words: {w1}, {w2}, {w3}, {w4}, what is the final answer after the string transformations?"
ISSUE_THINK = "<|im_start|>think\n"
ISSUE_STEP = "Step {i}: {word}\n"
ISSUE_ANSWER = "<|im_start|>final answer\n\\boxed{{{answer}}}"

# The trace markers of this rendering, spelled out (MARKER_PRESETS["symbolic_paper"] must equal them).
PAPER_MARKERS = TraceMarkers(
    PAPER_THINK_HEADER, PAPER_ANSWER_HEADER, answer_separator="\n", close_opens_answer=True
)


def test_system_prompt_is_the_issue_text_character_for_character():
    task = generate_symbolic_task(SymbolicConfig(render="paper", n_examples=1), 0)
    assert task["messages"][0] == {"role": "system", "content": ISSUE_SYSTEM_PROMPT}
    assert "\\boxed{}" in ISSUE_SYSTEM_PROMPT and ISSUE_SYSTEM_PROMPT.count("\n") == 11  # the repr decoded


def test_user_and_assistant_turns_are_the_issue_texts():
    config = SymbolicConfig(render="paper", n_examples=12, cot_example_prob=0.5, seed=3)
    task = generate_symbolic_task(config, 5)
    assert any(task["example_has_cot"]) and not all(task["example_has_cot"])
    for e, has_cot in enumerate(task["example_has_cot"]):
        user, assistant = task["messages"][1 + 2 * e], task["messages"][2 + 2 * e]
        w1, w2, w3, w4 = task["input_words"][e]
        assert user == {"role": "user", "content": ISSUE_USER.format(w1=w1, w2=w2, w3=w3, w4=w4)}
        *steps, answer = task["chain_words"][e]
        expected = ISSUE_ANSWER.format(answer=answer)
        if has_cot:
            expected = (
                ISSUE_THINK
                + "".join(ISSUE_STEP.format(i=i + 1, word=w) for i, w in enumerate(steps))
                + expected
            )
        assert assistant == {"role": "assistant", "content": expected}
    # same words, DAG and CoT flags as our rendering: only the texts differ
    ours = generate_symbolic_task(SymbolicConfig(n_examples=12, cot_example_prob=0.5, seed=3), 5)
    for key in ("input_words", "chain_words", "dag", "example_has_cot", "answer"):
        assert ours[key] == task[key]


def test_a_hand_computed_paper_turn():
    # second halves "efgh" + "mnop" shifted by +1 -> "fghinopq"; "nopq" + "mnop" shifted -> "opqrnopq"
    first = chain_word(["abcdefgh", "ijklmnop"], 1)
    assert first == "fghinopq"
    second = chain_word(["fghinopq", "ijklmnop"], 1)
    assert second == "opqrnopq"
    config = SymbolicConfig(render="paper")
    from hf_cot_distill.data.synthetic.symbolic import render_answer, render_question

    assert render_answer(config, [first, second], True) == (
        "<|im_start|>think\nStep 1: fghinopq\n<|im_start|>final answer\n\\boxed{opqrnopq}"
    )
    assert render_answer(config, [first, second], False) == "<|im_start|>final answer\n\\boxed{opqrnopq}"
    assert render_question(config, ["ab", "cd", "ef", "gh"]) == (
        "Given the input words: ab, cd, ef, gh, what is the final answer after the string transformations?"
    )


@pytest.mark.parametrize("word_length, shift", [(7, 1), (5, -3), (8, 27)])
def test_word_rule_lowercase_second_halves_shifted_mod_26(word_length, shift):
    """word[len(word)//2:] of the parents in sorted DAG order, concatenated, shifted mod 26."""
    config = SymbolicConfig(render="paper", word_length=word_length, shift=shift, n_examples=4, seed=1)
    for idx in range(10):
        task = generate_symbolic_task(config, idx)
        for inputs, chain in zip(task["input_words"], task["chain_words"]):
            words = list(inputs)
            assert all(len(w) == word_length and set(w) <= set("abcdefghijklmnopqrstuvwxyz") for w in words)
            for parents, got in zip(task["dag"], chain):
                assert parents == sorted(parents)
                halves = "".join(words[p][len(words[p]) // 2 :] for p in parents)
                assert got == "".join(chr((ord(c) - ord("a") + shift) % 26 + ord("a")) for c in halves)
                words.append(got)


def test_render_is_validated_and_the_paper_texts_are_fixed():
    with pytest.raises(ValueError, match=r"SymbolicConfig\.render='papr'.*did you mean 'paper'"):
        SymbolicConfig(render="papr")
    with pytest.raises(ValueError, match=r"SymbolicConfig\.think_header='### Think'.*render='paper'"):
        SymbolicConfig(render="paper", think_header="### Think")
    with pytest.raises(ValueError, match=r"SymbolicConfig\.system_prompt=.*fix: remove system_prompt"):
        SymbolicConfig(render="paper", system_prompt="Solve it.")
    assert SymbolicConfig().render == "ours" and SymbolicConfig().answer_header == "### Answer"  # the default
    paper = SymbolicConfig(render="paper")
    assert (paper.think_header, paper.answer_header) == (PAPER_THINK_HEADER, PAPER_ANSWER_HEADER)
    import dataclasses

    assert dataclasses.replace(paper, num_eval_tasks=3) == SymbolicConfig(render="paper", num_eval_tasks=3)


def test_packaged_generator_yaml_is_the_named_config_rendered_as_the_paper():
    name, config = load_generator_yaml("generators/symbolic_paper")
    _, named = load_generator_yaml(ROOT / "recipes/generators/symbolic_paper.yaml")
    assert name == "symbolic_paper" and config == named and config.render == "paper"
    from hf_cot_distill.data.builder import NAMED_CONFIGS

    base = NAMED_CONFIGS["symbolic"]
    assert dataclasses_equal_but(config, base, {"render", "think_header", "answer_header", "system_prompt"})


def dataclasses_equal_but(a, b, skip: set[str]) -> bool:
    import dataclasses

    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a) if f.name not in skip)


# ---- the real Qwen tokenizers ------------------------------------------------------------------


def encode(tokenizer, tasks):
    rows = Dataset.from_list([{"messages": t["messages"]} for t in tasks])
    encoder = ReasoningTraceEncoder(
        tokenizer, source_format="messages", source_markers=PAPER_MARKERS, render_markers=PAPER_MARKERS,
        on_empty_cot="as_given", max_length=8192,
    )  # fmt: skip
    data, stats = encode_dataset(rows, encoder, new_fingerprint=f"paper-{tokenizer.chat_template[:8]}")
    assert stats.counts["dropped"] == 0
    return data


@pytest.fixture(params=["qwen25", "qwen3"])
def qwen(request):
    return request.param, request.getfixturevalue(f"{request.param}_tokenizer")


def test_in_turn_im_start_is_one_special_token(qwen):
    _, tok = qwen
    for header, word in ((PAPER_THINK_HEADER, "think"), (PAPER_ANSWER_HEADER, "final answer")):
        ids = tok.encode(header + "\n", add_special_tokens=False)
        assert ids[0] == IM_START and IM_START not in ids[1:]
        assert tok.decode(ids[1:]) == word + "\n"  # the rest is ordinary BPE text
        assert all(i < 151643 for i in ids[1:])


@pytest.mark.parametrize("has_cot", [True, False])
def test_sections_of_the_paper_rendering(qwen, has_cot):
    name, tok = qwen
    config = SymbolicConfig(
        render="paper", n_examples=4, word_length=6, cot_example_prob=1.0 if has_cot else 0.0
    )
    tasks = [generate_symbolic_task(config, i, split="eval") for i in range(3)]
    data = encode(tok, tasks)
    for task, row in zip(tasks, data):
        ids, sections = np.asarray(row["input_ids"]), np.asarray(row["section_ids"])
        # the text is the chat template's rendering of the conversation, nothing injected or lost
        assert tok.decode(ids) == tok.apply_chat_template(task["messages"], tokenize=False).removesuffix("\n")
        *steps, answer = task["chain_words"][-1]
        cot_text = tok.decode(ids[sections == Section.COT])
        answer_text = tok.decode(ids[sections == Section.ANSWER])
        assert answer_text == f"<|im_start|>final answer\n\\boxed{{{answer}}}<|im_end|>"
        # Qwen3's template writes an empty think block before the last assistant turn: the COT
        # section starts there (text the template put before the content joins the COT)
        template_block = "<think>\n\n</think>\n\n" if name == "qwen3" else ""
        paper_cot = (
            "<|im_start|>think\n" + "".join(f"Step {i + 1}: {w}\n" for i, w in enumerate(steps))
        ) * has_cot
        assert cot_text == template_block + paper_cot
        # sections are contiguous: PROMPT .. then COT (if any) .. then ANSWER to the end
        runs = [s for i, s in enumerate(sections) if i == 0 or s != sections[i - 1]]
        assert runs == [Section.PROMPT] + ([Section.COT] if template_block or has_cot else []) + [
            Section.ANSWER
        ]

        # every <|im_start|> token and its section: all PROMPT but the last turn's in-turn ones
        starts = np.flatnonzero(ids == IM_START)
        final_header = starts[-1 - 1 - int(has_cot)]  # <|im_start|>assistant of the last turn
        assert tok.decode(ids[final_header : final_header + 2]) == "<|im_start|>assistant"
        assert (sections[starts[starts <= final_header]] == Section.PROMPT).all()
        in_turn = starts[starts > final_header]
        assert sections[in_turn].tolist() == [Section.COT] * has_cot + [Section.ANSWER]
        assert [tok.decode(ids[i : i + 2]) for i in in_turn] == ["<|im_start|>think"] * has_cot + [
            "<|im_start|>final"
        ]
        # before the last turn, all PROMPT (checked above): one header per turn (system + every
        # message but the last), the two the system prompt quotes, the earlier answers' headers
        answers = [m["content"] for m in task["messages"][:-1] if m["role"] == "assistant"]
        in_earlier_answers = sum(a.count("<|im_start|>") for a in answers)
        assert in_earlier_answers == len(answers) * (1 + int(has_cot)) and len(answers) == 3
        assert task["messages"][0]["content"].count("<|im_start|>") == 2
        assert len(starts[starts < final_header]) == len(task["messages"]) - 1 + 2 + in_earlier_answers
        assert ids[-1] == IM_END and sections[-1] == Section.ANSWER


def test_qwen3_keeps_paper_headers_of_earlier_turns_verbatim(qwen3_tokenizer):  # noqa: F811
    """Qwen3's template only rewrites turns holding '</think>'; the paper's texts hold none."""
    task = generate_symbolic_task(SymbolicConfig(render="paper", n_examples=3, cot_example_prob=1.0), 0)
    text = qwen3_tokenizer.apply_chat_template(task["messages"], tokenize=False)
    for m in task["messages"][1:-1]:
        assert f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" in text


def test_the_marker_preset_is_the_paper_headers():
    assert MARKER_PRESETS["symbolic_paper"] == PAPER_MARKERS


# ---- evaluation: the boxed answer of a paper-style completion ----------------------------------


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_evaluation_extracts_the_boxed_answer(qwen, skip_special_tokens):
    """A completion in the paper's format, decoded as generation decodes it (special tokens
    dropped or kept), gives the boxed word; the metric scores it."""
    _, tok = qwen
    completion = "<|im_start|>think\nStep 1: fghinopq\n<|im_start|>final answer\n\\boxed{opqrnopq}<|im_end|>"
    decoded = tok.decode(
        tok.encode(completion, add_special_tokens=False), skip_special_tokens=skip_special_tokens
    )
    if skip_special_tokens:
        assert decoded == "think\nStep 1: fghinopq\nfinal answer\n\\boxed{opqrnopq}"
    else:
        assert decoded == completion
    assert extract_boxed(decoded) == "opqrnopq"
    scores = BoxedAnswerAccuracy(math_verify=False).compute(
        predictions=[decoded, decoded.replace("opqrnopq}", "opqrnopr}")], references=["opqrnopq", "opqrnopq"]
    )
    assert scores["exact_match"] == 0.5 and scores["extracted"] == 1.0
