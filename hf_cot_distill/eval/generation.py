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
    """Greedy completions of chat prompts (each a list of messages ending before the answer)."""
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
            texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
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
