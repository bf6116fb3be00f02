"""Known facts about the real Qwen3 tokenizer and the derived Qwen2.5 one."""

from __future__ import annotations

import pytest

from tests.qwen_tokenizers import (
    QWEN3_VOCAB_SIZE,
    QWEN25_DEFAULT_SYSTEM_PROMPT,
    QWEN25_EMBEDDING_ROWS,
    QWEN25_VOCAB_SIZE,
    load_qwen25_tokenizer,
    qwen3_tokenizer,  # noqa: F401  (pytest fixture)
    qwen25_tokenizer,  # noqa: F401  (pytest fixture)
)

SHARED_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
MIXED_SCRIPT = (
    "Distill the chain of thought. 蒸馏思维链，然后回答。 🤖🧠✨ café naïve\n"
    "def f(x: int) -> int:\n\treturn x ** 2  # squares\n"
)


@pytest.fixture(params=["qwen3", "qwen25"])
def any_qwen(request: pytest.FixtureRequest):
    """Both tokenizers, for facts they share."""
    return request.getfixturevalue(f"{request.param}_tokenizer")


def test_qwen3_special_token_ids(qwen3_tokenizer) -> None:  # noqa: F811
    for token, token_id in {**SHARED_SPECIAL_IDS, "<think>": 151667, "</think>": 151668}.items():
        assert qwen3_tokenizer.convert_tokens_to_ids(token) == token_id
        assert qwen3_tokenizer.encode(token, add_special_tokens=False) == [token_id]
    assert len(qwen3_tokenizer) == QWEN3_VOCAB_SIZE
    assert qwen3_tokenizer.eos_token == "<|im_end|>"
    assert qwen3_tokenizer.pad_token == "<|endoftext|>"


def test_qwen25_sizes_and_special_tokens(qwen25_tokenizer) -> None:  # noqa: F811
    assert len(qwen25_tokenizer) == QWEN25_VOCAB_SIZE == 151665
    assert QWEN25_EMBEDDING_ROWS == 151936 > len(qwen25_tokenizer)
    for token, token_id in SHARED_SPECIAL_IDS.items():
        assert qwen25_tokenizer.encode(token, add_special_tokens=False) == [token_id]
    assert qwen25_tokenizer.eos_token == "<|im_end|>"
    assert qwen25_tokenizer.eos_token_id == 151645
    assert qwen25_tokenizer.pad_token == "<|endoftext|>"
    assert qwen25_tokenizer.pad_token_id == 151643
    assert qwen25_tokenizer.bos_token is None
    assert qwen25_tokenizer.model_max_length == 131072
    # The last added token Qwen2.5 keeps; the ones after it are Qwen3's.
    assert qwen25_tokenizer.convert_ids_to_tokens(151664) == "<|file_sep|>"
    assert "<tool_response>" not in qwen25_tokenizer.get_vocab()


def test_think_is_plain_bpe_on_qwen25_and_added_when_the_user_adds_it(qwen25_tokenizer) -> None:  # noqa: F811
    pieces = qwen25_tokenizer.encode("<think>", add_special_tokens=False)
    assert len(pieces) > 1
    assert all(i < 151643 for i in pieces)
    assert qwen25_tokenizer.decode(pieces) == "<think>"

    own = load_qwen25_tokenizer()  # never mutate the session fixture
    assert own.add_tokens(["<think>", "</think>"]) == 2
    assert own.encode("<think>", add_special_tokens=False) == [151665]
    assert own.encode("</think>", add_special_tokens=False) == [151666]
    assert len(own) == 151667 <= QWEN25_EMBEDDING_ROWS
    assert len(qwen25_tokenizer) == QWEN25_VOCAB_SIZE


def test_same_bpe_ids_on_both(qwen3_tokenizer, qwen25_tokenizer) -> None:  # noqa: F811
    text = MIXED_SCRIPT + "<|im_start|>user\nhi<|im_end|>"
    assert qwen3_tokenizer.encode(text) == qwen25_tokenizer.encode(text)


def test_mixed_script_round_trip(any_qwen) -> None:
    ids = any_qwen.encode(MIXED_SCRIPT, add_special_tokens=False)
    assert any_qwen.decode(ids) == MIXED_SCRIPT
    assert len(ids) < len(MIXED_SCRIPT.encode("utf-8"))  # BPE merges, not bytes
    assert max(ids) < 151643


def test_no_bos_or_eos_added(any_qwen) -> None:
    assert any_qwen.encode("Hello world") == any_qwen.encode("Hello world", add_special_tokens=False)


def test_qwen25_chat_template_default_system_prompt(qwen25_tokenizer) -> None:  # noqa: F811
    text = qwen25_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        f"<|im_start|>system\n{QWEN25_DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen25_chat_template_two_turns_exact(qwen25_tokenizer) -> None:  # noqa: F811
    messages = [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "2+2 = 4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "3+3 = 6."},
    ]
    text = qwen25_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a careful math tutor.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n2+2 = 4.<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n3+3 = 6.<|im_end|>\n"
    )
    ids = qwen25_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert ids[0] == 151644
    assert ids == qwen25_tokenizer.encode(text)
    assert ids.count(151645) == 5


def test_qwen25_chat_template_keeps_think_text_verbatim(qwen25_tokenizer) -> None:  # noqa: F811
    """Unlike Qwen3's template, Qwen2.5's never strips a ``<think>`` block from history."""
    messages = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>\nadd\n</think>\n\n\\boxed{2}"},
    ]
    text = qwen25_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n<think>\nadd\n</think>\n\n\\boxed{2}<|im_end|>\n")


def test_qwen25_chat_template_tool_calls(qwen25_tokenizer) -> None:  # noqa: F811
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two integers.",
                "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
            },
        }
    ]
    messages = [
        {"role": "user", "content": "Add 1 and 2."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}],
        },
        {"role": "tool", "content": "3"},
        {"role": "tool", "content": "done"},
        {"role": "assistant", "content": "1 + 2 = 3."},
    ]
    text = qwen25_tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    tool_json = (
        '{"type": "function", "function": {"name": "add", "description": "Add two integers.", '
        '"parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}'
    )
    assert text == (
        f"<|im_start|>system\n{QWEN25_DEFAULT_SYSTEM_PROMPT}\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        f"{tool_json}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nAdd 1 and 2.<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n3\n</tool_response>\n<tool_response>\ndone\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n1 + 2 = 3.<|im_end|>\n"
    )


def test_qwen3_template_still_thinks(qwen3_tokenizer) -> None:  # noqa: F811
    text = qwen3_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
