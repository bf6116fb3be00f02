"""B6: DeepSpeed ZeRO-2 and ZeRO-3 vs plain DDP, 2 CPU processes (gloo), SectionKDTrainer.

Each variant is a fresh ``torchrun --nproc_per_node 2`` of this file in worker mode: a student
(Qwen2, hidden 256, 4 layers, vocab 32,000, ~14M parameters) distilled from a frozen teacher
(hidden 384, 4 layers), 1,024-token rows (prompt 10% / CoT 80% / answer 10%), batch 1 per rank,
fp32, Adam. Every rank reports:

* model states it holds: its parameters (ZeRO-3: its partition) + gradients + optimizer
  states, counted from the tensors it holds after training;
* its peak RSS (``ru_maxrss``), which also holds torch, activations and the teacher;
* the median step time.

    python benchmarks/b6_zero.py [--steps 6] [--variants ddp,zero2,zero3]

The baseline is DDP in the same run; the ratios are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEQ, VOCAB = 1024, 32000


def _tensor_bytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _model_state_bytes(trainer) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer states this rank holds."""
    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    engine_module = getattr(model, "module", model)
    params = grads = 0
    for p in engine_module.parameters():
        local = p.ds_tensor if hasattr(p, "ds_tensor") else p  # ZeRO-3: only the partition is held
        params += local.numel() * local.element_size()
        if p.grad is not None:
            grads += p.grad.numel() * p.grad.element_size()
    opt = trainer.optimizer
    inner = getattr(opt, "optimizer", opt)
    inner = getattr(inner, "optimizer", inner)  # DeepSpeed wraps the torch optimizer
    states = _tensor_bytes(list(getattr(inner, "state", {}).values()))
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        states += _tensor_bytes(getattr(opt, name, []))  # ZeRO's fp32 master partitions
    for name in ("averaged_gradients", "grads_in_partition"):
        grads += _tensor_bytes(getattr(opt, name, None) or [])
    return {"params": params, "grads": grads, "optimizer": states}


def worker(variant: str, steps: int, out: str) -> None:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback

    from hf_cot_distill.core.sections import Section
    from hf_cot_distill.pipelines.training_models import setup_distributed
    from hf_cot_distill.trainers import SectionKDConfig, SectionKDTrainer

    rank = int(os.environ.get("RANK", "0"))
    deepspeed_cfg = None if variant == "ddp" else str(ROOT / f"recipes/deepspeed/{variant}.json")
    args = SectionKDConfig(
        output_dir=tempfile.mkdtemp(),
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        per_device_train_batch_size=1,
        max_steps=steps,
        logging_steps=1,
        learning_rate=1e-4,
        train_sampling_strategy="sequential",
        deepspeed=deepspeed_cfg,
        ddp_backend="gloo",
        supervision_preset="cot+answer",
    )
    setup_distributed(args)  # process group before the models (ZeRO-3 partitions them at construction)

    def qwen(hidden: int, seed: int) -> Qwen2ForCausalLM:
        torch.manual_seed(seed)
        cfg = Qwen2Config(
            vocab_size=VOCAB, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=SEQ, tie_word_embeddings=False,
        )  # fmt: skip
        return Qwen2ForCausalLM(cfg)

    student, teacher = qwen(256, 0), qwen(384, 1)
    rng = np.random.default_rng(0)
    p, a = SEQ // 10, SEQ // 10
    sections = [int(Section.PROMPT)] * p + [int(Section.COT)] * (SEQ - p - a) + [int(Section.ANSWER)] * a
    rows = [{"input_ids": rng.integers(3, VOCAB, SEQ).tolist(), "section_ids": sections} for _ in range(64)]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer = SectionKDTrainer(
        student, teacher, args=args, train_dataset=Dataset.from_list(rows), callbacks=[Timer()]
    )
    trainer.train()
    states = _model_state_bytes(trainer)
    result = {
        "rank": rank,
        "variant": variant,
        "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **{f"state_{k}": v for k, v in states.items()},
        "state_total": sum(states.values()),
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }
    Path(out, f"{variant}-rank{rank}.json").write_text(json.dumps(result))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--variants", default="ddp,zero2,zero3")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.out)
        return
    from hf_cot_distill.core.tables import markdown_table

    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as out:
        for variant in args.variants.split(","):
            cmd = [
                sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_port()), __file__, "--worker", variant, "--steps", str(args.steps), "--out", out,
            ]  # fmt: skip
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{variant}: failed\n{proc.stderr[-3000:]}")
                continue
            results[variant] = [json.loads(Path(out, f"{variant}-rank{r}.json").read_text()) for r in (0, 1)]
    print(
        f"B6: SectionKDTrainer, 2 CPU processes (gloo), {args.steps} steps, 1 x {SEQ} tokens per rank, fp32"
    )
    head = ["variant", "model states / rank (params + grads + optimizer)", "peak RSS / rank", "step time"]
    head += ["vs DDP (states / RSS / time)", "first losses"]
    rows = []
    base = results.get("ddp")
    for variant, ranks in results.items():
        state = max(r["state_total"] for r in ranks)
        rss = max(r["peak_rss"] for r in ranks)
        step = statistics.median(r["step_s"] for r in ranks)
        ratio = "-"
        if base:
            b_state = max(r["state_total"] for r in base)
            b_rss = max(r["peak_rss"] for r in base)
            b_step = statistics.median(r["step_s"] for r in base)
            ratio = f"{state / b_state:.2f}x / {rss / b_rss:.2f}x / {step / b_step:.2f}x"
        parts = ranks[0]
        detail = f"{parts['state_params'] / 2**20:.0f} + {parts['state_grads'] / 2**20:.0f} + {parts['state_optimizer'] / 2**20:.0f} MiB"
        rows.append(
            [variant, f"{state / 2**20:.0f} MiB ({detail})", f"{rss / 2**30:.2f} GiB", f"{step:.2f} s", ratio]
            + [", ".join(f"{x:.4f}" for x in ranks[0]["losses"][:3])]
        )
    print(markdown_table(head, rows), end="")


if __name__ == "__main__":
    main()
