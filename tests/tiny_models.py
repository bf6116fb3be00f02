"""Tiny Qwen2 / Llama models built from local configs (no Hub access), shared by the trainer tests.

Every builder seeds torch before initialising, so the same call gives the same weights. Sizes:
hidden 32-64, 2 layers; ``vocab_size`` is the number of lm_head rows (set it above the real
vocabulary to get padded rows, as Qwen2.5's 151,936 rows over 151,665 real tokens).
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def tiny_qwen2_config(
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int | None = None,
    tie_word_embeddings: bool = False,
    max_position_embeddings: int = 2048,
) -> Qwen2Config:
    """A Qwen2 config small enough for CPU tests (dropout 0, sdpa attention)."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        attention_dropout=0.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        use_cache=False,
    )


def tiny_qwen2(seed: int = 0, **kwargs: object) -> Qwen2ForCausalLM:
    """A freshly initialised tiny ``Qwen2ForCausalLM`` (fp32, train mode)."""
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(tiny_qwen2_config(**kwargs))  # type: ignore[arg-type]


def tiny_llama(
    seed: int = 0, vocab_size: int = 128, hidden_size: int = 32, num_hidden_layers: int = 2
) -> LlamaForCausalLM:
    """A freshly initialised tiny ``LlamaForCausalLM`` (fp32)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=0,
        use_cache=False,
    )
    return LlamaForCausalLM(config)
