"""B2: KD loss forward+backward at the Qwen2.5 vocabulary, ours vs naive vs Liger-Kernel.

Every variant runs in a fresh subprocess (``--child``) so its peak memory is its own:
``extra`` = peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child) minus the RSS
once inputs and weights exist (on CUDA: the allocator's peak minus memory after setup). The
parent prints baseline, ours and the ratios from the same run, plus loss/gradient agreement
against the naive full-logit computation. b3 and g1 reuse the child runner from this file.

    python benchmarks/b2_kd_memory.py [--positions 2048] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VOCAB, STUDENT_H, TEACHER_H = 151_936, 896, 1536
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(positions: int, device: str, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    # Filled in place (no temporaries) so setup does not raise the peak we measure.
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int, std: float, grad: bool = False) -> torch.Tensor:
        t = torch.empty(*shape, device=device, dtype=dtype).normal_(0.0, std, generator=g)
        return t.requires_grad_(grad)

    return {
        "sh": randn(positions, STUDENT_H, std=1.0, grad=True),
        "sw": randn(VOCAB, STUDENT_H, std=0.05, grad=True),
        "th": randn(positions, TEACHER_H, std=1.0),
        "tw": randn(VOCAB, TEACHER_H, std=0.05),
    }


def _naive(x: dict[str, torch.Tensor], kd_weights: torch.Tensor, beta: float) -> torch.Tensor:
    """Full (N, V) logits for both models, generalized JSD with autograd (TRL GKD style)."""
    sel = torch.nonzero(kd_weights > 0).squeeze(1)  # same positions as ours; dense when all selected
    s = (x["sh"][sel] if sel.numel() < kd_weights.numel() else x["sh"]) @ x["sw"].t()
    with torch.no_grad():
        t = (x["th"][sel] if sel.numel() < kd_weights.numel() else x["th"]) @ x["tw"].t()
    lq = torch.log_softmax(s.float(), -1)
    lp = torch.log_softmax(t.float(), -1)
    lm = torch.logsumexp(torch.stack([lq + math.log(1 - beta), lp + math.log(beta)]), 0)
    kl = torch.nn.functional.kl_div
    jsd = beta * kl(lm, lp, reduction="none", log_target=True) + (1 - beta) * kl(
        lm, lq, reduction="none", log_target=True
    )
    return jsd.sum() / sel.numel()


def _ours(
    x: dict[str, torch.Tensor], kd_weights: torch.Tensor, beta: float, chunk: int | None
) -> torch.Tensor:
    from hf_cot_distill.losses import fused_linear_kd

    n = int((kd_weights > 0).sum())
    out = fused_linear_kd(
        x["sh"], x["sw"], x["th"], x["tw"], kd_weights=kd_weights, divergence="jsd", beta=beta,
        kd_scale=1.0 / max(n, 1), chunk_size=chunk,
    )  # fmt: skip
    return out.loss


def _liger(x: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    # weight_hard_loss=0: KD only; labels all valid so Liger averages over every position.
    loss_fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=beta, compiled=True)
    labels = torch.zeros(x["sh"].shape[0], dtype=torch.long, device=x["sh"].device)
    return loss_fn(x["sh"], x["sw"], x["th"], x["tw"], labels)


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    dtype, dev = DTYPES[args.dtype], args.device
    x = _inputs(args.positions, dev, dtype)
    kd_weights = torch.ones(args.positions, device=dev)
    if args.variant.endswith("_half"):  # B3: KD only on the second half (the "CoT" positions)
        kd_weights[: args.positions // 2] = 0.0
    base = torch.cuda.memory_allocated() if dev == "cuda" else _rss_bytes()

    def step(xx: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        name = args.variant.removesuffix("_half")
        if name == "naive":
            loss = _naive(xx, w, args.beta)
        elif name == "ours":
            loss = _ours(xx, w, args.beta, args.chunk_size)
        else:
            loss = _liger(xx, args.beta)
        loss.backward()
        return loss

    # Warm-up (one-time costs: BLAS init, torch.compile for Liger) on the last positions (selected in
    # every variant) with the same per-chunk shapes; then reset grads so the timed run starts clean.
    warm = min(args.positions, 1024 if args.variant == "liger" else 64)
    step({k: v[-warm:].detach().requires_grad_(v.requires_grad) if k in ("sh", "th") else v for k, v in x.items()},
         kd_weights[-warm:])  # fmt: skip
    x["sw"].grad = None
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss = step(x, kd_weights)
    if dev == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if dev == "cuda":
        extra = torch.cuda.max_memory_allocated() - base
    else:
        extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    rows = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(1))[:4096].to(dev)
    torch.save(
        {"loss": loss.detach().double().cpu(), "grad_h": x["sh"].grad.double().cpu(),
         "grad_w_rows": x["sw"].grad[rows].double().cpu(), "grad_w_norm": x["sw"].grad.double().norm().cpu()},
        args.out,
    )  # fmt: skip
    print(json.dumps({"seconds": seconds, "extra_bytes": extra, "threads": torch.get_num_threads()}))


def run_variant(
    variant: str, positions: int, repeats: int, common: list[str], tmp: Path
) -> dict[str, object]:
    """Run ``variant`` ``repeats`` times in fresh subprocesses; medians of time and extra memory."""
    results, out = [], tmp / f"{variant}.pt"
    for _ in range(repeats):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--positions",
            str(positions),
            "--out",
            str(out),
            *common,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in results),
        "extra_bytes": statistics.median(r["extra_bytes"] for r in results),
        "all_seconds": [round(r["seconds"], 2) for r in results],
        "threads": results[0]["threads"],
        "tensors": torch.load(out),
    }


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def agreement(a: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> str:
    return (
        f"loss rel {rel(a['loss'], ref['loss']):.1e}, grad_h rel {rel(a['grad_h'], ref['grad_h']):.1e}, "
        f"grad_w rel {rel(a['grad_w_rows'], ref['grad_w_rows']):.1e} (4096 rows), "
        f"|grad_w| rel {rel(a['grad_w_norm'], ref['grad_w_norm']):.1e}"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--variants", default="naive,liger,ours")
    p.add_argument("--child", dest="variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p


def common_args(args: argparse.Namespace) -> list[str]:
    c = [
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--beta",
        str(args.beta),
    ]
    return c + (["--chunk-size", str(args.chunk_size)] if args.chunk_size else [])


def main() -> None:
    args = parser().parse_args()
    if args.variant:
        return child(args)
    print(f"B2: KD ({'jsd'} beta={args.beta}) fwd+bwd, V={VOCAB}, Hs={STUDENT_H}, Ht={TEACHER_H}, "
          f"{args.positions} positions, {args.dtype}, {args.device}, {args.threads} threads, median of {args.repeats}")  # fmt: skip
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants.split(","):
            res[v] = run_variant(v, args.positions, args.repeats, common_args(args), Path(tmp))
            r = res[v]
            if "error" in r:
                print(f"{v:>6}: could not run: {r['error']}")
            else:
                print(
                    f"{v:>6}: {r['seconds']:7.2f} s {r['all_seconds']}  extra peak {r['extra_bytes'] / 2**30:6.2f} GiB"
                )
    report(res)


def report(res: dict[str, dict[str, object]]) -> None:
    ours = res.get("ours", {})
    if "seconds" not in ours:
        return
    for base, (mem_target, time_target) in {"naive": (1 / 8, 1.0), "liger": (1 / 2, 1.0)}.items():
        b = res.get(base, {})
        if "seconds" not in b:
            continue
        tr, mr = ours["seconds"] / b["seconds"], ours["extra_bytes"] / max(b["extra_bytes"], 1)
        ok = lambda v, t: "OK" if v <= t else "MISSED"  # noqa: E731
        print(f"ours/{base}: time {tr:.2f}x (target <= {time_target}: {ok(tr, time_target)}), "
              f"extra memory {mr:.3f}x (target <= {mem_target:.3f}: {ok(mr, mem_target)})")  # fmt: skip
    ref = res.get("naive", {}).get("tensors")
    if ref is not None:
        for v in ("ours", "liger"):
            if "tensors" in res.get(v, {}):
                print(f"{v} vs naive: {agreement(res[v]['tensors'], ref)}")


if __name__ == "__main__":
    main()
