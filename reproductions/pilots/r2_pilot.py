"""R2 pilot: the cheapest CoT-ICL settings where the all-CoT model learns the task (issue #17 item 4).

The recorded R2 sweep is only informative if its models learn the task: an alpha = 0 (all-CoT)
model should answer well when every context example shows its CoT (drop 0). Each candidate below
is ONE run (alpha = 0, seed 0) of ``recipes/reproductions/r2_cot_recipe.yaml`` with generator and
recipe overrides, evaluated at drop 0 (greedy, the eval split); the pick is the candidate with the
smallest estimated sweep wall time (15 models, each trained and evaluated at 5 drop levels) among
those whose accuracy reaches ``--threshold`` (0.7) within ``--budget-min`` (35 minutes).

Run from the repository root (resumable: finished runs and their evaluations are reused)::

    OMP_NUM_THREADS=1 .venv/bin/python reproductions/pilots/r2_pilot.py --out /tmp/r2_pilot

``--only a,b`` runs some candidates; the report (``reproductions/R2_pilot.md``) lists every
candidate run so far under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RECIPE = "recipes/reproductions/r2_cot_recipe.yaml"
SWEEP_MODELS = 15  # alpha in {0, 0.5, 1, 2, inf} x 3 seeds
SWEEP_DROP_LEVELS = 5  # each model evaluated at drop 0, 25%, 50%, 75%, 100%

# The task family the recorded R2 CPU size used before this pilot (issue #17 item 4 found it at
# ~0.4 answer accuracy for every alpha): every candidate starts from it.
BASE_GENERATOR: dict[str, Any] = {
    "base": "cot_recipe_hybrid_alpha0",
    "vocab_size": 32,
    "n_dims": 8,
    "n_inputs_choices": [3],
    "n_parents_choices": [1],
    "chain_length_choices": [2],
    "n_examples_choices": [5],
    "num_unique_h": 1,
    "num_tasks": 4096,
    "num_eval_tasks": 512,
}
_N2K9 = {"n_inputs_choices": [2], "n_examples_choices": [9]}
_N1K9 = {"n_inputs_choices": [1], "n_examples_choices": [9]}
# name -> (why, generator overrides, recipe overrides). In the order they were tried.
CANDIDATES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "base500": ("the recorded setting (N=3, K=5; 500 steps)", {}, {"max_steps": 500}),
    "base1500": ("3x the steps", {}, {"max_steps": 1500}),
    "n2_1000": ("2 inputs: 6 DAGs instead of 12", {"n_inputs_choices": [2]}, {"max_steps": 1000}),
    "k9_1000": (
        "K=9: 8 context examples, 2x the in-context examples per row",
        {"n_examples_choices": [9]},
        {"max_steps": 1000},
    ),
    "n2k9_1000": ("2 inputs and K=9", _N2K9, {"max_steps": 1000}),
    "n2k9_lr1e-2": ("2 inputs, K=9, lr 1e-2 (3.3x)", _N2K9, {"max_steps": 1000, "learning_rate": 1e-2}),
    "n2k9v25_lr1e-2": (
        "... and 16 usable tokens (V=25)",
        _N2K9 | {"vocab_size": 25},
        {"max_steps": 1000, "learning_rate": 1e-2},
    ),
    "n1k9_800": (
        "1 input: the CoT token is H(x); the context shows whether the answer is H(x) or H(H(x))",
        _N1K9,
        {"max_steps": 800},
    ),
    "n1k5_1000": ("1 input, K=5", {"n_inputs_choices": [1]}, {"max_steps": 1000}),
    "n1k9_500": (
        "1 input, K=9, 500 steps (both N=1 runs had converged by step ~500), run alone",
        _N1K9,
        {"max_steps": 500},
    ),
}


def candidate_specs(name: str, out: Path) -> tuple[Path, dict[str, Any]]:
    """Write candidate ``name``'s generator YAML under ``out``; return it and its sweep spec."""
    import yaml

    _, gen, recipe = CANDIDATES[name]
    gen_file = out / "generators" / f"{name}.yaml"
    gen_file.parent.mkdir(parents=True, exist_ok=True)
    gen_file.write_text(yaml.safe_dump({"name": f"r2_pilot_{name}"} | BASE_GENERATOR | gen, sort_keys=False))
    spec = {
        "recipe": RECIPE,
        "output_root": str(out / name),
        "grid": {"seed": [0]},
        "set": {"dataset_name": f"generator:{gen_file}", "logging_steps": 100} | recipe,
    }
    return gen_file, spec


def run_candidate(name: str, out: Path, eval_tasks: int | None) -> dict[str, Any]:
    """Train candidate ``name`` (alpha 0, seed 0; skipped when finished) and evaluate it at drop 0."""
    import yaml

    from hf_cot_distill.experiments.reproduce import _Evaluator, _in_repo_root, generator_config
    from hf_cot_distill.pipelines.sweep import run_sweep

    _, spec = candidate_specs(name, out)
    sweep_file = out / f"{name}.sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    with _in_repo_root():
        (entry,) = run_sweep(sweep_file)
        if entry["status"] != "ok":
            raise RuntimeError(f"pilot candidate {name}: training failed: {entry.get('error')}")
        config = generator_config(spec, entry["point"])
    folder = Path(entry["output_dir"])
    timing_file = folder / "pilot_eval_time.json"
    start = time.perf_counter()
    (res,) = _Evaluator(eval_tasks)(folder, config, [0])
    if not timing_file.is_file():  # the first evaluation's time (later calls read the cache)
        timing_file.write_text(json.dumps({"eval_s": time.perf_counter() - start}))
    loss = entry["metrics"].get("train_loss")
    return {
        "name": name,
        "answer_accuracy": res["answer_accuracy"],
        "chain_accuracy": res["chain_accuracy"],
        "baseline_best": max(res[f"baseline_{b}"] for b in ("marginal_majority", "in_context_majority")),
        "eval_count": res["count"],
        "train_loss": loss,
        "train_s": float(entry["metrics"]["wall_time_s"]),
        "eval_s": json.loads(timing_file.read_text())["eval_s"],
    }


def sweep_estimate_s(result: dict[str, Any]) -> float:
    """Estimated wall time of the 15-model sweep at ``result``'s settings: every model trains as
    long as this one and evaluates at 5 drop levels as long as this one did at drop 0."""
    return SWEEP_MODELS * (result["train_s"] + SWEEP_DROP_LEVELS * result["eval_s"])


def pick(results: Sequence[dict[str, Any]], threshold: float = 0.7, budget_s: float = 35 * 60) -> dict | None:
    """The candidate with the smallest estimated sweep time among those with drop-0 answer
    accuracy >= ``threshold`` and an estimate within ``budget_s``; ``None`` when none qualifies."""
    ok = [r for r in results if r["answer_accuracy"] >= threshold and sweep_estimate_s(r) <= budget_s]
    return min(ok, key=sweep_estimate_s, default=None)


def _overrides(values: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        return "/".join(map(str, v)) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={short(v)}" for k, v in values.items()) or "-"


def report(results: Sequence[dict[str, Any]], threshold: float, budget_s: float) -> str:
    """The pilot's markdown table (one row per result of a :data:`CANDIDATES` entry) and its pick."""
    from hf_cot_distill.core.tables import markdown_table

    head = ["candidate", "why", "generator overrides", "recipe overrides", "answer acc (drop 0)"]
    head += ["chain acc", "best chance baseline", "train loss", "train s", "eval s", "est. sweep min"]
    rows = [
        [
            r["name"],
            CANDIDATES[r["name"]][0],
            _overrides(CANDIDATES[r["name"]][1]),
            _overrides(CANDIDATES[r["name"]][2]),
            f"{r['answer_accuracy']:.3f}",
            f"{r['chain_accuracy']:.3f}",
            f"{r['baseline_best']:.3f}",
            f"{r['train_loss']:.3f}" if r["train_loss"] is not None else "n/a",
            f"{r['train_s']:.0f}",
            f"{r['eval_s']:.1f}",
            f"{sweep_estimate_s(r) / 60:.1f}",
        ]
        for r in results
    ]
    chosen = pick(results, threshold, budget_s)
    verdict = (
        f"**Picked: `{chosen['name']}`** (drop-0 answer accuracy {chosen['answer_accuracy']:.3f} >= "
        f"{threshold}; estimated sweep {sweep_estimate_s(chosen) / 60:.1f} min <= {budget_s / 60:.0f} min)."
        if chosen
        else f"**No candidate reached {threshold} within {budget_s / 60:.0f} min of estimated sweep time.**"
    )
    return markdown_table(head, rows) + "\n" + verdict + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the pilot's models (outside the repository)")
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--eval-tasks", type=int, default=None, help="eval tasks (default: the config's)")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--budget-min", type=float, default=35.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(CANDIDATES)
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"--only: unknown candidates {unknown}; known: {list(CANDIDATES)}")
    for name in names:  # one result file per candidate: pilots may run side by side on one --out
        result = run_candidate(name, out, args.eval_tasks)
        print(f"[r2 pilot] {name}: {json.dumps(result)}", flush=True)
        (out / name / "pilot_result.json").write_text(json.dumps(result, indent=1))
    files = [out / n / "pilot_result.json" for n in CANDIDATES]
    results = [json.loads(f.read_text()) for f in files if f.is_file()]
    print(report(results, args.threshold, args.budget_min * 60))


if __name__ == "__main__":
    main()
