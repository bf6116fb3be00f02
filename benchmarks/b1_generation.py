"""B1: CoT-ICL Lab generation throughput, ours vs a per-token reference, 1 thread, same run.

Default config (V=1024, N=4, M=4, C=2, K=40, d=10, leaky_relu, 1-layer H), ``cot`` prompts.
The reference computes one chain token at a time, as the definition reads (and as the
original research code does), from the same sampled DAGs, processors and inputs, and renders
the prompt with Python lists. Its tokens are checked against ours.

    python benchmarks/b1_generation.py [--tasks 8192] [--ref-tasks 300] [--repeats 3]
"""

from __future__ import annotations

import os

# One thread, set before numpy loads its BLAS.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from hf_cot_distill.data import CoTICLConfig, embedding_table, generate_batch  # noqa: E402
from hf_cot_distill.data.synthetic.cot_icl_lab import (  # noqa: E402
    activation_fn,
    sample_dags,
    sample_inputs,
    sample_processors,
)


def reference(config: CoTICLConfig, n_tasks: int) -> tuple[list[list[int]], list[np.ndarray]]:
    """One token at a time: per task, per example, per chain index (float32, like the original)."""
    table = embedding_table(config)
    act = activation_fn(config.activation)
    idx = np.arange(n_tasks)
    dags = sample_dags(config, idx, 4, 4, 2)
    procs = sample_processors(config, idx, 2)
    inputs = sample_inputs(config, idx, 4, 40)
    sequences, chains = [], []
    for t in range(n_tasks):
        ids, task_chains = [], []
        for k in range(40):
            available = inputs[t, k].tolist()
            for j in range(2):
                x = table[[available[p] for p in dags[t, j]]]
                for layer in range(config.h_num_layers):
                    x = x @ procs[t, j, layer]
                    if layer < config.h_num_layers - 1:
                        x = act(x)
                h = act(x.mean(axis=0))
                logits = table[: config.n_usable] @ h
                available.append(int(np.argmax(logits)))
            ids.extend(available)  # cot prompt: inputs, CoT token, answer
            task_chains.append(available[4:])
        sequences.append(ids)
        chains.append(np.array(task_chains))
    return sequences, chains


def reference_torch(config: CoTICLConfig, n_tasks: int) -> list[list[int]]:
    """The same per-token loop with torch ops per token, the way the original research code runs."""
    import torch

    torch.set_num_threads(1)
    table = torch.from_numpy(np.array(embedding_table(config)))
    idx = np.arange(n_tasks)
    dags = torch.from_numpy(sample_dags(config, idx, 4, 4, 2))
    procs = torch.from_numpy(sample_processors(config, idx, 2))
    inputs = sample_inputs(config, idx, 4, 40)
    sequences = []
    for t in range(n_tasks):
        ids = []
        for k in range(40):
            available = inputs[t, k].tolist()
            for j in range(2):
                x = table[torch.tensor([available[p] for p in dags[t, j].tolist()])]
                x = x @ procs[t, j, 0]
                h = torch.nn.functional.leaky_relu(x.mean(dim=0), 0.5)
                available.append(int(torch.argmax(table[: config.n_usable] @ h)))
            ids.extend(available)
        sequences.append(ids)
    return sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--ref-tasks", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = CoTICLConfig(prompt_strategy="cot")
    generate_batch(config, range(64))  # warm caches (embedding table)

    ref_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ref_seqs, ref_chains = reference(config, args.ref_tasks)
        ref_times.append(time.perf_counter() - t0)
    ref_tokens = sum(len(s) for s in ref_seqs)

    torch_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        torch_seqs = reference_torch(config, args.ref_tasks // 3)
        torch_times.append(time.perf_counter() - t0)

    ours_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        n_tokens = 0
        for start in range(0, args.tasks, args.batch):
            batch = generate_batch(config, range(start, min(start + args.batch, args.tasks)))
            n_tokens += len(batch.table.column("input_ids").combine_chunks().values)
        ours_times.append(time.perf_counter() - t0)

    check = generate_batch(config, range(args.ref_tasks)).table
    ours_chains = check.column("example_chains").to_pylist()
    ties = sum(int((np.array(a) != b).any()) for a, b in zip(ours_chains, ref_chains))
    same_ids = sum(a == b for a, b in zip(check.column("input_ids").to_pylist(), ref_seqs))
    same_torch = sum(a == b for a, b in zip(check.column("input_ids").to_pylist(), torch_seqs))

    ref_t, ours_t = statistics.median(ref_times), statistics.median(ours_times)
    ref_sps, ours_sps = args.ref_tasks / ref_t, args.tasks / ours_t
    print(
        f"B1 CoT-ICL Lab generation, default config, cot prompts, 1 thread ({platform.processor() or platform.machine()})"
    )
    print(f"  median of {args.repeats} runs")
    print(
        f"  reference (per token): {ref_sps:10.1f} seq/s  {ref_tokens / ref_t:12.0f} tokens/s  ({args.ref_tasks} tasks)"
    )
    torch_sps = (args.ref_tasks // 3) / statistics.median(torch_times)
    print(f"  reference (per token, torch ops like the original): {torch_sps:10.1f} seq/s")
    print(
        f"  ours (vectorized):     {ours_sps:10.1f} seq/s  {n_tokens / ours_t:12.0f} tokens/s  ({args.tasks} tasks)"
    )
    print(f"  ratio ours/numpy reference: {ours_sps / ref_sps:8.1f}x")
    print(f"  ratio ours/torch reference: {ours_sps / torch_sps:8.1f}x   (target >= 6,000 seq/s, >= 100x)")
    print(
        f"  identical sequences vs reference: {same_ids}/{args.ref_tasks} (tasks differing by a float near-tie: {ties}); "
        f"vs torch reference: {same_torch}/{len(torch_seqs)}"
    )


if __name__ == "__main__":
    main()
