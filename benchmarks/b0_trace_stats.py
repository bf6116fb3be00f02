"""B0: section statistics of real reasoning traces (CHAMP) tokenized with the real Qwen2.5 tokenizer.

Not a speed benchmark: it measures the *data* that B4/B5 otherwise fake with uniform random
ids in fixed 10% / 80% / 10% sections. For each trace layout (``messages``, ``conversations``,
``prompt_completion``, ``reasoning_content``; the same traces in each) it prints the share of
PROMPT / COT / ANSWER tokens and per-sample length percentiles, and writes
``benchmarks/trace_length_profile.json`` (fields below; ``--append-results`` also appends the table
to ``benchmarks/RESULTS.md``).

Traces: the 270 human solutions and the model conversations of CHAMP v0 (``champ-dataset``,
dev extra) in the prompt settings whose last question is the bare problem, rendered by
:class:`hf_cot_distill.data.traces.encoding.ReasoningTraceEncoder` (no length limit) with the
Qwen2.5 tokenizer of ``tests/qwen_tokenizers.py`` (default system prompt included in PROMPT).
Sections follow ``hf_cot_distill.core.sections``: PROMPT ends with the assistant header, COT runs from
``<think>`` to the BPE token ``>\\n\\n`` that closes ``</think>``, ANSWER ends with ``<|im_end|>``.

    python benchmarks/b0_trace_stats.py [--limit N] [--samples 256] [--append-results]

JSON fields (``trace_length_profile.json``)::

    schema            "hf_cot_distill/trace_length_profile/v1"
    source            what was measured (dataset, trace counts, tokenizer, date, machine)
    percentile_method "numpy.percentile, linear interpolation"
    layouts.<layout>:
      n_traces             traces measured
      section_token_share  {prompt, cot, answer}: section tokens / all tokens (sums to 1)
      mean_tokens          {total, prompt, cot, answer}: mean tokens per trace
      percentiles          {total|prompt|cot|answer: {p10, p25, p50, p75, p90, p99, max}} tokens
      cot_fraction_percentiles  {p10 .. max}: per trace, cot tokens / total tokens
      by_source            {solution|model: {n_traces, section_token_share, mean_tokens}}
      samples              [[prompt, cot, answer], ...]: token lengths of an evenly spaced subset of
                           the traces sorted by total length (``--samples``), an empirical length
                           distribution to draw rows from (see :func:`section_lengths`)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROFILE_PATH = ROOT / "benchmarks" / "trace_length_profile.json"
RESULTS_PATH = ROOT / "benchmarks" / "RESULTS.md"
SECTIONS = ("prompt", "cot", "answer")
PERCENTILES = (10, 25, 50, 75, 90, 99)
SCHEMA = "hf_cot_distill/trace_length_profile/v1"


def section_lengths(
    profile_path: str | Path = PROFILE_PATH,
    layout: str = "messages",
    n: int = 1,
    *,
    seq_len: int | None = None,
    seed: int = 0,
) -> list[tuple[int, int, int]]:
    """Draw ``n`` ``(prompt, cot, answer)`` token lengths from a profile's ``samples`` (for B4/B5).

    With ``seq_len`` each triple is rescaled to sum to exactly ``seq_len`` keeping its proportions
    (every section at least one token), for benchmarks that need fixed-length rows.
    """
    profile = json.loads(Path(profile_path).read_text(encoding="utf-8"))
    samples = np.asarray(profile["layouts"][layout]["samples"], dtype=np.int64)
    picked = samples[np.random.default_rng(seed).integers(0, len(samples), n)]
    if seq_len is None:
        return [tuple(int(v) for v in row) for row in picked]
    if seq_len < 3:
        raise ValueError(f"seq_len: {seq_len} < 3; fix: one token per section at least.")
    out = []
    for p, c, a in picked:
        total = p + c + a
        p2 = max(1, round(seq_len * p / total))
        a2 = max(1, round(seq_len * a / total))
        out.append((p2, seq_len - p2 - a2, a2))
    return out


def _percentiles(values: np.ndarray) -> dict[str, float]:
    out = {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}
    out["max"] = float(values.max())
    return out


def _share(counts: np.ndarray) -> dict[str, float]:
    totals = counts.sum(axis=0)
    return {name: float(totals[i] / totals.sum()) for i, name in enumerate(SECTIONS)}


def _mean(counts: np.ndarray) -> dict[str, float]:
    means = {name: float(counts[:, i].mean()) for i, name in enumerate(SECTIONS)}
    return {"total": float(counts.sum(axis=1).mean()), **means}


def measure(tokenizer: Any, traces: list[Any], layout: str, n_samples: int) -> dict[str, Any]:
    """Encode ``traces`` in ``layout`` and summarise their section lengths."""
    from hf_cot_distill.core.sections import Section, section_counts
    from hf_cot_distill.data.traces.champ import to_format
    from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder

    encoder = ReasoningTraceEncoder(tokenizer, source_format=layout)
    counts = []
    for start in range(0, len(traces), 256):
        records = [to_format(t, layout) for t in traces[start : start + 256]]
        out = encoder({key: [r[key] for r in records] for key in records[0]})
        counts += [
            section_counts(s)[[Section.PROMPT, Section.COT, Section.ANSWER]] for s in out["section_ids"]
        ]
    counts_arr = np.asarray(counts, dtype=np.int64)  # (n_traces, 3)
    totals = counts_arr.sum(axis=1)
    order = np.argsort(totals, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, min(n_samples, len(order))).round().astype(int)]
    sources = np.asarray([t.source for t in traces])
    return {
        "n_traces": len(traces),
        "section_token_share": _share(counts_arr),
        "mean_tokens": _mean(counts_arr),
        "percentiles": {
            "total": _percentiles(totals),
            **{name: _percentiles(counts_arr[:, i]) for i, name in enumerate(SECTIONS)},
        },
        "cot_fraction_percentiles": _percentiles(counts_arr[:, 1] / totals),
        "by_source": {
            src: {
                "n_traces": int((sources == src).sum()),
                "section_token_share": _share(counts_arr[sources == src]),
                "mean_tokens": _mean(counts_arr[sources == src]),
            }
            for src in ("solution", "model")
            if (sources == src).any()
        },
        "samples": counts_arr[picks].tolist(),
    }


def dump(profile: dict[str, Any]) -> str:
    """The profile as JSON: floats rounded to 6 significant digits, one length triple per line."""

    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.6g}")
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    text = json.dumps(rounded(profile), indent=1)
    return re.sub(r"\[\s+(\d+),\s+(\d+),\s+(\d+)\s+\]", r"[\1, \2, \3]", text) + "\n"


def table(profile: dict[str, Any]) -> str:
    """Markdown table: one row per layout."""
    from hf_cot_distill.core.tables import markdown_table

    head = ["layout", "traces", "prompt %", "CoT %", "answer %", "total p50", "p90", "p99", "max"]
    head += ["prompt p50", "CoT p50", "CoT p90", "answer p50", "CoT share p50"]
    rows = []
    for layout, s in profile["layouts"].items():
        share, pct = s["section_token_share"], s["percentiles"]
        rows.append(
            [layout, s["n_traces"]]
            + [f"{100 * share[k]:.1f}" for k in ("prompt", "cot", "answer")]
            + [f"{pct['total'][q]:.0f}" for q in ("p50", "p90", "p99", "max")]
            + [
                f"{pct[k][q]:.0f}"
                for k, q in (("prompt", "p50"), ("cot", "p50"), ("cot", "p90"), ("answer", "p50"))
            ]
            + [f"{s['cot_fraction_percentiles']['p50']:.2f}"]
        )
    by_source = []
    for src, s in profile["layouts"]["messages"]["by_source"].items():
        share, mean = s["section_token_share"], s["mean_tokens"]
        by_source.append(
            f"- messages, {src} traces ({s['n_traces']}): prompt/CoT/answer {100 * share['prompt']:.1f}% / "
            f"{100 * share['cot']:.1f}% / {100 * share['answer']:.1f}% of tokens; mean {mean['total']:.0f} "
            f"tokens (prompt {mean['prompt']:.0f}, CoT {mean['cot']:.0f}, answer {mean['answer']:.0f})"
        )
    return markdown_table(head, rows) + "\n" + "\n".join(by_source) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N traces only (quick look)")
    parser.add_argument("--samples", type=int, default=256, help="length triples stored per layout")
    parser.add_argument("--out", type=Path, default=PROFILE_PATH)
    parser.add_argument("--append-results", action="store_true", help=f"append the table to {RESULTS_PATH}")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))  # tests/qwen_tokenizers.py builds the Qwen2.5 tokenizer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from hf_cot_distill.data.traces.champ import PROBLEM_ONLY_SETTINGS, TRACE_FORMATS, champ_traces
    from tests.qwen_tokenizers import load_qwen25_tokenizer

    t0 = time.perf_counter()
    tokenizer = load_qwen25_tokenizer()
    traces = champ_traces(settings=PROBLEM_ONLY_SETTINGS)[: args.limit]
    n_solution = sum(t.source == "solution" for t in traces)
    machine = f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cores"
    today = datetime.date.today().isoformat()
    profile: dict[str, Any] = {
        "schema": SCHEMA,
        "source": (
            f"CHAMP v0 (champ-dataset 1.0.0): {n_solution} human solutions + {len(traces) - n_solution} model "
            f"conversations (settings {', '.join(PROBLEM_ONLY_SETTINGS)}); Qwen2.5 tokenizer (len "
            f"{len(tokenizer)}), ReasoningTraceEncoder, no length limit; {today}, {machine}"
        ),
        "percentile_method": "numpy.percentile, linear interpolation",
        "layouts": {layout: measure(tokenizer, traces, layout, args.samples) for layout in TRACE_FORMATS},
    }
    elapsed = time.perf_counter() - t0
    text = table(profile)
    print(f"B0 CHAMP trace section statistics, Qwen2.5 tokenizer ({profile['source']})\n")
    print(text)
    print(f"({elapsed:.1f} s)")
    args.out.write_text(dump(profile), encoding="utf-8")
    print(f"wrote {args.out}")
    if args.append_results:
        with RESULTS_PATH.open("a", encoding="utf-8") as f:
            f.write(
                f"\n## B0 trace section statistics — {today}, {machine}\n\n"
                f"{profile['source']}. Token shares over all traces; percentiles per trace "
                f"(`python benchmarks/b0_trace_stats.py`, profile in `benchmarks/trace_length_profile.json`).\n\n"
                f"{text}"
            )
        print(f"appended to {RESULTS_PATH}")


if __name__ == "__main__":
    main()
