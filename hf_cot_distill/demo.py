"""`make demo` (for now): the generator end to end, offline, in seconds.

Generates a small CoT-ICL Lab dataset (cot_special_token prompts) and a symbolic one into
parquet, loads them back with ``datasets.load_dataset`` and prints a decoded sample with its
sections, its eval view (also with drop-k) and a symbolic chat.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hf_cot_distill.data import decode_tokens, eval_view
from hf_cot_distill.data.builder import NAMED_CONFIGS, export_dataset


def run_demo(out_dir: str | Path = "demo_output", num_tasks: int = 256, progress: bool = True) -> Path:
    from datasets import load_dataset

    out = Path(out_dir) / "dataset"
    lab = dataclasses.replace(NAMED_CONFIGS["cot_icl_lab_cot_special_token"], n_examples_choices=(8,))
    export_dataset(
        lab, out, num_tasks=num_tasks, num_eval_tasks=32, config_name="cot_icl_lab", progress=progress
    )
    export_dataset("symbolic", out, num_tasks=16, num_eval_tasks=4, progress=progress)

    ds = load_dataset(str(out), "cot_icl_lab")
    row = ds["train"][0]
    print(f"\nLoaded {out} with load_dataset: {ds}")
    print(
        f"\nTask {row['task_index']}: N={row['n_inputs']} M={row['n_parents']} C={row['chain_length']} "
        f"K={row['n_examples']}, DAG (parents of each chain token) = {row['dag']}"
    )
    print("\nTraining sequence, by section:")
    print(decode_tokens(lab, row["input_ids"], row["section_ids"]))
    supervised = sum(1 for x in row["labels"] if x != -100)
    print(f"\n{len(row['input_ids'])} tokens, {supervised} supervised.")
    ctx, target = eval_view(lab, row)
    print(f"\nEval context tail: ... {decode_tokens(lab, ctx[-12:])}")
    print(f"Eval target: {decode_tokens(lab, target)}")
    ctx_drop, _ = eval_view(lab, row, drop_k=4, drop_mode="first_k")
    print(f"Eval context with drop_k=4 (first_k): {len(ctx)} -> {len(ctx_drop)} tokens")

    sym = load_dataset(str(out), "symbolic")["train"][0]
    print("\nSymbolic task (first example and the target turn):")
    for msg in sym["messages"][1:3] + sym["messages"][-2:]:
        print(f"[{msg['role']}] {msg['content']}")
    print(f"\nDataset card and parquet shards: {out}/README.md")
    return out
