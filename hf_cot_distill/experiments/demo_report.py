"""The demo's report: per-variant figures -> ``report.json``, ``REPORT.md`` and the quality-vs-compute plot.

Compute figures come from what training saved in each model folder (``log_history.json``: the
trainer's cumulative tokens per section, counted FLOPs and peak memory at the last logging
step; ``train_metrics.json``: wall time); accuracies from the demo's own evaluation.
The main table of ``REPORT.md`` (header ``TABLE_COLUMNS``) is written by
:func:`hf_cot_distill.core.tables.markdown_table`; :func:`~hf_cot_distill.core.tables.parse_markdown_table`
with first header ``"variant"`` reads it back (the tests compare it with ``report.json``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hf_cot_distill.core.sections import CONTENT_SECTION_NAMES
from hf_cot_distill.core.tables import markdown_table

BASELINES = ("uniform", "marginal_majority", "in_context_majority")
TABLE_COLUMNS = (
    "variant",
    "answer_accuracy",
    "chain_accuracy",
    "cot_token_accuracy",
    "answer_accuracy_no_context_cot",
    "tokens_forwarded",
    "kd_tokens_p/c/a",
    "ce_tokens_p/c/a",
    "flops_counted",
    "peak_memory_mb",
    "wall_time_s",
)


def _last_compute_log(folder: Path) -> dict[str, Any]:
    """The last training log entry with compute counts (they are cumulative)."""
    path = folder / "log_history.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: training of {folder.name} did not finish.")
    entries = [e for e in json.loads(path.read_text()) if "tokens_forwarded" in e]
    if not entries:
        raise ValueError(f"{path}: no entry with tokens_forwarded; set logging_steps <= max_steps.")
    return entries[-1]


def collect_variant(folder: Path, name: str, description: str, evals: list[dict]) -> dict[str, Any]:
    """One variant's record: accuracies (per drop-k), baselines, tokens, FLOPs, memory, time."""
    log = _last_compute_log(folder)
    train_metrics = json.loads((folder / "train_metrics.json").read_text())
    by_k = {int(e["drop_k"]): e for e in evals}
    full = by_k[min(by_k)]
    no_cot = by_k[max(by_k)]
    return {
        "variant": name,
        "description": description,
        "folder": folder.name,
        "model_card": f"{folder.name}/README.md",
        "eval_count": int(full["count"]) if "count" in full else None,
        "answer_accuracy": float(full["answer_accuracy"]),
        "chain_accuracy": float(full["chain_accuracy"]),
        "cot_token_accuracy": float(full["position_accuracy"][0]),
        "answer_accuracy_no_context_cot": float(no_cot["answer_accuracy"]),
        "drop_k_no_context_cot": max(by_k),
        "baselines": {b: float(full[f"baseline_{b}"]) for b in BASELINES},
        "tokens_forwarded": int(log["tokens_forwarded"]),
        "tokens_kd": {s: int(log[f"tokens_kd/{s}"]) for s in CONTENT_SECTION_NAMES},
        "tokens_ce": {s: int(log[f"tokens_ce/{s}"]) for s in CONTENT_SECTION_NAMES},
        "flops_counted": float(log["flops_counted"]),
        "flops_teacher": float(log.get("flops_teacher", 0.0)),
        "peak_memory_mb": float(log["peak_memory_mb"]),
        "wall_time_s": float(train_metrics["wall_time_s"]),
        "steps": int(log.get("step", 0)),
    }


def _cells(r: dict[str, Any]) -> list[str]:
    per_section = lambda d: "/".join(f"{d[s]:,}" for s in CONTENT_SECTION_NAMES)  # noqa: E731
    return [
        r["variant"],
        f"{r['answer_accuracy']:.3f}",
        f"{r['chain_accuracy']:.3f}",
        f"{r['cot_token_accuracy']:.3f}",
        f"{r['answer_accuracy_no_context_cot']:.3f}",
        f"{r['tokens_forwarded']:,}",
        per_section(r["tokens_kd"]),
        per_section(r["tokens_ce"]),
        f"{r['flops_counted']:.3e}",
        f"{r['peak_memory_mb']:.1f}",
        f"{r['wall_time_s']:.1f}",
    ]


def plot_quality_vs_compute(results: list[dict[str, Any]], path: Path) -> Path:
    """Answer and CoT-token accuracy vs counted training FLOPs, one labelled point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        x = r["flops_counted"]
        ax.scatter([x], [r["answer_accuracy"]], marker="o", color="tab:blue")
        ax.scatter([x], [r["cot_token_accuracy"]], marker="^", color="tab:green")
        ax.annotate(r["variant"], (x, r["answer_accuracy"]), textcoords="offset points", xytext=(6, 6))
    base = results[0]["baselines"]
    styles = {"uniform": ":", "marginal_majority": "--", "in_context_majority": "-."}
    for name, value in base.items():
        ax.axhline(value, color="grey", linestyle=styles[name], linewidth=1, label=f"baseline: {name}")
    ax.scatter([], [], marker="o", color="tab:blue", label="answer accuracy")
    ax.scatter([], [], marker="^", color="tab:green", label="CoT-token accuracy")
    ax.set_xscale("log")
    ax.set_xlabel("counted training FLOPs (student + teacher forwards)")
    ax.set_ylabel("accuracy (greedy, eval split, drop-k 0)")
    ax.set_ylim(0, 1)
    ax.set_title("Quality vs compute")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stderr(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` over ``n`` tasks (shrunk away from 0 and 1)."""
    n = max(n, 1)
    p = (p * n + 0.5) / (n + 1)
    return math.sqrt(p * (1 - p) / n)


def findings(results: list[dict[str, Any]], size: str) -> list[str]:
    """Plain statements of what the numbers show (and do not show)."""
    by = {r["variant"]: r for r in results}
    teacher, full, cot = by["teacher"], by["student_full_kd"], by["student_cot_lsp0.5"]
    n = teacher["eval_count"] or 1
    best_name, best = max(teacher["baselines"].items(), key=lambda kv: kv[1])
    out = []
    if size != "full":
        out.append(
            "This is the reduced (`small`) smoke run: a few steps on a few tasks. Its accuracies say "
            "nothing about the methods; only the accounting (tokens, FLOPs) is meaningful."
        )
    margin = teacher["answer_accuracy"] - best
    se = _stderr(teacher["answer_accuracy"], n)
    verdict = "clearly above" if margin > 2 * se else "NOT clearly above"
    out.append(
        f"Teacher answer accuracy {teacher['answer_accuracy']:.3f} is {verdict} the best chance baseline "
        f"({best_name} {best:.3f}; ±{se:.3f} one standard error over {n} eval tasks)."
    )
    ratio_tokens = cot["tokens_forwarded"] / max(full["tokens_forwarded"], 1)
    ratio_flops = cot["flops_counted"] / max(full["flops_counted"], 1)
    ratio_time = cot["wall_time_s"] / max(full["wall_time_s"], 1e-9)
    out.append(
        f"Lead-span 0.5 forwards {ratio_tokens:.3f}× the tokens of the full-sequence student "
        f"(⌊L/2⌋ of each sequence), at {ratio_flops:.3f}× the counted FLOPs and {ratio_time:.2f}× the "
        "wall time"
        + (
            " (fixed per-step costs — optimizer, data, Python — do not halve)."
            if ratio_time > ratio_tokens
            else " (wall time is noisy when other jobs share the CPU)."
        )
    )
    kd_sections = [s for s in CONTENT_SECTION_NAMES if cot["tokens_kd"][s] > 0]
    out.append(
        f"The CoT-only student got KD on {kd_sections or 'no'} section(s) only; it never receives a "
        "loss on the answer markers or the answer token (in CoT-ICL Lab the answer is a separate chain "
        "step, not contained in the CoT), so its answer accuracy measures what it picked up from "
        "context alone; its CoT-token accuracy is the like-for-like comparison."
    )
    for metric, label in (("answer_accuracy", "answer"), ("cot_token_accuracy", "CoT-token")):
        a, b = full[metric], cot[metric]
        se2 = math.hypot(_stderr(a, n), _stderr(b, n))
        if abs(a - b) <= 2 * se2:
            out.append(
                f"Students' {label} accuracy: full {a:.3f} vs CoT-only lsp0.5 {b:.3f} — no difference "
                f"beyond noise (±{2 * se2:.3f}) at this size."
            )
        else:
            better = "full-sequence" if a > b else "CoT-only lsp0.5"
            out.append(
                f"Students' {label} accuracy: full {a:.3f} vs CoT-only lsp0.5 {b:.3f}: {better} is higher."
            )
    out.append(
        "Peak memory is the process's peak resident memory; with models this small it is dominated by "
        "the Python/PyTorch runtime, so it shows no memory saving from truncation here (the paper's "
        "memory effect comes from long sequences and large vocabularies)."
    )
    return out


def write_report(
    out: Path,
    results: list[dict[str, Any]],
    *,
    dataset_name: str,
    config: Any,
    size: str,
    isolated: bool,
    total_wall_time_s: float,
) -> Path:
    """Write ``report.json``, ``quality_vs_compute.png`` and ``REPORT.md`` into ``out``."""
    out = Path(out)
    plot = plot_quality_vs_compute(results, out / "quality_vs_compute.png")
    notes = findings(results, size)
    payload = {
        "size": size,
        "isolated_processes": isolated,
        "total_wall_time_s": total_wall_time_s,
        "dataset": {"name": dataset_name, "folder": "dataset", "card": "dataset/README.md"},
        "generator": {
            "vocab_size": config.vocab_size,
            "n_usable": config.n_usable,
            "num_tasks": config.num_tasks,
            "num_eval_tasks": config.num_eval_tasks,
        },
        "variants": results,
        "findings": notes,
    }
    (out / "report.json").write_text(json.dumps(payload, indent=2))
    base = results[0]["baselines"]
    memory_note = (
        "each model trained in its own process (peak = that process's peak RSS)"
        if isolated
        else "all models trained in one process: peak RSS is cumulative, so later rows include earlier ones"
    )
    lines = [
        "# hf_cot_distill demo report",
        "",
        f"Size: `{size}`. Total wall time: {total_wall_time_s:.1f} s. Data: `{dataset_name}` "
        f"(CoT-ICL Lab, vocab {config.vocab_size} with {config.n_usable} usable ids, "
        f"{config.num_tasks} training tasks, {config.num_eval_tasks} eval tasks) — "
        "[dataset card](dataset/README.md).",
        "",
        "## Results",
        "",
        markdown_table(TABLE_COLUMNS, [_cells(r) for r in results]),  # ends with "\n": the blank line
        f"Accuracies: greedy decoding on the eval split, drop-k 0; `answer_accuracy_no_context_cot` drops "
        f"the think block from all {results[0]['drop_k_no_context_cot']} context examples. "
        "`cot_token_accuracy` = the chain token before the answer. Tokens: cumulative over training "
        "(`kd_tokens_p/c/a` = KD positions in prompt / CoT / answer). FLOPs: counted by "
        f"`hf_cot_distill.models.compute` (student forward+backward, teacher forward). Memory: {memory_note}. "
        "Wall time: training only (model build to save).",
        "",
        "Chance baselines (eval split): " + ", ".join(f"{k} {v:.3f}" for k, v in base.items()) + ".",
        "",
        "## What the numbers show",
        "",
        *[f"- {note}" for note in notes],
        "",
        f"![quality vs compute]({plot.name})",
        "",
        "## Models and cards",
        "",
        *[f"- `{r['variant']}`: {r['description']} — [model card]({r['model_card']})" for r in results],
        "- dataset: [dataset card](dataset/README.md)",
        "",
        "The model cards are rendered as `hf-cot-distill train` writes them (their eval section is the "
        "training-end check on the first (up to) 64 eval tasks); the table above is the demo's own evaluation.",
        "",
    ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
