"""B3: selective KD (only the second half of the positions, the "CoT", carries KD) vs KD everywhere.

Same fused loss, same shapes as B2 (V=151,936, Hs=896, Ht=1536, 2,048 positions, fp32, CPU);
each variant in a fresh subprocess (the child runner of b2_kd_memory.py). Target: time <= 0.55x,
extra memory not higher. Skipped positions must cost nothing (they are not masked).

    python benchmarks/b3_selective_kd.py [--positions 2048] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import b2_kd_memory as b2


def main() -> None:
    p = b2.parser()
    p.description = __doc__.splitlines()[0]
    args = p.parse_args()
    print(f"B3: fused KD (jsd beta={args.beta}) fwd+bwd, V={b2.VOCAB}, {args.positions} positions, {args.dtype}, "
          f"{args.device}, {args.threads} threads, median of {args.repeats}")  # fmt: skip
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in ("ours", "ours_half"):
            res[v] = r = b2.run_variant(v, args.positions, args.repeats, b2.common_args(args), Path(tmp))
            if "error" in r:
                raise SystemExit(f"{v}: could not run: {r['error']}")
            label = "all positions" if v == "ours" else "half (KD on 2nd half)"
            print(
                f"{label:>22}: {r['seconds']:7.2f} s {r['all_seconds']}  extra peak {r['extra_bytes'] / 2**30:6.2f} GiB"
            )
    tr = res["ours_half"]["seconds"] / res["ours"]["seconds"]
    mr = res["ours_half"]["extra_bytes"] / res["ours"]["extra_bytes"]
    print(f"half/all: time {tr:.2f}x (target <= 0.55: {'OK' if tr <= 0.55 else 'MISSED'}), "
          f"extra memory {mr:.2f}x (target <= 1: {'OK' if mr <= 1.0 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
