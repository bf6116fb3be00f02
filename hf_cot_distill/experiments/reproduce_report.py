"""Statistics and reports of the mini-reproductions (:mod:`hf_cot_distill.experiments.reproduce`).

* :func:`summarize`: mean, sample standard deviation and a Student-t confidence interval of a
  list of per-seed numbers. The t quantile is computed here (:func:`t_quantile`, by bisection
  on the t CDF written through the regularized incomplete beta function), so no scipy is needed.
* :func:`write_r1` / :func:`write_r2` / :func:`write_r3`: from the raw per-seed records to
  ``<stem>.md`` (setup, commands, tables of mean ± CI with the chance baselines beside them,
  plain statements), ``<stem>.json`` (every raw number plus the aggregates) and ``<stem>.png``.
* Tables are written by :func:`hf_cot_distill.core.tables.markdown_table` and read back (the tests
  do) by :func:`~hf_cot_distill.core.tables.parse_markdown_table`; :func:`parse_ci` reads a
  ``mean ± half-width`` cell.
* :func:`eval_fields` / :func:`compute_counts`: the per-model numbers of a record (accuracies and
  baselines of an evaluation; tokens, FLOPs, memory and wall time from a trained folder's logs).

Two intervals "separate" here when they do not overlap; overlapping 95% intervals are reported as
no separation (a conservative reading: a difference can be significant with slightly overlapping
intervals, never the other way round).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from hf_cot_distill.core.tables import markdown_table

BASELINES = ("uniform", "marginal_majority", "in_context_majority")
SEED_NOTE = (
    "The recipe `seed`: the from-scratch weight initialisation (`hf_cot_distill.pipelines.training_models.build_student` "
    "seeds it with the training seed) and the Trainer's data order. The generated tasks are fixed "
    "per (config, index), so the intervals do not include task-sampling variance."
)
# name -> (title, setup paragraph) of each report.
TEXTS: dict[str, tuple[str, str]] = {
    "R1": (
        "R1 CoT-ICL Lab: standard vs cot prompts, answer accuracy vs training steps",
        "Paper: CoT-ICL Lab (Kothapalli et al., ACL 2025) reports that CoT prompts speed up the accuracy "
        "transition of small transformers meta-trained from scratch. Here: a Llama meta-trained on "
        "`standard` (inputs, answer) or `cot` (inputs, CoT, answer) prompts of the same tasks; every "
        "checkpoint is decoded greedily on the eval split (the `cot` model must produce its CoT first).",
    ),
    "R2": (
        "R2 CoT-Recipe: CoT share alpha vs CoT dropped from the context",
        "Paper: CoT-Recipe (Kothapalli et al., ACL 2026): with p(i) = min((i/n)^alpha, 1) of the examples "
        "carrying CoT (mean share 1/(alpha+1)), too much CoT in training hurts when few context examples "
        "show their CoT at test time. Here: `hybrid_special_token` meta-training for each alpha; the final "
        "model is evaluated with the think block dropped from k random context examples (`random_k`).",
    ),
    "R3": (
        "R3 Distilling the Essence: KD allocation x lead span, quality retained vs compute",
        "Paper: Distilling the Essence (Chen, Kothapalli et al., arXiv 2512.21002): KD on the CoT only works "
        "when the CoT carries the prompt/answer information; training on the first 50% of every sequence "
        "keeps ~91% of full-sequence quality at ~50% compute. Here: one teacher, students distilled with "
        "0.5·CE + 0.5·forward KL, KD on each section allocation, at lead-span proportions 0.25-1.0.",
    ),
    "R3-champ": (
        "R3-champ Distilling the Essence on real traces: KD allocation x lead span, SmolLM2-135M-Instruct -> 4 layers",
        "Paper: Distilling the Essence (Chen, Kothapalli et al., arXiv 2512.21002): when the CoT already "
        "carries the answer, KD on the CoT alone keeps the answer's quality, and training on the first 50% of "
        "every sequence keeps ~91% of full-sequence quality at ~50% compute. Here the premise holds: real CHAMP "
        "reasoning traces (human solutions and GPT-4 0-shot worked answers, whose CoT states the result before "
        "the `\\boxed{}` answer), the real SmolLM2-135M-Instruct teacher (30 layers) and a student built from its "
        "layers 0/10/20/29; 0.5·CE + 0.5·forward KL with CE on the same sections as KD. Measured teacher-forced "
        "on held-out traces (problems never trained on): cross-entropy on the ANSWER and on the CoT (nats/token) "
        "and forward KL(teacher || student).",
    ),
}
SEED_NOTE_CHAMP = (
    "The recipe `seed`: the Trainer's data order (which training traces each step sees). The student's "
    "initial weights are the teacher's layers (the same for every seed), the teacher cache is built once "
    "(sampling seed 0) and the held-out traces are fixed, so the intervals hold neither initialisation, "
    "cache-sampling nor eval-set variance."
)


# --------------------------------------------------------------------------- statistics
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            delta = d * c
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x={x} must be in [0, 1].")
    if x in (0.0, 1.0):
        return x
    log_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_bt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_bt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection, ~1e-12)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def summarize(values: Iterable[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample std (n - 1), standard error and the two-sided Student-t interval of the mean.

    With fewer than 2 values the spread and the interval are ``None`` (they are undefined).
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("summarize() needs at least one value.")
    mean = sum(xs) / n
    out: dict[str, Any] = {"n": n, "mean": mean, "std": None, "sem": None, "t": None}
    out.update(ci_low=None, ci_high=None, ci_half_width=None, confidence=confidence)
    if n >= 2:
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        t = t_quantile(0.5 + confidence / 2.0, n - 1)
        half = t * std / math.sqrt(n)
        out.update(std=std, sem=std / math.sqrt(n), t=t, ci_low=mean - half, ci_high=mean + half)
        out["ci_half_width"] = half
    return out


def separated(a: dict[str, Any], b: dict[str, Any]) -> int:
    """+1 if interval ``a`` lies above ``b``, -1 if below, 0 if they overlap (or are undefined)."""
    if a["ci_low"] is None or b["ci_low"] is None:
        return 0
    if a["ci_low"] > b["ci_high"]:
        return 1
    if a["ci_high"] < b["ci_low"]:
        return -1
    return 0


def fmt_ci(s: dict[str, Any], digits: int = 3) -> str:
    """``mean ± half-width`` (or the bare mean when no interval exists)."""
    if s["ci_half_width"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['ci_half_width']:.{digits}f}"


def _group(records: Sequence[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


# --------------------------------------------------------------------------- records
def eval_fields(res: dict) -> dict[str, Any]:
    """The numbers of an ``evaluate_cot_icl`` result that go into a record (accuracies, baselines)."""
    out = {
        k: res[k]
        for k in ("answer_accuracy", "chain_accuracy", "count", "drop_k", "answer_parsed_rate")
        if k in res
    }
    out.update({k: v for k, v in res.items() if k.startswith("baseline_")})
    return out


def compute_counts(folder: Path) -> dict[str, Any]:
    """Tokens / FLOPs / memory from the last training log entry with compute counts, plus wall time."""
    logs = [e for e in json.loads((folder / "log_history.json").read_text()) if "tokens_forwarded" in e]
    last = logs[-1] if logs else {}
    metrics = json.loads((folder / "train_metrics.json").read_text())
    keys = ("tokens_forwarded", "flops_counted", "flops_student", "flops_teacher", "peak_memory_mb", "step")
    out = {k: last.get(k) for k in keys}
    out["wall_time_s"] = metrics.get("wall_time_s")
    return out


# --------------------------------------------------------------------------- markdown / files
def parse_ci(cell: str) -> tuple[float, float | None]:
    """``"0.412 ± 0.031"`` -> ``(0.412, 0.031)``; ``"0.412"`` -> ``(0.412, None)``."""
    m = re.fullmatch(r"\s*(-?[\d.]+)(?:\s*±\s*([\d.]+))?\s*", cell)
    if not m:
        raise ValueError(f"not a 'mean ± half-width' cell: {cell!r}")
    return float(m.group(1)), (float(m.group(2)) if m.group(2) else None)


def _baseline_cells(records: Sequence[dict]) -> list[str]:
    return [f"{records[0]['baseline_' + b]:.3f}" for b in BASELINES]


def _best_baseline(records: Sequence[dict]) -> float:
    return max(max(r["baseline_" + b] for b in BASELINES) for r in records)


def _write(
    report_dir: Path, stem: str, md: str, data: dict[str, Any], plot: Callable[[Any], None], panels: int = 1
) -> Path:
    """Write ``<stem>.{png,json,md}``; ``plot`` draws on one axes, or on a list of ``panels`` axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4.2), squeeze=False)
    axes = list(axes[0])
    plot(axes[0] if panels == 1 else axes)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(report_dir / f"{stem}.png", dpi=110)
    plt.close(fig)
    text = json.dumps(_finite(data), indent=1, sort_keys=True, default=str, allow_nan=False)
    (report_dir / f"{stem}.json").write_text(text + "\n")
    path = report_dir / f"{stem}.md"
    path.write_text(md)
    return path


def relative_paths(value: Any, root: Path) -> Any:
    """Strings that are paths under ``root`` written relative to it (reports hold no machine paths)."""
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, root) for v in value]
    prefix = str(root).rstrip("/") + "/"
    return value[len(prefix) :] if isinstance(value, str) and value.startswith(prefix) else value


# name -> facts about the CPU-size design that bear on reading the results (appended to the statements).
NOTES: dict[str, tuple[str, ...]] = {
    "R1": (
        "Design fact: in the N=3 M=1 C=2 family (the `make demo` tasks) the answer's single parent is drawn "
        "uniformly from the 3 inputs and the 1 CoT token, so only 1/4 of the tasks route the answer through "
        "the CoT; the N=3 M=2 C=3 family makes the answer depend on intermediate tokens far more often.",
        "Multiple comparisons: cot vs standard is tested at every checkpoint (95% each, 3 seeds); an isolated "
        "separated checkpoint can be chance, a run of consecutive ones is the signal to look for.",
    ),
    "R2": (
        "Design fact: the CPU family (N=1, M=1, C=2, one shared processor H, K=9) is the pilot's pick "
        "(R2_pilot.md: the cheapest family in which the all-CoT model learns the task; the N=3 and N=2 families "
        "stayed at 0.37-0.56 drop-0 accuracy within 1,500 steps because the CoT token's parent was never "
        "inferred from the context). Its CoT token is always H(x); what each task's context must show is "
        "whether the answer is H(x) or H(H(x)) (half the tasks each). A context example with its CoT shows H(x) "
        "beside the answer; with the CoT dropped the model must compute H(x) itself to tell the two apart.",
        "Multiple comparisons: 10 alpha pairs x 5 drop levels, each at 95% with 3 seeds; isolated separated "
        "pairs can be chance. The paper's setting (K=40, N, M, C in {3, 4}, models of 4-12 layers, far more "
        "steps) is not this one: an effect seen (or not seen) here is evidence at this scale only.",
    ),
    "R3": (
        "Design fact: a sequence is 73 tokens (bos + 6 examples of 12); the eval query's answer sits near "
        "position 70. A student trained at lead span x only ever sees positions < 73x (0.25: the first "
        "example and a half), while evaluation needs the full context.",
        "CE choice: CE stays on CoT + answer for every KD allocation (the grid isolates KD allocation); the "
        "control table shows the paper's 'CE on the same sections as KD' for the CoT-only allocation, where the "
        "CoT of these tasks does not contain the answer token.",
    ),
}


NOTES["R3-champ"] = (
    "Design fact: a lead span x keeps the first x of every training sequence (prompt, then CoT, then the "
    "answer at the end): below 1.0 no allocation trains on answer tokens, so the answer CE at 0.25 and 0.5 "
    "measures what training on the leading part of the CoT transfers to the answer.",
    "Scale: 16 steps of batch 2 per run (32 traces of at most 384 tokens) on a shared 2-core CPU; the student "
    "is far from converged and far from the teacher. The comparison is between allocations and lead spans "
    "at equal steps, not of converged models.",
)


def _finite(value: Any) -> Any:
    """JSON-safe: non-finite floats (alpha = inf) become the strings "inf" / "-inf" / "nan"."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _header(meta: dict[str, Any]) -> str:
    cmds = "\n".join(meta["commands"])
    return (
        f"# {meta['title']}\n\n{meta['setup']}\n\n"
        f"Size: **{meta['size']}**; seeds {meta['seeds']}; "
        + meta.get(
            "eval_text",
            f"{meta['eval_count']} eval tasks per model (greedy decoding, {meta.get('eval_note', 'drop-k 0')})",
        )
        + f". Wall time (training + evaluation) over "
        f"{len(meta.get('invocations', [1]))} invocation(s) of the resumable run: "
        f"{sum(i['wall_time_s'] for i in meta.get('invocations', [meta])):.0f} s; training wall time "
        f"summed over the {meta.get('models_trained', '?')} models: {meta.get('train_wall_time_s_sum', 0):.0f} s "
        f"({meta['threads']}, a 2-core machine shared with other jobs unless stated).\n\n"
        "Intervals: mean ± half-width of the two-sided 95% Student-t interval over seeds "
        "(n − 1 degrees of freedom); 'separated' means non-overlapping intervals.\n\n"
        f"**What a seed varies.** {meta['seed_note']}\n\n"
        f"## Commands\n\n```bash\n{cmds}\n```\n\n"
    )


def _statements(lines: Sequence[str]) -> str:
    return "## What is and is not observed at this scale\n\n" + "".join(f"- {s}\n" for s in lines) + "\n"


# --------------------------------------------------------------------------- R1
def _first_clear(curve: Sequence[tuple[int, dict]], base: float) -> str:
    """The first step whose interval lies above ``base`` ("never" if none)."""
    return next((str(k) for k, s in curve if s["ci_low"] is not None and s["ci_low"] > base), "never")


def write_r1(report_dir: Path, stem: str, records: list[dict], meta: dict[str, Any]) -> Path:
    """R1: answer accuracy vs training step, standard vs cot per task family, mean ± CI over seeds."""
    families = list(dict.fromkeys(r.get("family", "") for r in records))
    strategies = sorted({r["strategy"] for r in records}, key=lambda s: (s != "standard", s))
    steps = sorted({r["step"] for r in records})
    groups = _group([r | {"family": r.get("family", "")} for r in records], ("family", "strategy", "step"))
    order = lambda kv: (families.index(kv[0][0]), strategies.index(kv[0][1]), kv[0][2])  # noqa: E731
    agg = [
        {"family": fam, "strategy": st, "step": step}
        | {k: summarize(r[k] for r in rs) for k in ("answer_accuracy", "chain_accuracy")}
        | {f"baseline_{b}": rs[0][f"baseline_{b}"] for b in BASELINES}
        for (fam, st, step), rs in sorted(groups.items(), key=order)
    ]
    head = ["task family", "strategy", "step", "seeds", "answer_accuracy", "std", "chain_accuracy"]
    head += [f"baseline_{b}" for b in BASELINES]
    rows = [
        [a["family"], a["strategy"], a["step"], a["answer_accuracy"]["n"], fmt_ci(a["answer_accuracy"])]
        + [f"{a['answer_accuracy']['std'] or 0:.3f}", fmt_ci(a["chain_accuracy"])]
        + [f"{a[f'baseline_{b}']:.3f}" for b in BASELINES]
        for a in agg
    ]
    at = {(a["family"], a["strategy"], a["step"]): a for a in agg}
    statements = []
    for fam in families:
        curves = {
            st: [(k, at[(fam, st, k)]["answer_accuracy"]) for k in steps if (fam, st, k) in at]
            for st in strategies
        }
        base = max(
            at[(fam, st, k)][f"baseline_{b}"] for st in strategies for k, _ in curves[st] for b in BASELINES
        )
        label = f"[{fam}] " if fam else ""
        if {"standard", "cot"} <= set(strategies):
            both = [k for k in steps if (fam, "cot", k) in at and (fam, "standard", k) in at]
            sep = {
                k: separated(
                    at[(fam, "cot", k)]["answer_accuracy"], at[(fam, "standard", k)]["answer_accuracy"]
                )
                for k in both
            }
            up, down = [k for k in both if sep[k] == 1], [k for k in both if sep[k] == -1]
            ups = (
                f"cot above standard (separated) at steps {up}"
                if up
                else "cot never separated above standard"
            )
            downs = f"cot BELOW standard (separated) at steps {down}" if down else "never separated below it"
            statements.append(
                f"{label}cot vs standard answer accuracy over {len(both)} checkpoints: {ups}; {downs}; "
                f"intervals overlap at the other {len(both) - len(up) - len(down)}."
            )
        firsts = {st: _first_clear(curves[st], base) for st in strategies}
        if all(f == str(steps[0]) for f in firsts.values()):
            statements.append(
                f"{label}every curve is already clear of the chance baseline at the first checkpoint (step "
                f"{steps[0]}): the transition happens before it, and its speed is not resolved here."
            )
        for st in strategies:
            final = curves[st][-1][1]
            statements.append(
                f"{label}{st}: final {fmt_ci(final)}, peak mean {max(s['mean'] for _, s in curves[st]):.3f}; "
                f"first checkpoint clear of the best chance baseline ({base:.3f}): step {_first_clear(curves[st], base)}."
            )
    statements += meta.get("notes", [])
    md = _header(meta) + "## Answer accuracy vs training steps\n\n" + markdown_table(head, rows) + "\n"
    md += f"![answer accuracy vs steps]({stem}.png)\n\n" + _statements(statements)

    def plot(ax: Any) -> None:
        for fi, fam in enumerate(families):
            for st in strategies:
                pts = [(k, at[(fam, st, k)]["answer_accuracy"]) for k in steps if (fam, st, k) in at]
                xs, lo, hi = [k for k, _ in pts], [], []
                for _, s in pts:
                    lo.append(s["ci_low"] if s["ci_low"] is not None else s["mean"])
                    hi.append(s["ci_high"] if s["ci_high"] is not None else s["mean"])
                style = ("-", "--", ":", "-.")[fi % 4]
                ax.plot(
                    xs, [s["mean"] for _, s in pts], ls=style, marker="o", ms=3, label=f"{st} {fam}".strip()
                )
                ax.fill_between(xs, lo, hi, alpha=0.15, color=ax.lines[-1].get_color())
        for fi, fam in enumerate(families):
            base = _best_baseline([r for r in records if r.get("family", "") == fam])
            style = ("-", "--", ":", "-.")[fi % 4]
            ax.axhline(
                base, ls=style, color="grey", lw=1, label=f"best chance baseline {fam} ({base:.3f})".strip()
            )
        ax.set_xlabel("training step")
        ax.set_ylabel("answer accuracy (greedy; mean, 95% CI band)")
        ax.set_title(textwrap.fill(meta["title"], 80), fontsize=8)

    data = {"meta": meta, "records": records, "aggregates": agg, "statements": statements}
    return _write(report_dir, stem, md, data, plot)


# --------------------------------------------------------------------------- R2
def write_r2(report_dir: Path, stem: str, records: list[dict], meta: dict[str, Any]) -> Path:
    """R2: answer accuracy per alpha and drop-k level, mean ± CI over seeds."""
    alphas = sorted({r["alpha"] for r in records})
    drops = sorted({r["drop_k"] for r in records})
    groups = _group(records, ("alpha", "drop_k"))
    agg = [
        {
            "alpha": a,
            "drop_k": k,
            "drop_fraction": groups[(a, k)][0]["drop_fraction"],
            "answer_accuracy": summarize(r["answer_accuracy"] for r in groups[(a, k)]),
        }
        for a in alphas
        for k in drops
        if (a, k) in groups
    ]
    at = {(g["alpha"], g["drop_k"]): g["answer_accuracy"] for g in agg}
    n_ctx = records[0]["n_context"]
    head = ["alpha", "mean CoT share"] + [f"drop {k}/{n_ctx}" for k in drops] + ["seeds"]
    head += [f"baseline_{b}" for b in BASELINES]
    rows = []
    for a in alphas:
        share = "1" if a == 0 else ("0" if math.isinf(a) else f"{1 / (a + 1):.2f}")
        rs = [r for r in records if r["alpha"] == a]
        rows.append(
            [_alpha_str(a), share]
            + [fmt_ci(at[(a, k)]) if (a, k) in at else "" for k in drops]
            + [at[(a, drops[0])]["n"]]
            + _baseline_cells(rs)
        )
    statements = []
    for k in drops:
        pairs = [
            f"alpha={_alpha_str(a)} > alpha={_alpha_str(b)}"
            for a in alphas
            for b in alphas
            if a != b and (a, k) in at and (b, k) in at and separated(at[(a, k)], at[(b, k)]) == 1
        ]
        statements.append(f"drop {k}/{n_ctx}: separated pairs: {'; '.join(pairs) or 'none'}.")
    for k in (drops[0], drops[-1]):
        best = max(alphas, key=lambda a: at[(a, k)]["mean"])
        beaten = [a for a in alphas if a != best and separated(at[(best, k)], at[(a, k)]) == 1]
        statements.append(
            f"drop {k}/{n_ctx}: best mean at alpha={_alpha_str(best)} ({fmt_ci(at[(best, k)])}); "
            + (
                f"separated from alpha={', '.join(_alpha_str(a) for a in beaten)}."
                if beaten
                else "its interval overlaps every other alpha's: no separation."
            )
        )
    if 0.0 in alphas and math.inf in alphas:
        lo, hi = at[(0.0, drops[-1])], at[(math.inf, drops[-1])]
        verdict = {-1: "lower (separated)", 1: "higher (separated)"}.get(separated(lo, hi), "not separated")
        statements.append(
            f"Paper's claim 'too much CoT in training hurts when the context shows no CoT': alpha=0 "
            f"(all CoT) at drop {drops[-1]}/{n_ctx} is {fmt_ci(lo)} vs alpha=inf (no CoT) {fmt_ci(hi)}: "
            f"{verdict}."
        )
        d0 = separated(at[(0.0, drops[0])], at[(math.inf, drops[0])])
        statements.append(
            f"With full CoT context (drop 0): alpha=0 {fmt_ci(at[(0.0, drops[0])])} vs alpha=inf "
            f"{fmt_ci(at[(math.inf, drops[0])])}: "
            + {1: "alpha=0 higher (separated).", -1: "alpha=0 lower (separated)."}.get(d0, "not separated.")
        )
    statements += r2_verdicts(at, alphas, drops, n_ctx)
    base = _best_baseline(records)
    clear = [a for a in alphas if all((at[(a, k)]["ci_low"] or -1) > base for k in drops)]
    statements.append(
        f"Best chance baseline {base:.3f}; alphas whose interval is clear of it at every drop level: "
        + (", ".join(_alpha_str(a) for a in clear) or "none")
        + "."
    )
    statements += meta.get("notes", [])
    md = _header(meta) + "## Answer accuracy by alpha and drop level\n\n" + markdown_table(head, rows) + "\n"
    md += f"![accuracy vs drop level]({stem}.png)\n\n" + _statements(statements)

    def plot(ax: Any) -> None:
        for i, a in enumerate(alphas):
            pts = [(k / n_ctx, at[(a, k)]) for k in drops if (a, k) in at]
            xs = [x + 0.01 * (i - (len(alphas) - 1) / 2) for x, _ in pts]  # dodge the error bars
            err = [s["ci_half_width"] or 0.0 for _, s in pts]
            ax.errorbar(
                xs,
                [s["mean"] for _, s in pts],
                yerr=err,
                marker="o",
                capsize=3,
                label=f"alpha={_alpha_str(a)}",
            )
        ax.axhline(base, ls="--", color="grey", lw=1, label="best chance baseline")
        ax.set_xlabel(f"fraction of the {n_ctx} context examples with their CoT dropped")
        ax.set_ylabel("answer accuracy (mean, 95% CI)")
        ax.set_title(textwrap.fill(meta["title"], 80), fontsize=8)

    data = {"meta": meta, "records": records, "aggregates": agg, "statements": statements}
    return _write(report_dir, stem, md, data, plot)


def _alpha_str(a: float) -> str:
    return "inf" if math.isinf(a) else f"{a:g}"


# R2: the drop-0 answer accuracy the all-CoT model must reach for the alpha sweep to be informative
# (the bar reproductions/pilots/r2_pilot.py picked the CPU settings by; issue #17 item 4).
R2_LEARNED_BAR = 0.7
R2_PAPER_GAIN = "up to +300%"  # CoT-Recipe's best recipe vs all-CoT with no CoT in the context


def r2_verdicts(
    at: dict[tuple, dict], alphas: Sequence[float], drops: Sequence[int], n_ctx: int
) -> list[str]:
    """Two plain R2 statements: did the all-CoT model (alpha = 0) learn the task (drop-0 mean >=
    :data:`R2_LEARNED_BAR`), and is 'too much CoT hurts when the context shows none' observed: some
    alpha > 0 separated above alpha = 0 at drop-all, with the best alpha's relative gain beside the
    paper's. ``at[(alpha, drop_k)]`` is a :func:`summarize` of the per-seed answer accuracies."""
    if 0.0 not in alphas:
        return []
    first, last = at[(0.0, drops[0])], at[(0.0, drops[-1])]
    reached = "reaches" if first["mean"] >= R2_LEARNED_BAR else "does NOT reach"
    low = f"; the interval's lower bound is {first['ci_low']:.3f}" if first["ci_low"] is not None else ""
    out = [
        f"Regime: the all-CoT model (alpha=0) with the full CoT context (drop {drops[0]}/{n_ctx}) scores "
        f"{fmt_ci(first)}: it {reached} the {R2_LEARNED_BAR} answer accuracy the pilot (R2_pilot.md) "
        f"asks of a regime where the effect can show (judged on the mean{low})."
    ]
    others = [a for a in alphas if a != 0.0 and (a, drops[-1]) in at]
    if not others:
        return out
    k = drops[-1]
    above = [a for a in others if separated(at[(a, k)], last) == 1]
    below = [a for a in others if separated(at[(a, k)], last) == -1]

    def names(xs: Sequence[float]) -> str:
        return ", ".join(f"alpha={_alpha_str(a)}" for a in xs)

    if above:
        verdict = f"OBSERVED: {names(above)} above alpha=0 (separated)"
    elif below:
        verdict = f"NOT observed, reversed: alpha=0 above {names(below)} (separated)"
    else:
        verdict = "NOT observed: no alpha > 0 is separated from alpha=0"

    def best_of(xs: Sequence[float]) -> str:
        best = max(xs, key=lambda a: at[(a, k)]["mean"])
        gain = at[(best, k)]["mean"] / last["mean"] - 1 if last["mean"] > 0 else math.nan
        rel = f"{100 * gain:+.0f}%" if math.isfinite(gain) else "n/a (alpha=0 at 0)"
        return f"alpha={_alpha_str(best)} {fmt_ci(at[(best, k)])}, {rel} relative to alpha=0"

    mixed = [a for a in others if math.isfinite(a)]  # a recipe that mixes CoT and direct examples
    out.append(
        f"Verdict on the paper's 'too much CoT in training hurts when the context shows none' (drop "
        f"{k}/{n_ctx}, alpha=0 {fmt_ci(last)}): {verdict}. Best alpha > 0 there: {best_of(others)}"
        + (f"; best mixed recipe (0 < alpha < inf): {best_of(mixed)}" if mixed else "")
        + f" (the paper: {R2_PAPER_GAIN})."
    )
    return out


# --------------------------------------------------------------------------- R3
def _share_cell(share: float | None) -> str:
    return "not recorded" if share is None else f"{share:.3e}"


def _cache_statements(records: Sequence[dict]) -> list[str]:
    """One line per teacher cache the students trained from: its build cost and how it is shared."""
    out = []
    for (folder,), rs in _group([r for r in records if r.get("teacher_cache")], ("teacher_cache",)).items():
        first = rs[0]
        if first.get("flops_cache_build") is None:
            out.append(
                f"Teacher cache {folder}: its build cost is not recorded (built before cache_info.json held "
                f"build_flops), so the flops_counted of its {first['cache_points']} points leave the teacher out."
            )
        else:
            out.append(
                f"Teacher cache {folder}: built once for {first['cache_points']} points ({first['flops_cache_build']:.3e} "
                f"counted FLOPs, the teacher over every row once); each point's flops_counted includes an equal "
                f"share, {first['flops_cache_share']:.3e} (its own logs count no teacher FLOPs)."
            )
    return out


def write_r3(report_dir: Path, stem: str, records: list[dict], meta: dict[str, Any]) -> Path:
    """R3: quality retained (student / teacher accuracy) vs compute per KD allocation and lead span."""
    main = [r for r in records if r["group"] == "main"]
    control = [r for r in records if r["group"] != "main"]
    allocs = list(dict.fromkeys(r["allocation"] for r in main))
    lsps = sorted({r["lsp"] for r in main})
    has_quality = all(r.get("quality_retained") is not None for r in main)
    agg = []
    for (alloc, lsp), rs in _group(main, ("allocation", "lsp")).items():
        full = [r for r in main if r["allocation"] == alloc and r["lsp"] == max(lsps)]
        full_flops = sum(r["flops_counted"] for r in full) / len(full)
        entry = {"allocation": alloc, "lsp": lsp, "n": len(rs)}
        for key in (
            "answer_accuracy",
            "quality_retained",
            "flops_counted",
            "tokens_forwarded",
            "answer_parsed_rate",
        ):
            if all(r.get(key) is not None for r in rs):
                entry[key] = summarize(r[key] for r in rs)
        entry["flops_vs_full"] = entry["flops_counted"]["mean"] / full_flops
        agg.append(entry)
    agg.sort(key=lambda e: (allocs.index(e["allocation"]), e["lsp"]))
    at = {(e["allocation"], e["lsp"]): e for e in agg}
    head = ["KD allocation", "lead span", "seeds", "answer_accuracy", "quality_retained", "answer_parsed"]
    head += ["best_chance_baseline", "tokens_forwarded", "flops_counted", "flops_vs_full"]
    cached = any(r.get("teacher_cache") for r in main)
    if cached:
        head.append("of which cache build")
        for e in agg:
            rs = [r for r in main if r["allocation"] == e["allocation"] and r["lsp"] == e["lsp"]]
            part = [r.get("flops_cache_share") for r in rs]
            e["flops_cache_share"] = None if None in part else sum(part) / len(part)
    has_base = all("baseline_uniform" in r for r in main)
    rows = [
        [e["allocation"], f"{e['lsp']:g}", e["n"]]
        + [fmt_ci(e[k]) if k in e else "n/a" for k in ("answer_accuracy", "quality_retained")]
        + [f"{e['answer_parsed_rate']['mean']:.3f}" if "answer_parsed_rate" in e else "n/a"]
        + [f"{_best_baseline(main):.3f}" if has_base else "n/a"]
        + [
            f"{e['tokens_forwarded']['mean']:,.0f}",
            f"{e['flops_counted']['mean']:.3e}",
            f"{e['flops_vs_full']:.2f}",
        ]
        + ([_share_cell(e["flops_cache_share"])] if cached else [])
        for e in agg
    ]
    teacher = meta.get("teacher") or {}
    md = _header(meta)
    if teacher:
        md += (
            f"Teacher answer accuracy {teacher['answer_accuracy']:.3f} on the same {teacher.get('count', '?')} eval "
            "tasks (chance baselines: "
            + ", ".join(f"{b} {teacher['baseline_' + b]:.3f}" for b in BASELINES)
            + f"; answer parsed in {teacher.get('answer_parsed_rate', float('nan')):.3f} of its generations). "
            "quality_retained = student / teacher answer accuracy; its interval covers the student seeds only "
            "(the one teacher's own sampling error on the eval tasks is not in it). answer_parsed = share of "
            "generations in which the parser finds an answer token at all.\n\n"
        )
    md += "## Quality retained vs compute\n\n" + markdown_table(head, rows) + "\n"
    if control:
        c_rows = []
        for (alloc, ce), rs in _group(control, ("allocation", "ce_sections")).items():
            s = summarize(r["answer_accuracy"] for r in rs)
            q = summarize(r["quality_retained"] for r in rs) if has_quality else None
            parsed = [r["answer_parsed_rate"] for r in rs if r.get("answer_parsed_rate") is not None]
            c_rows.append(
                [alloc, ce, f"{rs[0]['lsp']:g}", len(rs), fmt_ci(s), fmt_ci(q) if q else "n/a"]
                + [f"{sum(parsed) / len(parsed):.3f}" if parsed else "n/a"]
            )
        md += "### Control: CE on the same sections as KD\n\n"
        md += (
            markdown_table(
                ["KD allocation", "CE sections", "lead span", "seeds", "answer_accuracy", "quality_retained"]
                + ["answer_parsed"],
                c_rows,
            )
            + "\n"
        )
    statements = []
    if has_quality:
        for alloc in allocs:
            curve = ", ".join(
                f"{x:g}: {at[(alloc, x)]['quality_retained']['mean']:.2f}" for x in lsps if (alloc, x) in at
            )
            statements.append(
                f"{alloc}: quality retained by lead span ({curve}) (paper, math at 0.5: about 0.91)."
            )
        if has_base:
            base = _best_baseline(main)
            chance = [e for e in agg if (e["answer_accuracy"]["ci_low"] or 0.0) <= base]
            cells = "; ".join(f"{e['allocation']} at {e['lsp']:g}" for e in chance) or "none"
            statements.append(
                f"Not clear of the best chance baseline {base:.3f} (interval reaches it): {cells}."
            )
            fmt = [e for e in agg if "answer_parsed_rate" in e and e["answer_parsed_rate"]["mean"] < 0.5]
            if fmt:
                statements.append(
                    "An answer is parsed in under half of the generations (a format failure, not a wrong guess) "
                    "for: " + "; ".join(f"{e['allocation']} at {e['lsp']:g}" for e in fmt) + "."
                )
        for alloc in allocs:
            full, half = at.get((alloc, max(lsps))), at.get((alloc, 0.5))
            if full and half:
                verdict = {1: "higher (separated)", -1: "lower (separated)"}.get(
                    separated(half["quality_retained"], full["quality_retained"]), "not separated"
                )
                statements.append(
                    f"{alloc}: lead span 0.5 keeps {fmt_ci(half['quality_retained'])} of the teacher's accuracy "
                    f"at {half['flops_vs_full']:.2f}x the counted FLOPs of full sequences "
                    f"({fmt_ci(full['quality_retained'])}); vs full sequences: {verdict}."
                )
        ref = max(lsps)
        best = max(allocs, key=lambda a: at[(a, ref)]["quality_retained"]["mean"])
        others = [a for a in allocs if a != best]
        sep = [
            a
            for a in others
            if separated(at[(best, ref)]["quality_retained"], at[(a, ref)]["quality_retained"]) == 1
        ]
        statements.append(
            f"Full sequences: best KD allocation {best} ({fmt_ci(at[(best, ref)]['quality_retained'])} retained); "
            + (f"separated from {', '.join(sep)}." if sep else "no separation from the other allocations.")
        )
    else:
        statements.append(
            "Quality retained is undefined here (not evaluated at this size, or the teacher scores 0): "
            "compute only."
        )
    statements += _cache_statements(records)
    statements += meta.get("notes", [])
    md += f"![quality retained vs compute]({stem}.png)\n\n" + _statements(statements)

    def plot(ax: Any) -> None:
        ykey = "quality_retained" if has_quality else "tokens_forwarded"
        for alloc in allocs:
            es = [at[(alloc, x)] for x in lsps if (alloc, x) in at]
            ax.errorbar(
                [e["flops_vs_full"] for e in es],
                [e[ykey]["mean"] for e in es],
                yerr=[e[ykey]["ci_half_width"] or 0.0 for e in es],
                marker="o",
                capsize=3,
                label=f"KD on {alloc}",
            )
        if has_quality and teacher:
            base = max(teacher["baseline_" + b] for b in BASELINES) / teacher["answer_accuracy"]
            ax.axhline(base, ls="--", color="grey", lw=1, label="best chance baseline / teacher")
            ax.axhline(1.0, ls=":", color="black", lw=1, label="teacher")
        ax.set_xlabel("counted FLOPs relative to full sequences (lead span 1.0)")
        ax.set_ylabel("quality retained (student / teacher accuracy)" if has_quality else ykey)
        ax.set_title(textwrap.fill(meta["title"], 80), fontsize=8)

    data = {"meta": meta, "records": records, "aggregates": agg, "statements": statements}
    return _write(report_dir, stem, md, data, plot)


# --------------------------------------------------------------------------- R3-champ
FULL_ALLOCATION = "prompt+cot+answer"
CHAMP_METRICS = ("ce_answer", "ce_cot", "kl_answer", "kl_cot")
CHAMP_RETAINED = ("ce_answer", "ce_cot", "kl_answer")
ALLOCATION_NAMES = {"prompt+cot+answer": "full", "cot+answer": "CoT+answer", "cot": "CoT-only"}


def champ_retained(
    records: Sequence[dict], untrained: dict[str, float], metric: str, full_lsp: float
) -> dict[tuple, list[float]] | None:
    """Per (allocation, lead span): each seed's share of the full-sequence student's improvement on
    ``metric`` (lower is better): ``(untrained - point) / (untrained - mean of full allocation at
    lead span full_lsp)``. ``None`` when that reference is missing or did not improve."""
    ref = [r[metric] for r in records if r["allocation"] == FULL_ALLOCATION and r["lsp"] == full_lsp]
    if not ref or metric not in untrained:
        return None
    gain = untrained[metric] - sum(ref) / len(ref)
    if gain <= 0:
        return None
    return {
        key: [(untrained[metric] - r[metric]) / gain for r in rs]
        for key, rs in _group(records, ("allocation", "lsp")).items()
    }


def _name(alloc: str) -> str:
    return ALLOCATION_NAMES.get(alloc, alloc)


def _flatten_statement(alloc: str, lsps: Sequence[float], at: dict, metric: str, label: str) -> str:
    """Where the returns of longer sequences stop: the first lead span whose next step up is not separated."""
    steps = []
    flat_at = None
    intervals = all(at[(alloc, x)][metric]["ci_low"] is not None for x in lsps)
    for a, b in zip(lsps, lsps[1:], strict=False):
        lo, hi = at[(alloc, a)][metric], at[(alloc, b)][metric]
        sep = separated(lo, hi)  # lower is better: +1 means the longer span is better
        word = ("separated" if sep == 1 else "not separated") if intervals else "no interval"
        steps.append(f"{a:g} -> {b:g}: {lo['mean'] - hi['mean']:+.3f} ({word})")
        if sep == 1:
            flat_at = None  # a separated gain further up: not flat before it
        elif flat_at is None:
            flat_at = a
    if not intervals:
        where = "undecided (one seed: no intervals)"
    elif flat_at is not None:
        where = f"no separated gain beyond lead span {flat_at:g}"
    else:
        where = "still improving up to the longest span"
    return f"{_name(alloc)}: {label} gain per longer lead span {'; '.join(steps)}: {where}."


def _same_runs(main: Sequence[dict], a: str, b: str, lsp: float) -> bool:
    """Allocations ``a`` and ``b`` gave identical numbers at ``lsp`` for every seed (the same supervised tokens)."""
    key = lambda r: (r["seed"], r["ce_answer"], r["ce_cot"], r["kl_answer"])  # noqa: E731
    ra = sorted(key(r) for r in main if r["allocation"] == a and r["lsp"] == lsp)
    rb = sorted(key(r) for r in main if r["allocation"] == b and r["lsp"] == lsp)
    return bool(ra) and ra == rb


def write_r3_champ(report_dir: Path, stem: str, records: list[dict], meta: dict[str, Any]) -> Path:
    """R3-champ: held-out answer / CoT cross-entropy and KL per KD allocation x lead span, with the
    share of the full-sequence student's improvement retained, vs counted FLOPs."""
    main = [r for r in records if r["group"] == "main"]
    refs = meta.get("references") or {}
    untrained, teacher = refs.get("untrained", {}), refs.get("teacher", {})
    allocs = list(dict.fromkeys(r["allocation"] for r in main))
    lsps = sorted({r["lsp"] for r in main})
    full_lsp = max(lsps)
    retained = {m: champ_retained(main, untrained, m, full_lsp) for m in CHAMP_RETAINED}
    ref_pts = [r for r in main if r["allocation"] == FULL_ALLOCATION and r["lsp"] == full_lsp]
    ref_flops = sum(r["flops_counted"] for r in ref_pts) / len(ref_pts) if ref_pts else None
    agg = []
    for (alloc, lsp), rs in _group(main, ("allocation", "lsp")).items():
        e: dict[str, Any] = {"allocation": alloc, "lsp": lsp, "n": len(rs)}
        for key in (*CHAMP_METRICS, "flops_counted", "tokens_forwarded"):
            e[key] = summarize(r[key] for r in rs)
        for m, table in retained.items():
            e[f"retained_{m}"] = summarize(table[(alloc, lsp)]) if table else None
        e["flops_vs_full"] = e["flops_counted"]["mean"] / ref_flops if ref_flops else None
        agg.append(e)
    agg.sort(key=lambda e: (allocs.index(e["allocation"]), e["lsp"]))
    at = {(e["allocation"], e["lsp"]): e for e in agg}

    def cell(e: dict, key: str) -> str:
        return fmt_ci(e[key]) if e.get(key) else "n/a"

    head = ["KD allocation", "lead span", "seeds", "CE answer", "CE CoT", "KL answer", "KL CoT"]
    head += ["retained (CE answer)", "retained (CE CoT)", "retained (KL answer)"]
    head += ["tokens_forwarded", "flops_counted", "flops_vs_full"]
    rows = [
        [f"{_name(e['allocation'])} ({e['allocation']})", f"{e['lsp']:g}", e["n"]]
        + [cell(e, m) for m in CHAMP_METRICS]
        + [cell(e, f"retained_{m}") for m in CHAMP_RETAINED]
        + [f"{e['tokens_forwarded']['mean']:,.0f}", f"{e['flops_counted']['mean']:.3e}"]
        + [f"{e['flops_vs_full']:.2f}" if e["flops_vs_full"] is not None else "n/a"]
        for e in agg
    ]

    def ref_cell(res: dict, key: str) -> str:
        return f"{res[key]:.3f}" if key in res else "—"

    ref_rows = [
        [label, ref_cell(res, "ce_answer"), ref_cell(res, "ce_cot"), ref_cell(res, "ce_prompt")]
        + [ref_cell(res, "kl_answer"), ref_cell(res, "kl_cot")]
        for label, res in (("teacher (30 layers)", teacher), ("untrained student (4 layers)", untrained))
        if res
    ]
    md = _header(meta)
    counts = untrained or (main[0] if main else {})
    md += (
        f"Held-out: {meta.get('eval_count', '?')} traces of problems never trained on ("
        + ", ".join(f"{counts.get('tokens_' + s, '?')} {s}" for s in ("prompt", "cot", "answer"))
        + " tokens); cross-entropy and KL in nats per token, teacher-forced (position i predicts token i+1; a "
        "position belongs to its target token's section). retained (m) = (untrained − point) / (untrained − "
        f"full-sequence student), the full-sequence student being the full allocation at lead span {full_lsp:g} "
        "(mean over its seeds); its interval covers the point's seeds only. flops_counted: the student's "
        "counted training FLOPs plus an equal share of the teacher cache build; flops_vs_full: relative to "
        "the full-sequence student.\n\n"
    )
    if ref_rows:
        md += (
            "## References\n\n"
            + markdown_table(["model", "CE answer", "CE CoT", "CE prompt", "KL answer", "KL CoT"], ref_rows)
            + "\n"
        )
    md += "## KD allocation x lead span\n\n" + markdown_table(head, rows) + "\n"

    statements = []
    full, cot = at.get((FULL_ALLOCATION, full_lsp)), at.get(("cot", full_lsp))
    if full and cot:
        sep = separated(cot["ce_answer"], full["ce_answer"])
        verdict = {
            0: "reaches it (intervals overlap)",
            -1: "does better than it (separated)",
            1: "does NOT reach it (separated, worse)",
        }[sep]
        if cot["ce_answer"]["ci_low"] is None or full["ce_answer"]["ci_low"] is None:
            verdict = "cannot be decided from one seed (no interval)"
        ret = cot.get("retained_ce_answer")
        statements.append(
            f"Does CoT-only KD reach the answer section's quality? On held-out answers CoT-only KD (which never "
            f"trains on answer tokens) has CE {fmt_ci(cot['ce_answer'])} vs {fmt_ci(full['ce_answer'])} for full "
            f"allocation at lead span {full_lsp:g}: CoT-only {verdict}"
            + (f"; it retains {fmt_ci(ret)} of the full student's answer-CE improvement." if ret else ".")
        )
    both = at.get(("cot+answer", full_lsp))
    if both and cot:
        sep = separated(cot["ce_answer"], both["ce_answer"])
        words = {0: "not separated.", 1: "CoT-only worse (separated).", -1: "CoT-only better (separated)."}
        undecided = cot["ce_answer"]["ci_low"] is None or both["ce_answer"]["ci_low"] is None
        statements.append(
            f"CoT-only vs CoT+answer (the answer trained on) at lead span {full_lsp:g}: answer CE "
            f"{fmt_ci(cot['ce_answer'])} vs {fmt_ci(both['ce_answer'])}: "
            + ("one seed, no interval." if undecided else words[sep])
        )
    same = [x for x in lsps if x < full_lsp and _same_runs(main, "cot", "cot+answer", x)]
    if same:
        statements.append(
            "CoT-only and CoT+answer at lead span "
            + ", ".join(f"{x:g}" for x in same)
            + " give identical numbers "
            "for every seed: the lead span cuts the answer of every training trace, so both supervise the same "
            "tokens (the same run twice; a check of the pipeline, not a finding)."
        )
    vocab = refs.get("vocab_size")
    if untrained and vocab:
        statements.append(
            f"The untrained student ({untrained['ce_answer']:.2f} nats/token on answers) is worse than a uniform "
            f"guess over the {vocab:,}-token vocabulary (ln V = {math.log(vocab):.2f}): 4 of 30 layers give "
            "miscalibrated logits, so most of the improvement that 'retained' measures is recalibration every run "
            "gets within a few steps. The differences between cells are in the absolute CE / KL columns and in "
            "the remaining gap to the teacher."
        )
    if untrained and teacher and full:
        gap = untrained["ce_answer"] - teacher["ce_answer"]
        closed = (untrained["ce_answer"] - full["ce_answer"]["mean"]) / gap if gap > 0 else float("nan")
        statements.append(
            f"Scale: the full-sequence student closes {closed:.0%} of the untrained student's answer-CE gap to the "
            f"teacher ({untrained['ce_answer']:.2f} -> {full['ce_answer']['mean']:.2f}; teacher "
            f"{teacher['ce_answer']:.2f} nats/token)."
        )
    for alloc in allocs:
        if all((alloc, x) in at for x in lsps):
            statements.append(_flatten_statement(alloc, lsps, at, "ce_answer", "answer CE"))
            statements.append(_flatten_statement(alloc, lsps, at, "ce_cot", "CoT CE"))
    half = at.get((FULL_ALLOCATION, 0.5))
    if half and half.get("retained_ce_answer") and half["flops_vs_full"] is not None:
        statements.append(
            f"Full allocation at lead span 0.5 retains {fmt_ci(half['retained_ce_answer'])} of the answer-CE "
            f"improvement and {fmt_ci(half['retained_ce_cot'])} of the CoT-CE improvement at "
            f"{half['flops_vs_full']:.2f}x the counted FLOPs (paper, math: ~0.91 of quality at ~0.5x)."
        )
    statements += _cache_statements(main)
    failed = refs.get("failed") or []
    if failed:
        statements.append(
            f"{len(failed)} point(s) failed to train and are not in the tables (a re-run retrains them): "
            + "; ".join(failed)
        )
    statements += meta.get("notes", [])
    md += f"![retained vs compute]({stem}.png)\n\n" + _statements(statements)

    def plot(axes: Any) -> None:
        for ax, metric, label in zip(
            axes, ("ce_answer", "ce_cot"), ("held-out ANSWER CE", "held-out CoT CE"), strict=True
        ):
            key = f"retained_{metric}"
            for alloc in allocs:
                es = [at[(alloc, x)] for x in lsps if (alloc, x) in at and at[(alloc, x)].get(key)]
                ax.errorbar(
                    [e["flops_vs_full"] for e in es],
                    [e[key]["mean"] for e in es],
                    yerr=[e[key]["ci_half_width"] or 0.0 for e in es],
                    marker="o",
                    capsize=3,
                    label=f"KD on {_name(alloc)}",
                )
                for e in es:
                    ax.annotate(f"{e['lsp']:g}", (e["flops_vs_full"], e[key]["mean"]), fontsize=7,
                                textcoords="offset points", xytext=(4, -8))  # fmt: skip
            ax.axhline(1.0, ls=":", color="black", lw=1, label="full-sequence student")
            ax.axhline(0.0, ls="--", color="grey", lw=1, label="untrained student")
            ax.set_xlabel("counted FLOPs / full-sequence student's (labels: lead span)")
            ax.set_ylabel(f"retained improvement, {label}")
            ax.set_title(textwrap.fill(f"{label}: " + meta["title"], 70), fontsize=8)

    data = {"meta": meta, "records": records, "aggregates": agg, "statements": statements}
    return _write(report_dir, stem, md, data, plot, panels=2)
