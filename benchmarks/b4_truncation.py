"""B4: truncation end to end — SectionKDTrainer steps at lead-span proportion 0.5 vs 1.0.

Tiny Qwen2 student (hidden 64, ~9.8M params, tied embeddings) and teacher (hidden 128, ~19.7M)
at the real Qwen2.5 vocabulary (151,936 rows), 1,024-token sequences, batch 2, fp32, paper
objective (0.5·CE + 0.5·forward KL) on every section (so only truncation differs between the
variants; with CoT + answer supervision, cutting at 0.5 also drops the answer and the
supervised positions fall by more than half).

Section lengths (``--sections``): ``champ`` (default) draws each row's (prompt, CoT, answer)
token lengths from real CHAMP traces tokenized with the Qwen2.5 tokenizer
(``trace_length_profile.json``, written by ``b0_trace_stats.py``), each triple rescaled to
the 1,024-token row keeping its shares; rows vary (prompt 7-42% in a sample of eight) and
average about 16% / 76% / 8% (every trace counts once, so short human solutions with a larger
prompt share weigh as much as long model traces; CHAMP's token-weighted shares are 12% / 81% /
7%). The shares a run trained on are printed. ``fixed`` is the former 10% / 80% / 10% split of
every row. Token ids stay uniform random (timing does not
depend on them).
Each variant runs in a fresh process; a wrapper process between us and the worker reports the
worker's ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (exactly that worker's peak RSS). Step time:
median of the timed steps (after one warm-up step) of ``--repeats`` fresh workers per variant, run
alternately (A B A B ...) so that load from other jobs hits both alike. Counted FLOPs: the trainer's
:mod:`hf_cot_distill.models.compute` totals per step.

    python benchmarks/b4_truncation.py [--steps 4] [--threads 2] [--repeats 3] [--sections champ|fixed]
    python benchmarks/b4_truncation.py --profile lsp_0.5     # where one step's time goes

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
PROFILE_PATH = ROOT / "benchmarks" / "trace_length_profile.json"
SECTION_MODES = ("champ", "fixed")


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


def row_section_lengths(n: int, sections: str = "champ", seed: int = 0) -> list[tuple[int, int, int]]:
    """``n`` ``(prompt, cot, answer)`` length triples summing to ``SEQ``.

    ``champ``: drawn from the real CHAMP trace profile (``messages`` layout) and rescaled to
    ``SEQ`` (``b0_trace_stats.section_lengths``); ``fixed``: 10% / 80% / 10% for every row.
    """
    if sections == "fixed":
        p = a = SEQ // 10
        return [(p, SEQ - p - a, a)] * n
    if sections != "champ":
        raise ValueError(f"sections: {sections!r} is not one of {SECTION_MODES}; fix: pick one of them.")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from b0_trace_stats import section_lengths

    return section_lengths(PROFILE_PATH, "messages", n, seq_len=SEQ, seed=seed)


def make_rows(n: int, seed: int = 0, sections: str = "champ") -> list[dict[str, Any]]:
    """``n`` rows of 1,024 random ids (below 151,643) with section lengths per ``sections``."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, c, a in row_section_lengths(n, sections, seed):
        section_ids = [1] * p + [2] * c + [3] * a
        rows.append({"input_ids": rng.integers(10, 151_643, SEQ).tolist(), "section_ids": section_ids})
    return rows


def section_shares(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of prompt / CoT / answer tokens over ``rows`` (what a run actually trained on)."""
    ids = np.concatenate([np.asarray(r["section_ids"]) for r in rows])
    return {name: float((ids == s).mean()) for s, name in ((1, "prompt"), (2, "cot"), (3, "answer"))}


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


def naive_logits_trainer() -> type:
    """SectionKDTrainer whose loss materialises the full ``(B, T, V)`` student and teacher logits
    (the usual KD implementation): same data path, truncation, weights and objective (CE + forward
    KL at T=1 over the weighted positions), only the loss computation differs. The baseline that
    shows what the 0.6x peak-memory target of B4 is about."""
    import torch
    import torch.nn.functional as F

    from hf_cot_distill.trainers import SectionKDTrainer

    class NaiveLogitsKDTrainer(SectionKDTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
            inputs = dict(inputs)
            inputs.pop("truncation_accounting", None)
            fwd = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
            kd_w, ce_w = inputs["kd_weights"][:, 1:], inputs["ce_weights"][:, 1:]
            logp = F.log_softmax(model(**fwd).logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
            with torch.no_grad():
                t_logp = F.log_softmax(self.teacher_model(**fwd).logits[:, :-1].float(), dim=-1)
            kl = (t_logp.exp() * (t_logp - logp)).sum(-1)  # (B, T-1) forward KL per position
            labels = inputs["labels"][:, 1:].clamp(min=0)
            ce = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            n_kd, n_ce = (kd_w > 0).sum().clamp(min=1), (ce_w > 0).sum().clamp(min=1)
            # kd_weights / ce_weights already carry kd_weight / ce_weight (as in the fused loss).
            return (kd_w * kl).sum() / n_kd + (ce_w * ce).sum() / n_ce

    return NaiveLogitsKDTrainer


def run_ours(
    steps: int, threads: int, sections: str = "champ", naive: bool = False, **config: Any
) -> dict[str, Any]:
    """Train ``steps`` SectionKDTrainer steps (``naive``: the full-logits baseline trainer); return
    step times, first loss and per-step FLOPs."""
    import torch
    from datasets import Dataset

    from hf_cot_distill.trainers import SectionKDConfig, SectionKDTrainer

    torch.set_num_threads(threads)
    student, teacher = build_models()
    timer = StepTimer()
    rows = make_rows(BATCH * steps, sections=sections)
    trainer_cls = naive_logits_trainer() if naive else SectionKDTrainer
    with tempfile.TemporaryDirectory() as out:
        args = SectionKDConfig(**common_args(out, steps), **config)
        trainer = trainer_cls(
            student, teacher, args=args, train_dataset=Dataset.from_list(rows), callbacks=[timer.callback],
        )  # fmt: skip
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    acc = trainer.compute_accounting
    return {
        "step_times": timer.times,
        "first_loss": logs[0]["loss"],
        "flops_per_step": acc.total_flops / steps if not naive else float("nan"),
        "tokens_forwarded_per_step": acc.tokens_forwarded / steps,
        "kd_positions_per_step": int(acc.kd_tokens.sum()) / steps,
        "section_shares": section_shares(rows),
    }


def measure(
    script: str, variant: str, steps: int, threads: int, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run ``variant`` in a worker behind a wrapper process; add the worker's peak RSS."""
    cmd = [
        sys.executable,
        script,
        "--wrap",
        variant,
        "--steps",
        str(steps),
        "--threads",
        str(threads),
        *extra,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wrap(script: str, variant: str, steps: int, threads: int, extra: tuple[str, ...] = ()) -> None:
    """(wrapper process) run the worker, then print its result plus RUSAGE_CHILDREN peak RSS."""
    cmd = [
        sys.executable,
        script,
        "--worker",
        variant,
        "--steps",
        str(steps),
        "--threads",
        str(threads),
        *extra,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    print(json.dumps(result))


def profile_step(variant: str, threads: int, sections: str, top: int = 25) -> None:
    """Profile the steps after a warm-up one of ``variant``: torch ops (self CPU time) and Python
    functions (cProfile, cumulative), per step."""
    import cProfile
    import pstats

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from hf_cot_distill.trainers import SectionKDConfig, SectionKDTrainer

    torch.set_num_threads(threads)
    student, teacher = build_models()
    profiled_steps = 2
    state: dict[str, Any] = {}

    class Profiler(TrainerCallback):  # start after the warm-up step, stop after the last
        def on_step_begin(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            if st.global_step == 1:
                state["torch"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                state["torch"].__enter__()
                state["py"] = cProfile.Profile()
                state["py"].enable()
                state["t0"] = time.perf_counter()

        def on_step_end(self, args: Any, st: Any, control: Any, **kw: Any) -> None:
            if st.global_step == 1 + profiled_steps:
                state["py"].disable()
                state["torch"].__exit__(None, None, None)
                state["wall"] = time.perf_counter() - state["t0"]

    steps = 1 + profiled_steps
    with tempfile.TemporaryDirectory() as out:
        args = SectionKDConfig(**common_args(out, steps), **VARIANTS[variant])
        rows = make_rows(BATCH * steps, sections=sections)
        trainer = SectionKDTrainer(
            student, teacher, args=args, train_dataset=Dataset.from_list(rows), callbacks=[Profiler()]
        )
        trainer.train()
    print(f"B4 profile, {variant}, {threads} threads: {state['wall'] / profiled_steps:.2f} s/step "
          f"(mean of {profiled_steps} steps after a warm-up)")  # fmt: skip
    table = state["torch"].key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    print(table)
    stats = pstats.Stats(state["py"])
    stats.sort_stats("cumulative").print_stats(top)


def timed(result: dict[str, Any]) -> float:
    """Median step time over the steps after the first (warm-up) of every repeat."""
    runs = result.get("repeat_step_times", [result["step_times"]])
    return statistics.median(t for times in runs for t in times[1:])


def measure_alternating(
    script: str, variants: list[str], repeats: int, steps: int, threads: int, extra: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Measure every variant ``repeats`` times, alternating (A B A B ...) so that load from other jobs
    on a shared machine hits the variants alike. Per variant: the last repeat's result, with
    ``repeat_step_times`` (all repeats) and ``peak_rss_gb`` the median over repeats."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            runs[v].append(measure(script, v, steps, threads, extra))
    out = {}
    for v, results in runs.items():
        out[v] = {**results[-1], "repeat_step_times": [r["step_times"] for r in results]}
        out[v]["peak_rss_gb"] = statistics.median(r["peak_rss_gb"] for r in results)
    return out


FULL = {"supervision_preset": "prompt+cot+answer"}  # supervise every kept token: only truncation varies
LSP_05 = {"truncation_policy": "lead_span_proportion", "truncation_kwargs": {"lead_span_proportion": 0.5}}
VARIANTS: dict[str, dict[str, Any]] = {
    "lsp_1.0": FULL,
    "lsp_0.5": {**FULL, **LSP_05},
    # The same two with the full-logits baseline loss (``--naive``): what a 0.6x peak target is about.
    "naive_lsp_1.0": {**FULL, "naive": True},
    "naive_lsp_0.5": {**FULL, **LSP_05, "naive": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4, help="steps per variant (first = warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant, alternating")
    parser.add_argument(
        "--sections", choices=SECTION_MODES, default="champ",
        help="row section lengths: real CHAMP shares (default) or the former fixed 10/80/10 split",
    )  # fmt: skip
    parser.add_argument(
        "--profile",
        choices=[v for v in VARIANTS if not v.startswith("naive")],
        help="profile this variant's steps and exit",
    )
    parser.add_argument(
        "--naive", action="store_true",
        help="also run both variants with the full-logits KD baseline loss (peak ~7 GB at 1.0)",
    )  # fmt: skip
    parser.add_argument("--worker")
    parser.add_argument("--wrap")
    a = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    extra = ("--sections", a.sections)
    if a.profile:
        profile_step(a.profile, a.threads, a.sections)
        return
    if a.worker:
        config = dict(VARIANTS[a.worker])
        naive = bool(config.pop("naive", False))
        print(json.dumps(run_ours(a.steps, a.threads, a.sections, naive=naive, **config)))
        return
    if a.wrap:
        wrap(__file__, a.wrap, a.steps, a.threads, extra)
        return
    names = [v for v in VARIANTS if a.naive or not v.startswith("naive")]
    res = measure_alternating(__file__, names, a.repeats, a.steps, a.threads, extra)
    base, ours = res["lsp_1.0"], res["lsp_0.5"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in base["section_shares"].items())
    print(
        f"B4 truncation, {a.threads} threads, batch {BATCH} x {SEQ} tokens, vocab {VOCAB}, {a.steps} steps/variant, "
        f"sections {a.sections} ({shares})"
    )
    for name, r in res.items():
        print(
            f"  {name}: step {timed(r):.2f} s (median of {a.repeats} x {len(r['step_times']) - 1}), peak RSS {r['peak_rss_gb']:.2f} GB, "
            f"first loss {r['first_loss']:.6f}, counted FLOPs/step {r['flops_per_step']:.3e}, "
            f"tokens forwarded/step {r['tokens_forwarded_per_step']:.0f}"
        )
    print(
        f"  ratio 0.5/1.0: step time {timed(ours) / timed(base):.3f}x, peak memory "
        f"{ours['peak_rss_gb'] / base['peak_rss_gb']:.3f}x, counted FLOPs {ours['flops_per_step'] / base['flops_per_step']:.3f}x"
    )
    if a.naive:
        nb, no = res["naive_lsp_1.0"], res["naive_lsp_0.5"]
        print(
            f"  full-logits baseline, ratio 0.5/1.0: step time {timed(no) / timed(nb):.3f}x, peak memory "
            f"{no['peak_rss_gb'] / nb['peak_rss_gb']:.3f}x"
        )
        print(
            f"  ours vs full-logits baseline: peak memory at 1.0 {base['peak_rss_gb'] / nb['peak_rss_gb']:.3f}x, "
            f"at 0.5 {ours['peak_rss_gb'] / no['peak_rss_gb']:.3f}x; ours at 1.0 vs baseline at 0.5 "
            f"{base['peak_rss_gb'] / no['peak_rss_gb']:.3f}x; step time at 1.0 {timed(base) / timed(nb):.3f}x"
        )


if __name__ == "__main__":
    main()
