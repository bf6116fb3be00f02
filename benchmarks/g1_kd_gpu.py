"""G1 (GPU only): B2 at 8,192 positions in bf16 on CUDA: ours vs Liger-Kernel vs naive.

Peak memory is the CUDA allocator's peak minus the memory allocated once inputs and weights
exist, each variant in a fresh subprocess (the child runner of b2_kd_memory.py); median of
``--repeats``. Targets: extra memory <= Liger's, time <= 1.2x Liger's. On a machine without
CUDA the script exits with a message and status 2.

    python benchmarks/g1_kd_gpu.py [--positions 8192] [--repeats 3]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import b2_kd_memory as b2
import torch


def main() -> None:
    p = b2.parser()
    p.description = __doc__.splitlines()[0]
    p.set_defaults(positions=8192, device="cuda", dtype="bf16")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(
            "G1 needs a CUDA GPU; none is available here (torch.cuda.is_available() is False). Nothing measured."
        )
        sys.exit(2)
    print(f"G1: KD (jsd beta={args.beta}) fwd+bwd, V={b2.VOCAB}, Hs={b2.STUDENT_H}, Ht={b2.TEACHER_H}, "
          f"{args.positions} positions, {args.dtype}, {torch.cuda.get_device_name()}, median of {args.repeats}")  # fmt: skip
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants.split(","):
            res[v] = r = b2.run_variant(v, args.positions, args.repeats, b2.common_args(args), Path(tmp))
            if "error" in r:
                print(f"{v:>6}: could not run: {r['error']}")
            else:
                print(
                    f"{v:>6}: {r['seconds'] * 1000:8.1f} ms {r['all_seconds']} s  extra peak {r['extra_bytes'] / 2**30:6.2f} GiB"
                )
    ours, liger = res.get("ours", {}), res.get("liger", {})
    if "seconds" in ours and "seconds" in liger:
        tr, mr = ours["seconds"] / liger["seconds"], ours["extra_bytes"] / liger["extra_bytes"]
        print(f"ours/liger: time {tr:.2f}x (target <= 1.2: {'OK' if tr <= 1.2 else 'MISSED'}), "
              f"extra memory {mr:.2f}x (target <= 1: {'OK' if mr <= 1.0 else 'MISSED'})")  # fmt: skip
    if "seconds" in ours and "seconds" in res.get("naive", {}):
        n = res["naive"]
        print(
            f"ours/naive: time {ours['seconds'] / n['seconds']:.2f}x, extra memory {ours['extra_bytes'] / n['extra_bytes']:.3f}x"
        )
    ref = res.get("naive", {}).get("tensors")
    for v in ("ours", "liger"):
        if ref is not None and "tensors" in res.get(v, {}):
            print(f"{v} vs naive: {b2.agreement(res[v]['tensors'], ref)}")


if __name__ == "__main__":
    main()
