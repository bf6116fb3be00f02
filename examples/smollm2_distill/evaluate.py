"""Evaluate a model folder of the SmolLM2 example on held-out CHAMP traces.

Per section (prompt / CoT / answer) of the held-out traces, rendered and split exactly as in
training (``ReasoningTraceEncoder``, the model's own tokenizer and chat template):

* ``ce/<section>``: mean next-token cross-entropy of the model (nats per token), teacher-free;
* ``kl/<section>``: mean forward KL(teacher || model) per token at T = 1 (the KD term), when a
  teacher folder is given.

Plus greedy completions (``max_new_tokens``) of the first ``n_prompts`` distinct held-out problems,
rendered with the chat template's generation prompt. One trace at a time, so memory stays at
one ``(T, 49,152)`` logits matrix per model.

    python examples/smollm2_distill/evaluate.py --model outputs/distill/smollm2-135m_to_4layer_cot_only \
        --teacher examples/smollm2_distill/work/teacher --data examples/smollm2_distill/work/champ_messages \
        --out outputs/distill/smollm2-135m_to_4layer_cot_only/champ_eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

SECTIONS = {1: "prompt", 2: "cot", 3: "answer"}


def load(folder: str | Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def held_out_rows(tokenizer: Any, data_dir: str | Path, split: str = "test", n: int | None = None,
                  max_length: int = 1024) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """Encoded held-out rows (``input_ids``, ``section_ids``) and their user prompts."""
    from datasets import load_dataset

    from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encode_dataset

    raw = load_dataset(str(data_dir), split=split)
    raw = raw.select(range(min(n, len(raw)))) if n is not None else raw
    prompts = [m[0]["content"] for m in raw["messages"]]
    encoder = ReasoningTraceEncoder(tokenizer, max_length=max_length, on_invalid="drop")
    encoded, _ = encode_dataset(
        raw.select_columns(["messages"]), encoder, new_fingerprint=f"eval-{split}-{n}"
    )
    return [{"input_ids": r["input_ids"], "section_ids": r["section_ids"]} for r in encoded], prompts


@torch.no_grad()
def section_losses(model: Any, rows: list[dict[str, Any]], teacher: Any = None) -> dict[str, float]:
    """Mean CE (and KL to ``teacher``) per section over ``rows``; position i predicts token i + 1."""
    sums = {f"{kind}/{name}": 0.0 for kind in ("ce", "kl") for name in SECTIONS.values()}
    counts = dict.fromkeys(SECTIONS.values(), 0)
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        target, sections = ids[0, 1:], torch.tensor(row["section_ids"][1:])
        logp = F.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        ce = -logp.gather(1, target[:, None])[:, 0]
        kl = None
        if teacher is not None:
            t_logp = F.log_softmax(teacher(ids).logits[0, :-1].float(), dim=-1)
            kl = (t_logp.exp() * (t_logp - logp)).sum(-1)
        for sid, name in SECTIONS.items():
            mask = sections == sid
            counts[name] += int(mask.sum())
            sums[f"ce/{name}"] += float(ce[mask].sum())
            if kl is not None:
                sums[f"kl/{name}"] += float(kl[mask].sum())
    out = {
        k: v / max(counts[k.split("/")[1]], 1)
        for k, v in sums.items()
        if teacher is not None or k[:2] == "ce"
    }
    out["ce/cot+answer"] = (sums["ce/cot"] + sums["ce/answer"]) / max(counts["cot"] + counts["answer"], 1)
    out.update({f"tokens/{k}": v for k, v in counts.items()})
    return out


@torch.no_grad()
def greedy(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy completions of ``prompts`` (one user turn each, chat template generation prompt)."""
    outs = []
    for prompt in prompts:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        outs.append(tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return outs


def evaluate(model_dir: str | Path, data_dir: str | Path, teacher: Any = None, *, n_eval: int | None = None,
             n_prompts: int = 3, max_new_tokens: int = 48, max_length: int = 1024) -> dict[str, Any]:  # fmt: skip
    """Section losses and greedy outputs of the model in ``model_dir`` (``teacher``: model or folder)."""
    model, tokenizer = load(model_dir)
    if isinstance(teacher, (str, Path)):
        teacher = load(teacher)[0]
    rows, prompts = held_out_rows(tokenizer, data_dir, n=n_eval, max_length=max_length)
    result: dict[str, Any] = {"model": str(model_dir), "eval_rows": len(rows)}
    result.update(section_losses(model, rows, teacher))
    distinct = list(dict.fromkeys(prompts))[:n_prompts]  # a problem can have several traces
    result["prompts"] = distinct
    result["greedy"] = greedy(model, tokenizer, distinct, max_new_tokens)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--teacher", help="teacher folder: also report KL(teacher || model) per section")
    parser.add_argument("--n-eval", type=int, help="first N held-out traces (default: all)")
    parser.add_argument("--n-prompts", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", help="JSON path (default: print only)")
    a = parser.parse_args()
    result = evaluate(a.model, a.data, a.teacher, n_eval=a.n_eval, n_prompts=a.n_prompts,
                      max_new_tokens=a.max_new_tokens)  # fmt: skip
    text = json.dumps(result, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
