"""Published model shapes, offline: a model with a Hub checkpoint's exact architecture and random weights.

The recipes under ``recipes/distill/`` name Hub checkpoints (Qwen2.5-1.5B-Instruct -> 0.5B-Instruct,
...). Without network access their weights cannot be had, but their shapes can: the values below are
the checkpoints' ``config.json`` fields that fix the architecture (and the special-token ids). A
model built from them with random weights runs every code path a real one runs at the real sizes
(grouped-query attention, tied embeddings, the vocabulary padded past the tokenizer's 151,665
tokens to 151,936 rows, memory and step time), which is what a dry run, a memory plan or a test at
real shapes needs. Quality figures from such a model mean nothing.

Usage::

    from hf_cot_distill.models.published import published_config, random_model
    config = published_config("Qwen/Qwen2.5-0.5B-Instruct")      # a transformers Qwen2Config
    model = random_model("Qwen/Qwen2.5-0.5B-Instruct", seed=0)   # random weights, float32
"""

from __future__ import annotations

from typing import Any

from hf_cot_distill.core.validation import check_choice

_QWEN25_COMMON: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "bos_token_id": 151643,
    "eos_token_id": 151645,  # <|im_end|> for the Instruct checkpoints
}

#: ``config.json`` values of Hub checkpoints, keyed by repository id. ``parameters``: the
#: published total parameter count (tied embeddings counted once), checked by the tests.
PUBLISHED: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-0.5B-Instruct": {
        **_QWEN25_COMMON,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_window_layers": 21,
        "tie_word_embeddings": True,
        "vocab_size": 151936,
        "parameters": 494_032_768,
    },
    "Qwen/Qwen2.5-1.5B-Instruct": {
        **_QWEN25_COMMON,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_window_layers": 21,
        "tie_word_embeddings": True,
        "vocab_size": 151936,
        "parameters": 1_543_714_304,
    },
    "Qwen/Qwen2.5-7B-Instruct": {
        **_QWEN25_COMMON,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_window_layers": 28,
        "tie_word_embeddings": False,
        "vocab_size": 152064,
        "parameters": 7_615_616_512,
    },
}


def published_config(name: str, **overrides: Any) -> Any:
    """The transformers config of Hub checkpoint ``name`` (one of :data:`PUBLISHED`), plus ``overrides``.

    Raises:
        ValueError: ``name`` is not one of :data:`PUBLISHED` (the message lists them).
    """
    from transformers import AutoConfig

    check_choice("name", name, tuple(PUBLISHED))
    values = {k: v for k, v in PUBLISHED[name].items() if k not in ("model_type", "parameters")}
    values.update(overrides)
    return AutoConfig.for_model(PUBLISHED[name]["model_type"], **values)


def random_model(name: str, seed: int = 0, dtype: Any = None, **overrides: Any) -> Any:
    """A causal LM with checkpoint ``name``'s exact architecture and random weights (seeded).

    ``dtype`` (a ``torch.dtype``, default float32) is the parameters' dtype after initialisation;
    the published checkpoints are stored in bfloat16.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = published_config(name, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model if dtype is None else model.to(dtype)
