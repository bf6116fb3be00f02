"""Chat-model evaluation on reasoning tasks: greedy completions, boxed answers, format compliance."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from hf_cot_distill.eval.metrics import BoxedAnswerAccuracy, FormatCompliance


@torch.no_grad()
def generate_completions(
    model: torch.nn.Module,
    tokenizer,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
) -> list[str]:
    """Greedy completions of chat prompts (each a list of messages ending before the answer).

    Each completion is its generated tokens up to (not including) the first end-of-sequence or pad
    token, decoded *with* special tokens (:func:`decode_completions`): a format whose headers are
    special tokens (the paper rendering of the symbolic tasks, ``<|im_start|>final answer``) stays
    readable, and nothing after the end of the turn is decoded.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos token) before batching."
        )
    device = next(model.parameters()).device
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues at the end of every row
    texts = []
    try:
        for start in range(0, len(conversations), batch_size):
            prompts = [
                tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
                for conv in conversations[start : start + batch_size]
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            texts.extend(decode_completions(tokenizer, new))
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return texts


def stop_token_ids(tokenizer) -> set[int]:
    """The ids that end a generated completion: the tokenizer's eos (one id or a list) and pad."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return ids


def decode_completions(tokenizer, generated: torch.Tensor) -> list[str]:
    """``generated``: ``(B, N)`` int ids of the new tokens only (right-padded after each row's end).

    Each row cut at its first stop id (:func:`stop_token_ids`: eos or pad), then decoded with its
    special tokens kept: a special token the model wrote *inside* its answer (``<|im_start|>`` of
    ``<|im_start|>final answer``) is part of the text a format check reads."""
    stops = stop_token_ids(tokenizer)
    texts = []
    for row in generated.tolist():
        end = next((i for i, token in enumerate(row) if token in stops), len(row))
        texts.append(tokenizer.decode(row[:end], skip_special_tokens=False))
    return texts


def evaluate_symbolic(
    model: torch.nn.Module,
    tokenizer,
    rows: Iterable[dict],
    *,
    answer_header: str = "### Answer",
    max_new_tokens: int = 96,
    batch_size: int = 8,
) -> dict:
    """Symbolic word tasks: the model answers the last question of each conversation.

    Returns boxed-answer exact / normalized match, extraction rate and format compliance
    (a ``\\boxed{}`` after the answer header), plus the completions for inspection.
    """
    rows = list(rows)
    conversations = [r["messages"][:-1] for r in rows]
    completions = generate_completions(
        model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    refs = [r["answer"] for r in rows]
    result = BoxedAnswerAccuracy().compute(predictions=completions, references=refs)
    fmt = FormatCompliance(think_open=None, think_close=None, answer_header=answer_header)
    result.update(fmt.compute(predictions=completions, references=[""] * len(completions)))
    result["completions"] = completions
    return result
