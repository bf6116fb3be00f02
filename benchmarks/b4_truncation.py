"""B4: truncation end to end — SectionKDTrainer steps at lead-span proportion 0.5 vs 1.0.

Tiny Qwen2 student (hidden 64, ~9.8M params, tied embeddings) and teacher (hidden 128, ~19.7M)
at the real Qwen2.5 vocabulary (151,936 rows), 1,024-token sequences (prompt 10% / CoT 80% /
answer 10%), batch 2, fp32, paper objective (0.5·CE + 0.5·forward KL) on every section (so
only truncation differs between the variants; with CoT + answer supervision, cutting at 0.5
also drops the answer and the supervised positions fall by more than half).
Each variant runs in a fresh process; a wrapper process between us and the worker reports the
worker's ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (exactly that worker's peak RSS). Step time:
median of the timed steps (after one warm-up step). Counted FLOPs: the trainer's
:mod:`hf_cot_distill.compute` totals per step.

    python benchmarks/b4_truncation.py [--steps 3] [--threads 2]

``b5_vs_gkd.py`` reuses the models, rows and the process runner from this file.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VOCAB, SEQ, BATCH = 151_936, 1024, 2
ROOT = Path(__file__).resolve().parents[1]


def build_models(seed: int = 0) -> tuple[Any, Any]:
    """Student (~9.8M) and teacher (~19.7M) tiny Qwen2 models at the Qwen2.5 vocabulary."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def make(hidden: int, heads: int, s: int) -> Qwen2ForCausalLM:
        torch.manual_seed(s)
        cfg = Qwen2Config(
            vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=heads, num_key_value_heads=heads // 2, tie_word_embeddings=True,
            max_position_embeddings=SEQ, pad_token_id=0, use_cache=False,
        )  # fmt: skip
        return Qwen2ForCausalLM(cfg)

    return make(64, 4, seed), make(128, 8, seed + 1)


def make_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows of 1,024 tokens: prompt 10%, CoT 80%, answer 10% (ids below 151,643)."""
    rng = np.random.default_rng(seed)
    p, a = SEQ // 10, SEQ // 10
    sections = [1] * p + [2] * (SEQ - p - a) + [3] * a
    return [{"input_ids": rng.integers(10, 151_643, SEQ).tolist(), "section_ids": sections} for _ in range(n)]


class StepTimer:
    """A TrainerCallback recording wall time per optimizer step."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        outer = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                outer._t0 = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                outer.times.append(time.perf_counter() - outer._t0)

        self.times: list[float] = []
        self._t0 = 0.0
        self.callback = _CB()


def common_args(out: str, steps: int, **kw: Any) -> dict[str, Any]:
    return dict(
        output_dir=out, report_to="none", save_strategy="no", use_cpu=True, per_device_train_batch_size=BATCH,
        max_steps=steps, learning_rate=1e-4, logging_steps=1, seed=0, dataloader_num_workers=0,
        disable_tqdm=True, **kw,
    )  # fmt: skip


def run_ours(steps: int, threads: int, **config: Any) -> dict[str, Any]:
    """Train ``steps`` SectionKDTrainer steps; return step times, first loss and per-step FLOPs."""
    import torch
    from datasets import Dataset

    from hf_cot_distill.trainers import SectionKDConfig, SectionKDTrainer

    torch.set_num_threads(threads)
    student, teacher = build_models()
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = SectionKDConfig(**common_args(out, steps), **config)
        trainer = SectionKDTrainer(
            student, teacher, args=args, train_dataset=Dataset.from_list(make_rows(BATCH * steps)),
            callbacks=[timer.callback],
        )  # fmt: skip
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    acc = trainer.compute_accounting
    return {
        "step_times": timer.times,
        "first_loss": logs[0]["loss"],
        "flops_per_step": acc.total_flops / steps,
        "tokens_forwarded_per_step": acc.tokens_forwarded / steps,
        "kd_positions_per_step": int(acc.kd_tokens.sum()) / steps,
    }


def measure(script: str, variant: str, steps: int, threads: int) -> dict[str, Any]:
    """Run ``variant`` in a worker behind a wrapper process; add the worker's peak RSS."""
    cmd = [sys.executable, script, "--wrap", variant, "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wrap(script: str, variant: str, steps: int, threads: int) -> None:
    """(wrapper process) run the worker, then print its result plus RUSAGE_CHILDREN peak RSS."""
    cmd = [sys.executable, script, "--worker", variant, "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    print(json.dumps(result))


def timed(result: dict[str, Any]) -> float:
    """Median step time over the steps after the first (warm-up)."""
    return statistics.median(result["step_times"][1:])


FULL = {"supervision_preset": "prompt+cot+answer"}  # supervise every kept token: only truncation varies
VARIANTS: dict[str, dict[str, Any]] = {
    "lsp_1.0": FULL,
    "lsp_0.5": {
        **FULL,
        "truncation_policy": "lead_span_proportion",
        "truncation_kwargs": {"lead_span_proportion": 0.5},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant (first = warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker")
    parser.add_argument("--wrap")
    a = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if a.worker:
        print(json.dumps(run_ours(a.steps, a.threads, **VARIANTS[a.worker])))
        return
    if a.wrap:
        wrap(__file__, a.wrap, a.steps, a.threads)
        return
    res = {v: measure(__file__, v, a.steps, a.threads) for v in VARIANTS}
    base, ours = res["lsp_1.0"], res["lsp_0.5"]
    print(
        f"B4 truncation, {a.threads} threads, batch {BATCH} x {SEQ} tokens, vocab {VOCAB}, {a.steps} steps/variant"
    )
    for name, r in res.items():
        print(
            f"  {name}: step {timed(r):.2f} s (median of {len(r['step_times']) - 1}), peak RSS {r['peak_rss_gb']:.2f} GB, "
            f"counted FLOPs/step {r['flops_per_step']:.3e}, tokens forwarded/step {r['tokens_forwarded_per_step']:.0f}"
        )
    print(
        f"  ratio 0.5/1.0: step time {timed(ours) / timed(base):.3f}x, peak memory "
        f"{ours['peak_rss_gb'] / base['peak_rss_gb']:.3f}x, counted FLOPs {ours['flops_per_step'] / base['flops_per_step']:.3f}x"
    )


if __name__ == "__main__":
    main()
