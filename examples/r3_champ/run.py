"""Run (or resume) the R3-champ reproduction seed by seed, writing the report after each seed.

The same as ``hf-cot-distill reproduce R3-champ --out OUT --threads 2`` (once the CLI lists the name),
but in stages: seeds [0], then [0, 1], then [0, 1, 2], so that a run stopped early still leaves a
report over every allocation x lead-span cell of the seeds done. Finished points are never retrained
(the sweep runner resumes them); re-running this script resumes where it stopped::

    python examples/r3_champ/run.py --out /work/r3_run
"""

from __future__ import annotations

import argparse
import time

from hf_cot_distill.experiments.reproduce import run_reproduction


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="reproductions/runs", help="model folders (keep out of git)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report-dir", default=None, help="default: reproductions/")
    a = parser.parse_args()
    for n in range(1, len(a.seeds) + 1):
        start = time.perf_counter()
        path = run_reproduction(
            "R3-champ", "cpu", a.out, seeds=a.seeds[:n], threads=a.threads, report_dir=a.report_dir
        )
        print(
            f"[R3-champ] seeds {a.seeds[:n]} done in {time.perf_counter() - start:.0f} s: {path}", flush=True
        )


if __name__ == "__main__":
    main()
