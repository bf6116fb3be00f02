"""``make demo``: CoT data -> teacher -> two distilled students -> evaluation -> report, on CPU.

End to end on the embedded defaults in ``recipes/demo/`` and ``recipes/generators/demo_cot_icl.yaml``,
offline:

1. export the CoT-ICL Lab dataset (parquet + dataset card) to ``OUT/dataset``;
2. train the teacher (``recipes/demo/teacher.yaml``: CE on CoT + answer, from scratch);
3. distil two students from it with the same steps, data and seed:
   ``student_full_kd`` (KD + CE on prompt, CoT and answer, whole sequences) and
   ``student_cot_lsp0.5`` (KD + CE on the CoT only, first half of every sequence);
4. evaluate all three with greedy decoding (:func:`hf_cot_distill.eval.evaluate_cot_icl`, drop-k 0
   and with every context example's CoT dropped), beside the chance baselines;
5. write ``OUT/REPORT.md`` + ``OUT/report.json`` + ``OUT/quality_vs_compute.png``
   (:mod:`hf_cot_distill.experiments.demo_report`); the model cards are in each model folder.

Training goes through the same path as ``hf-cot-distill train --config RECIPE``. With
``isolate=True`` (the default of the full demo) each model trains in a fresh process, so its
peak memory is its own; ``isolate=False`` trains in this process (faster to start: used by the
reduced ``size="small"`` run of the tests), where the peak memory is cumulative.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hf_cot_distill.core.resources import RECIPES_DIR

RECIPES = RECIPES_DIR
GENERATOR_YAML = RECIPES / "generators" / "demo_cot_icl.yaml"


@dataclass(frozen=True)
class Variant:
    """One trained model of the demo: its folder name, recipe, and what it is."""

    name: str
    recipe: str
    description: str
    is_student: bool


VARIANTS: tuple[Variant, ...] = (
    Variant("teacher", "teacher.yaml", "teacher: 4 layers, width 64, CE on CoT + answer", False),
    Variant(
        "student_full_kd",
        "student_full_kd.yaml",
        "student (2 layers, width 32): 0.5·CE + 0.5·KL on prompt+CoT+answer, full sequences",
        True,
    ),
    Variant(
        "student_cot_lsp0.5",
        "student_cot_lsp0.5.yaml",
        "student (2 layers, width 32): 0.5·CE + 0.5·KL on the CoT only, lead-span 0.5",
        True,
    ),
)

# Sizes: overrides of the recipes' step / task counts. "full" = the recipes as written.
SIZES: dict[str, dict[str, int]] = {
    "full": {},
    "small": {"teacher_steps": 30, "student_steps": 20, "num_tasks": 256, "num_eval_tasks": 48},
}


def _recipe_overrides(variant: Variant, out: Path, size: dict[str, int]) -> list[str]:
    """``--key value`` overrides: absolute data/teacher paths, the output folder, the size."""
    argv = ["--output_dir", str(out / variant.name), "--dataset_name", f"generator:{GENERATOR_YAML}"]
    if variant.is_student:
        argv += ["--teacher_model_name_or_path", str(out / "teacher")]
    steps = size.get("student_steps" if variant.is_student else "teacher_steps")
    if steps is not None:
        argv += ["--max_steps", str(steps), "--logging_steps", str(max(steps // 2, 1))]
    if "num_tasks" in size:
        argv += ["--generator_num_tasks", str(size["num_tasks"])]
        argv += ["--generator_num_eval_tasks", str(size["num_eval_tasks"])]
    return argv


def _train(variant: Variant, out: Path, size: dict[str, int], isolate: bool, progress: bool) -> None:
    """Train one variant through the ``hf-cot-distill train`` path (a fresh process if ``isolate``)."""
    recipe = RECIPES / "demo" / variant.recipe
    argv = _recipe_overrides(variant, out, size)
    if not progress:
        argv += ["--disable_tqdm", "true"]
    if isolate:
        cmd = [sys.executable, "-m", "hf_cot_distill.cli", "train", "--config", str(recipe), *argv]
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"training {variant.name} failed (exit {done.returncode}); see the output above. "
                f"Command: {' '.join(cmd)}"
            )
        return
    from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments, parse_recipe
    from hf_cot_distill.pipelines.train import run_training
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    types = (ModelArguments, DataArguments, SectionKDConfig)
    run_training(*parse_recipe(types, recipe, argv), recipe_path=str(recipe))


def _evaluate(folder: Path, config: Any, rows: list[dict], drop_ks: tuple[int, ...]) -> list[dict]:
    """Greedy CoT-ICL evaluation of a saved model for each drop-k."""
    import torch
    from transformers import AutoModelForCausalLM

    from hf_cot_distill.eval import evaluate_cot_icl

    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True, dtype=torch.float32)
    return [evaluate_cot_icl(model, config, rows, drop_k=k, batch_size=32) for k in drop_ks]


def clear_earlier_demo(out_dir: str | Path) -> list[Path]:
    """Delete an earlier demo's model folders in ``out_dir`` (training refuses a non-empty folder)
    and return them. A folder holding anything else stops the demo with a ``ValueError``, before
    anything is deleted; ``out_dir`` being a file is refused too."""
    import shutil

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"demo --out {out} is a file; fix: give a folder (missing, or an earlier demo's).")
    earlier = []
    for variant in VARIANTS:
        folder = out / variant.name
        if not folder.is_dir() or not any(folder.iterdir()):
            continue
        card = folder / "README.md"
        text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else ""
        if not (folder / "training_args.json").is_file() or variant.recipe not in text:
            raise ValueError(
                f"demo --out {out}: {folder} holds files that are not an earlier demo's {variant.name}; fix: "
                "choose another --out, or move them away."
            )
        earlier.append(folder)
    for folder in earlier:
        shutil.rmtree(folder)
    return earlier


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    size: Literal["full", "small"] = "full",
    isolate: bool | None = None,
    progress: bool = True,
) -> Path:
    """Run the whole demo into ``out_dir``; returns the path of ``REPORT.md``.

    Args:
        out_dir: output folder (created; the demo's own sub-folders are overwritten).
        size: ``"full"`` (the recipes as written, a few minutes on 2 cores) or ``"small"``
            (a few steps on a few tasks: a smoke run whose accuracies mean nothing).
        isolate: train each model in a fresh process (own peak memory); default: ``True`` for
            ``"full"``, ``False`` for ``"small"``.
        progress: show progress bars.
    """
    from hf_cot_distill.data.builder import generate_table, load_generator_yaml
    from hf_cot_distill.experiments.demo_report import collect_variant, write_report
    from hf_cot_distill.hub.datasets import export_dataset

    if size not in SIZES:
        raise ValueError(f"size: {size!r} is unknown; fix: one of {sorted(SIZES)}.")
    isolate = (size == "full") if isolate is None else isolate
    sizes = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    name, config = load_generator_yaml(GENERATOR_YAML)
    if "num_tasks" in sizes:
        config = dataclasses.replace(
            config, num_tasks=sizes["num_tasks"], num_eval_tasks=sizes["num_eval_tasks"]
        )
    print(f"[1/5] Dataset: {name} ({config.num_tasks} train / {config.num_eval_tasks} eval tasks)")
    export_dataset(config, out / "dataset", config_name=name, progress=progress)

    for i, variant in enumerate(VARIANTS):
        print(f"[{i + 2}/5] Training {variant.name}: {variant.description}")
        _train(variant, out, sizes, isolate, progress)

    print("[5/5] Evaluating (greedy decoding on the eval split) and writing the report")
    import datasets

    eval_rows = datasets.Dataset(
        datasets.table.InMemoryTable(generate_table(config, 0, config.num_eval_tasks, "eval"))
    ).to_list()
    n_examples = max(config.n_examples_choices)
    drop_ks = (0, n_examples - 1)  # all context CoT shown / none shown
    results = []
    for variant in VARIANTS:
        evals = _evaluate(out / variant.name, config, eval_rows, drop_ks)
        results.append(collect_variant(out / variant.name, variant.name, variant.description, evals))
    report = write_report(
        out,
        results,
        dataset_name=name,
        config=config,
        size=size,
        isolated=isolate,
        total_wall_time_s=time.perf_counter() - start,
    )
    print(f"Report: {report}")
    return report
