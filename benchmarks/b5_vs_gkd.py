"""B5: the whole SectionKDTrainer vs TRL's GKDTrainer in supervised mode (same objective).

Models, data and measurement as in ``b4_truncation.py``: tiny Qwen2 student (~9.8M) and
teacher (~19.7M) at vocab 151,936, 1,024-token rows, batch 2, fp32, one fresh worker per
variant, peak RSS of that worker, median step time after one warm-up step. Row section lengths
(``--sections``, as in B4): ``champ`` (default) draws them from real CHAMP traces
(``trace_length_profile.json``, rescaled to 1,024 tokens; the prompt share varies per row,
which is what GKD's full-completion KD and our CoT-only KD see differently); ``fixed`` keeps
the former prompt 10% / CoT 80% / answer 10% split. Every variant gets the same rows.

Same objective, exactly:
* GKD: ``GKDConfig(lmbda=0, beta=0, temperature=1)`` (``lmbda=0``: never on-policy;
  ``beta=0``: ``generalized_jsd_loss`` is ``KL(teacher || student)``; GKD's loss runs at T=1
  whatever ``temperature`` says, which only drives sampling), labels = the token ids on CoT and
  answer tokens, -100 on the prompt; loss = sum of per-position KL over ``labels[:, 1:] != -100``
  divided by ``num_items_in_batch`` (that count).
* ours: ``SectionKDConfig(supervision_preset="cot+answer", kd_weight=1, ce_weight=0,
  divergence="forward_kl", temperature=1)`` and no tokenizer, so the real vocabulary is all
  151,936 lm_head rows, as GKD compares them; loss = sum of per-position KL over the KD
  positions (predicted token in CoT or answer) / their count. Same positions, same value.
* ours, CoT only: ``supervision_preset="cot"`` (the paper's recommendation).

    python benchmarks/b5_vs_gkd.py [--steps 4] [--threads 2] [--sections champ|fixed]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from b4_truncation import (
    BATCH,
    ROOT,
    SECTION_MODES,
    SEQ,
    VOCAB,
    StepTimer,
    build_models,
    common_args,
    make_rows,
    measure,
    run_ours,
    section_shares,
    timed,
    wrap,
)  # noqa: E402, I001

OURS_SAME = {
    "supervision_preset": "cot+answer",
    "kd_weight": 1.0,
    "ce_weight": 0.0,
    "divergence": "forward_kl",
}
OURS_COT = {"supervision_preset": "cot", "kd_weight": 1.0, "ce_weight": 0.0, "divergence": "forward_kl"}


def run_gkd(steps: int, threads: int, sections: str = "champ") -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from tests.qwen_tokenizers import load_qwen25_tokenizer

    torch.set_num_threads(threads)
    student, teacher = build_models()

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([f["input_ids"] for f in features])
        sections = torch.tensor([f["section_ids"] for f in features])
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.where(sections >= 2, ids, -100),
        }

    timer = StepTimer()
    rows = make_rows(BATCH * steps, sections=sections)
    with tempfile.TemporaryDirectory() as out:
        args = GKDConfig(**common_args(out, steps), lmbda=0.0, beta=0.0, temperature=1.0, max_length=None)
        trainer = GKDTrainer(
            model=student, teacher_model=teacher, args=args, data_collator=collate,
            train_dataset=Dataset.from_list(rows), processing_class=load_qwen25_tokenizer(),
            callbacks=[timer.callback],
        )  # fmt: skip
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {"step_times": timer.times, "first_loss": logs[0]["loss"], "section_shares": section_shares(rows)}


VARIANTS = {"gkd": None, "ours_same": OURS_SAME, "ours_cot": OURS_COT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant (first = warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sections", choices=SECTION_MODES, default="champ",
        help="row section lengths: real CHAMP shares (default) or the former fixed 10/80/10 split",
    )  # fmt: skip
    parser.add_argument("--worker")
    parser.add_argument("--wrap")
    a = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    extra = ("--sections", a.sections)
    if a.worker:
        cfg = VARIANTS[a.worker]
        if cfg is None:
            result = run_gkd(a.steps, a.threads, a.sections)
        else:
            result = run_ours(a.steps, a.threads, a.sections, **cfg)
        print(json.dumps(result))
        return
    if a.wrap:
        wrap(__file__, a.wrap, a.steps, a.threads, extra)
        return
    res = {v: measure(__file__, v, a.steps, a.threads, extra) for v in VARIANTS}
    tokens = BATCH * SEQ
    shares = ", ".join(f"{k} {v:.1%}" for k, v in res["gkd"]["section_shares"].items())
    print(
        f"B5 vs TRL GKDTrainer, {a.threads} threads, batch {BATCH} x {SEQ} tokens, vocab {VOCAB}, fp32, "
        f"sections {a.sections} ({shares})"
    )
    for name, r in res.items():
        print(
            f"  {name}: first-step loss {r['first_loss']:.8f}, {tokens / timed(r):.1f} tokens/s "
            f"(step {timed(r):.2f} s, median of {len(r['step_times']) - 1}), peak RSS {r['peak_rss_gb']:.2f} GB"
        )
    g = res["gkd"]
    for name in ("ours_same", "ours_cot"):
        r = res[name]
        print(
            f"  {name} / gkd: |loss diff| {abs(r['first_loss'] - g['first_loss']):.2e}, tokens/s "
            f"{timed(g) / timed(r):.2f}x, peak {r['peak_rss_gb'] / g['peak_rss_gb']:.3f}x"
        )


if __name__ == "__main__":
    main()
