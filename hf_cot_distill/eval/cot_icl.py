"""CoT-ICL Lab evaluation: greedy generation on the eval view, answer and chain accuracies.

The model sees the eval context (``K - 1`` full examples plus the last example's inputs,
optionally with the think block dropped from ``drop_k`` context examples) and decodes greedily
(batched, left-padded, KV cache). The output is parsed back into a chain aligned with the
reference: for special-token prompts, the tokens inside ``<think> … </think>`` are the CoT and
the token after ``<ans>`` the answer; for plain prompts the first ``C`` (``cot``) or 1
(``standard``) generated tokens. Chance baselines are reported beside every figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig
from hf_cot_distill.data.synthetic.generate import eval_view
from hf_cot_distill.data.synthetic.prompts import get_strategy
from hf_cot_distill.eval.metrics import CoTICLAccuracy, chance_baselines

MISSING = -1


def reference_chain(config: CoTICLConfig, row: dict) -> list[int]:
    """What the model should produce: the whole chain if the strategy shows CoT, else the answer."""
    chain = list(row["example_chains"][-1])
    return chain if get_strategy(config.prompt_strategy).carries_cot else chain[-1:]


def parse_generation(config: CoTICLConfig, generated: Sequence[int], chain_length: int) -> list[int]:
    """Generated ids -> a chain aligned with ``reference_chain`` (``MISSING`` where absent)."""
    strategy = get_strategy(config.prompt_strategy)
    generated = [int(t) for t in generated]
    width = chain_length if strategy.carries_cot else 1
    st = config.special_tokens
    if st is None:
        out = generated[:width]
        return out + [MISSING] * (width - len(out))
    cot: list[int] = []
    if generated and generated[0] == st.think_start and st.think_end in generated:
        cot = generated[1 : generated.index(st.think_end)]
    answer = MISSING
    if st.answer_start in generated:
        pos = generated.index(st.answer_start)
        if pos + 1 < len(generated):
            answer = generated[pos + 1]
    if width == 1:
        return [answer]
    cot = (cot + [MISSING] * (width - 1))[: width - 1]
    return cot + [answer]


def _max_new_tokens(config: CoTICLConfig, chain_length: int) -> int:
    strategy = get_strategy(config.prompt_strategy)
    if config.special_tokens is None:
        return chain_length if strategy.carries_cot else 1
    # <think> c.. </think> <ans> a </ans> <eos>, plus slack for a model that over-thinks
    return chain_length + 6


@torch.no_grad()
def generate_chains(
    model: torch.nn.Module,
    config: CoTICLConfig,
    rows: Sequence[dict],
    *,
    drop_k: int = 0,
    drop_mode: str = "first_k",
    batch_size: int = 16,
) -> list[list[int]]:
    """Greedy generations for each row's eval view, parsed into aligned chains."""
    st = config.special_tokens
    pad = st.pad if st is not None else 0  # plain vocabularies have no pad id: masked anyway
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            contexts = [eval_view(config, row, drop_k=drop_k, drop_mode=drop_mode)[0] for row in batch]
            width = max(len(c) for c in contexts)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, ctx in enumerate(contexts):  # left padding: generation continues at the end
                ids[i, width - len(ctx) :] = torch.tensor(ctx)
                mask[i, width - len(ctx) :] = 1
            chain_length = max(int(r["chain_length"]) for r in batch)
            new = _max_new_tokens(config, chain_length)
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=new,
                min_new_tokens=new if st is None else None,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad,
                eos_token_id=st.eos if st is not None else None,
            )
            for i, row in enumerate(batch):
                out.append(parse_generation(config, gen[i, width:].tolist(), int(row["chain_length"])))
    finally:
        model.train(was_training)
    return out


def evaluate_cot_icl(
    model: torch.nn.Module,
    config: CoTICLConfig,
    rows: Iterable[dict],
    *,
    drop_k: int = 0,
    drop_mode: str = "first_k",
    batch_size: int = 16,
) -> dict:
    """Answer / chain / per-position accuracy of greedy decoding, with chance baselines.

    Returns a flat dict: ``answer_accuracy``, ``chain_accuracy``, ``position_accuracy`` (list),
    ``baseline_uniform``, ``baseline_marginal_majority``, ``baseline_in_context_majority``,
    ``count``, ``drop_k``, ``drop_mode``.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("evaluate_cot_icl got no rows; pass the eval split of a CoT-ICL dataset.")
    predictions = generate_chains(
        model, config, rows, drop_k=drop_k, drop_mode=drop_mode, batch_size=batch_size
    )
    references = [reference_chain(config, r) for r in rows]
    scores = CoTICLAccuracy().compute(predictions=predictions, references=references)
    base = chance_baselines(
        [int(r["answer"]) for r in rows],
        [[int(c[-1]) for c in r["example_chains"][:-1]] for r in rows],
        config.n_usable,
    )
    result = dict(scores)
    result.update({f"baseline_{k}": v for k, v in base.items()})
    result.update(drop_k=drop_k, drop_mode=drop_mode)
    return result
