"""Mini-reproductions of the papers' main findings, with seeds and confidence intervals.

* **R1** CoT-ICL Lab: ``standard`` vs ``cot`` prompt training, answer accuracy vs training steps.
* **R2** CoT-Recipe: the power-law CoT share (alpha in {0, 0.5, 1, 2, inf}) of
  ``hybrid_special_token`` prompts, each model evaluated with the CoT dropped from 0, 25%, 50%,
  75% and 100% of the context examples (the paper's 0, 10, 20, 30, 39 of 39).
* **R3** Distilling the Essence: KD allocation by section x lead-span proportion, quality retained
  (student / teacher accuracy) vs counted compute, one teacher, several student seeds. The student
  sweeps set ``teacher_cache: auto``: the teacher runs once per sweep into
  ``<output_root>/teacher_cache`` (CPU size: top-K with K = the 32-token vocabulary, the exact
  forward KL; GPU size: sampled, S = 12) and every student trains from it. A student's own logs
  count no teacher FLOPs (``flops_teacher`` 0); the report's ``flops_counted`` adds an equal share
  of the cache build's counted FLOPs (the teacher once over every row, its lm_head over the cached
  positions; ``cache_info.json``) over the points trained from that cache
  (:func:`cache_build_shares`). ``set_overrides={"teacher_cache": None}`` distils from the online
  teacher instead.
* **R3-champ** Distilling the Essence where its premise holds (CPU only): the real
  SmolLM2-135M-Instruct teacher, a 4-layer student built from its layers, real CHAMP reasoning
  traces (their CoT already states the answer); KD allocation {full, CoT + answer, CoT only} x lead
  span {0.25, 0.5, 1.0} x 3 seeds, scored teacher-forced on held-out traces (CE on the answer and on
  the CoT, KL to the teacher) against the untrained student and the teacher
  (:mod:`hf_cot_distill.experiments.reproduce_champ`).

``run_reproduction(name, size, out_dir)`` runs the sweep specs of ``reproductions/sweeps/``
through :func:`hf_cot_distill.pipelines.sweep.run_sweep` (finished points are skipped: re-running resumes),
evaluates the saved models with :func:`hf_cot_distill.eval.evaluate_cot_icl` (batched greedy
decoding; results cached in each model folder as ``reproduce_eval.json``), aggregates over seeds
and writes ``<report_dir>/<R>_<topic>_<size>.{md,json,png}``
(:mod:`hf_cot_distill.experiments.reproduce_report`)::

    hf-cot-distill reproduce R1 --size cpu --out reproductions/runs

``size="cpu"`` is sized for a 2-core CPU (tiny models, a few hundred steps); ``size="gpu"`` points
at the full-size recipes (``recipes/cot_icl_lab``, ``recipes/cot_recipe``, ``recipes/distill``).
Sweeps run with the repository root as working directory (the specs' relative paths).

``smoke=True`` (``--smoke``) runs seconds-long settings whose numbers mean nothing; it keeps apart
from the recorded runs: model folders under ``out_dir/<R>_smoke/``, report files named
``<R>_<topic>_<size>_smoke.*`` and written beside those model folders unless ``report_dir`` is
given. A point folder trained with other settings is refused, not resumed (see
:func:`hf_cot_distill.pipelines.sweep.run_sweep`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hf_cot_distill.core.validation import check_choice, check_int
from hf_cot_distill.experiments import reproduce_report as report

ROOT = Path(__file__).resolve().parents[2]  # the repository (sweep specs and reports live there)
SWEEPS_DIR = ROOT / "reproductions" / "sweeps"
NAMES = ("R1", "R2", "R3", "R3-champ")
SIZES = ("cpu", "gpu")
DESCRIPTION = (
    "Mini-reproductions R1-R3, R3-champ (train resumably, evaluate, report mean ± 95% CI over seeds)."
)
# The paper's drop levels 0, 10, 20, 30, 39 of 39 context examples, as fractions of the context.
DROP_FRACTIONS = (0.0, 10 / 39, 20 / 39, 30 / 39, 1.0)
DROP_MODE = "random_k"
# A seconds-long run of the whole pipeline (the slow tests): numbers mean nothing.
SMOKE_SET = {"max_steps": 8, "logging_steps": 4, "warmup_steps": 0}
SMOKE_SET |= {"generator_num_tasks": 64, "generator_num_eval_tasks": 16}
# R1 evaluates its checkpoints (save_strategy: steps); the others save only the final model.
SMOKE_SET_R1 = SMOKE_SET | {"save_steps": 4}
# R3-champ trains on a dataset folder (no generator): a few rows and steps instead.
SMOKE_SET_CHAMP = {"max_steps": 2, "logging_steps": 1, "warmup_steps": 0, "max_train_samples": 24}
# R3-champ: held-out traces scored per model (the first ones that fit max_length; smoke: fewer).
CHAMP_EVAL_ROWS, CHAMP_SMOKE_EVAL_ROWS = 12, 3


TOPICS = {
    "R1": "cot_icl_lab",
    "R2": "cot_recipe",
    "R3": "distill_essence",
    "R3-champ": "distill_essence_champ",
}  # report file names
# name -> size -> role -> sweep spec in reproductions/sweeps/ (run in this order).
SWEEP_FILES: dict[str, dict[str, dict[str, str]]] = {
    "R1": {"cpu": {"main": "r1_cpu.yaml"}, "gpu": {"main": "r1_gpu.yaml"}},
    "R2": {"cpu": {"main": "r2_cpu.yaml"}, "gpu": {"main": "r2_gpu.yaml"}},
    "R3": {
        "cpu": {
            "teacher": "r3_cpu_teacher.yaml",
            "main": "r3_cpu_students.yaml",
            "control": "r3_cpu_ce_follows_kd.yaml",
        },
        "gpu": {"main": "r3_gpu_students.yaml"},
    },
    "R3-champ": {"cpu": {"main": "r3_champ_cpu.yaml"}},
}


@contextlib.contextmanager
def _in_repo_root() -> Iterator[None]:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(cwd)


def resolve_sweep(
    path: Path,
    out_dir: Path,
    remap: dict[str, str],
    *,
    seeds: Sequence[int] | None = None,
    set_overrides: dict[str, Any] | None = None,
    grid_overrides: dict[str, list] | None = None,
) -> dict[str, Any]:
    """A sweep spec with ``output_root`` under ``out_dir`` and the given overrides.

    String values that start with an earlier sweep's ``output_root`` (the R3 teacher folder) are
    moved with it; ``remap`` (old root -> new root) is updated with this sweep's root.
    """
    from hf_cot_distill.pipelines.sweep import load_sweep

    spec = load_sweep(path)
    old_root = str(spec["output_root"]).rstrip("/")
    new_root = str(out_dir / path.stem)

    def move(value: Any) -> Any:
        for old, new in remap.items():
            if isinstance(value, str) and (value == old or value.startswith(old + "/")):
                return new + value[len(old) :]
        return value

    spec["output_root"] = new_root
    spec["set"] = {k: move(v) for k, v in spec["set"].items()} | dict(set_overrides or {})
    spec["grid"] = {k: [move(v) for v in vs] for k, vs in spec["grid"].items()}
    for key, values in (grid_overrides or {}).items():
        if key in spec["grid"]:
            spec["grid"][key] = list(values)
    if seeds is not None and "seed" in spec["grid"]:
        spec["grid"]["seed"] = [int(s) for s in seeds]
    remap[old_root] = new_root
    return spec


def _run_sweeps(
    name: str, size: str, out_dir: Path, remap: dict[str, str] | None = None, **overrides: Any
) -> dict[str, tuple]:
    """Run the sweeps of reproduction ``name`` in order; return ``role -> (resolved spec, summary)``.

    ``remap``: path prefixes of the specs to move first (old -> new), e.g. R3-champ's asset folder."""
    import yaml

    from hf_cot_distill.pipelines.sweep import run_sweep

    remap = dict(remap or {})
    done = {}
    for role, file in SWEEP_FILES[name][size].items():
        # one teacher: a seed override varies the students only
        kwargs = overrides | ({"seeds": None} if role == "teacher" else {})
        spec = resolve_sweep(SWEEPS_DIR / file, out_dir, remap, **kwargs)
        resolved = out_dir / f"{Path(file).stem}.resolved.yaml"
        resolved.write_text(yaml.safe_dump(spec, sort_keys=False))
        print(f"[reproduce {name}] sweep {file} -> {spec['output_root']}", flush=True)
        try:
            done[role] = (spec, run_sweep(resolved))
        except ValueError as err:
            raise ValueError(
                f"{err} (reproduce writes {resolved.name} itself: rather than editing it, pass "
                "another --out / out_dir, or delete the folder named.)"
            ) from None
    return done


def recipe_args(spec: dict[str, Any], point: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(ModelArguments, DataArguments, SectionKDConfig)`` of a sweep point (base recipe + set + point)."""
    from hf_cot_distill.pipelines.recipe import parse_recipe, recipe_argv, train_config_types

    argv = recipe_argv({**spec["set"], **point}, train_config_types()) + ["--output_dir", "unused"]
    return parse_recipe(train_config_types(), spec["recipe"], argv)


def generator_config(spec: dict[str, Any], point: dict[str, Any]) -> Any:
    """The generator config a sweep point trained on (as ``hf_cot_distill.pipelines.train`` builds it)."""
    from hf_cot_distill.data.builder import resolve_config

    _, data_args, _ = recipe_args(spec, point)
    name = data_args.dataset_name
    if not name or not name.startswith("generator:"):
        raise ValueError(f"{spec['recipe']}: dataset_name={name!r} is not a generator config.")
    _, config = resolve_config(name[len("generator:") :])
    overrides = {
        "num_tasks": data_args.generator_num_tasks,
        "num_eval_tasks": data_args.generator_num_eval_tasks,
    }
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


class _Evaluator:
    """Greedy CoT-ICL evaluation of saved folders, with eval rows and results cached."""

    def __init__(self, eval_tasks: int | None, batch_size: int = 128) -> None:
        self.eval_tasks = eval_tasks
        self.batch_size = batch_size
        self._rows: dict[Any, list[dict]] = {}

    def rows(self, config: Any) -> list[dict]:
        if config not in self._rows:
            from hf_cot_distill.data.builder import generate_table

            n = (
                config.num_eval_tasks
                if self.eval_tasks is None
                else min(self.eval_tasks, config.num_eval_tasks)
            )
            self._rows[config] = generate_table(config, 0, n, "eval").to_pylist()
        return self._rows[config]

    def __call__(self, folder: Path, config: Any, drop_ks: Sequence[int], parsed: bool = False) -> list[dict]:
        """``evaluate_cot_icl`` results of ``folder`` per drop-k (cached in the folder). With ``parsed``,
        the drop-0 result also holds ``answer_parsed_rate``: the share of generations with an answer."""
        import torch
        from transformers import AutoModelForCausalLM

        from hf_cot_distill.eval import evaluate_cot_icl, generate_chains
        from hf_cot_distill.eval.cot_icl import MISSING

        rows = self.rows(config)
        cache_file = folder / "reproduce_eval.json"
        cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
        keys = {k: f"drop{k}_{DROP_MODE}_n{len(rows)}" for k in drop_ks}
        todo = [k for k in drop_ks if keys[k] not in cache]
        parsed_key = f"answer_parsed_rate_drop0_n{len(rows)}"
        if todo or (parsed and parsed_key not in cache):
            device = "cuda" if torch.cuda.is_available() else "cpu"
            model = AutoModelForCausalLM.from_pretrained(
                str(folder), use_safetensors=True, dtype=torch.float32
            )
            model.to(device)
            for k in todo:
                mode = DROP_MODE if k else "first_k"
                cache[keys[k]] = evaluate_cot_icl(
                    model, config, rows, drop_k=k, drop_mode=mode, batch_size=self.batch_size
                )
            if parsed and parsed_key not in cache:
                chains = generate_chains(model, config, rows, drop_k=0, batch_size=self.batch_size)
                cache[parsed_key] = sum(c[-1] != MISSING for c in chains) / len(chains)
            cache_file.write_text(json.dumps(cache, indent=1))
        out = [dict(cache[keys[k]]) for k in drop_ks]
        for res in out:
            if parsed and res["drop_k"] == 0:
                res["answer_parsed_rate"] = cache[parsed_key]
        return out


def _r1_records(runs: dict, evaluator: _Evaluator) -> list[dict]:
    spec, summary = runs["main"]
    records = []
    for entry in summary:
        folder, config = Path(entry["output_dir"]), generator_config(spec, entry["point"])
        final = report.compute_counts(folder)["step"] or int(spec["set"].get("max_steps", 0))
        ckpts = {int(p.name.split("-")[1]): p for p in folder.glob("checkpoint-*") if p.is_dir()}
        family = "N={} M={} C={}".format(
            *(
                "/".join(map(str, getattr(config, f"{x}_choices")))
                for x in ("n_inputs", "n_parents", "chain_length")
            )
        )
        ckpts[final] = folder  # the saved final model (the last checkpoint holds the same weights)
        for step, path in sorted(ckpts.items()):
            (res,) = evaluator(path, config, [0])
            records.append(
                {"family": family, "strategy": config.prompt_strategy, "seed": entry["point"].get("seed")}
                | {"step": step}
                | report.eval_fields(res)
            )
    return records


def drop_levels(n_context: int) -> list[int]:
    """The paper's relative drop levels for ``n_context`` context examples (39 -> 0,10,20,30,39)."""
    return sorted({round(f * n_context) for f in DROP_FRACTIONS})


def _r2_records(runs: dict, evaluator: _Evaluator) -> list[dict]:
    spec, summary = runs["main"]
    records = []
    for entry in summary:
        config = generator_config(spec, entry["point"])
        n_ctx = max(config.n_examples_choices) - 1
        alpha = config.cot_schedule.alpha if config.cot_schedule else math.nan
        for res in evaluator(Path(entry["output_dir"]), config, drop_levels(n_ctx)):
            rec = {"alpha": alpha, "seed": entry["point"].get("seed"), "n_context": n_ctx}
            records.append(rec | {"drop_fraction": res["drop_k"] / n_ctx} | report.eval_fields(res))
    return records


def cache_build_shares(runs: dict) -> dict[str, dict[str, Any]]:
    """Per teacher-cache folder that points of ``runs`` trained from: its build's counted FLOPs
    (``cache_info.json``; ``None`` for a cache built before they were recorded), the points that
    share it and each one's equal share of the build (a student trained from a cache counts no
    teacher FLOPs itself; the build ran the teacher once for all of them)."""
    users: dict[str, int] = {}
    for role, (spec, summary) in runs.items():
        if role == "teacher":
            continue
        for entry in summary:
            folder = entry.get("teacher_cache") or recipe_args(spec, entry["point"])[2].teacher_cache
            if folder:
                users[str(folder)] = users.get(str(folder), 0) + 1
    shares = {}
    for folder, n in users.items():
        info_file = Path(folder) / "cache_info.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        flops = info.get("stats", {}).get("build_flops")
        shares[folder] = {"build_flops": flops, "points": n, "share": None if flops is None else flops / n}
    return shares


def _r3_records(runs: dict, evaluator: _Evaluator | None) -> tuple[list[dict], dict | None]:
    teacher = None
    shares = cache_build_shares(runs)
    if evaluator is not None and "teacher" in runs:
        spec, summary = runs["teacher"]
        (res,) = evaluator(
            Path(summary[0]["output_dir"]), generator_config(spec, summary[0]["point"]), [0], parsed=True
        )
        teacher = report.eval_fields(res)
    records = []
    for group in ("main", "control"):
        if group not in runs:
            continue
        spec, summary = runs[group]
        for entry in summary:
            folder, kd = Path(entry["output_dir"]), recipe_args(spec, entry["point"])[2]
            lsp = _lead_span(kd)
            alloc = kd.supervision_preset
            rec = {"group": group, "allocation": alloc, "lsp": lsp, "seed": kd.seed}
            rec["ce_sections"] = kd.ce_sections or alloc
            rec |= report.compute_counts(folder)
            _cache_fields(rec, entry, kd, shares)
            rec["quality_retained"] = None
            if evaluator is not None and teacher is not None:
                (res,) = evaluator(folder, generator_config(spec, entry["point"]), [0], parsed=True)
                rec |= report.eval_fields(res)
                if teacher["answer_accuracy"] > 0:
                    rec["quality_retained"] = res["answer_accuracy"] / teacher["answer_accuracy"]
            records.append(rec)
    return records, teacher


def _cache_fields(rec: dict, entry: dict, kd: Any, shares: dict) -> None:
    """Add the teacher-cache fields of a point trained from a cache (its share of the build's FLOPs)."""
    cache = entry.get("teacher_cache") or kd.teacher_cache
    if cache:  # the counted FLOPs include this point's share of the cache build
        share = shares[str(cache)]
        rec["teacher_cache"] = str(cache)
        rec["cache_points"] = share["points"]
        rec["flops_cache_build"] = share["build_flops"]
        rec["flops_cache_share"] = share["share"]
        if share["share"] is not None and rec.get("flops_counted") is not None:
            rec["flops_counted"] += share["share"]


def _lead_span(kd: Any) -> float:
    if kd.truncation_policy == "lead_span_proportion":
        return float(_as_dict(kd.truncation_kwargs).get("lead_span_proportion", 1.0))
    return 1.0


def champ_evaluator(spec: dict[str, Any], work: Path, n_eval: int) -> Any:
    """The R3-champ :class:`~hf_cot_distill.experiments.reproduce_champ.SectionEvaluator` of a sweep:
    the first ``n_eval`` held-out rows that the first point's encoding keeps, scored against its teacher."""
    from transformers import AutoTokenizer

    from hf_cot_distill.experiments.reproduce_champ import SectionEvaluator, eval_data_args
    from hf_cot_distill.pipelines.training_data import prepare_data

    point = grid_points_of(spec)[0]
    model_args, data_args, kd = recipe_args(spec, point)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    rows = prepare_data(eval_data_args(data_args, None), tokenizer).train
    rows = rows.select(range(min(n_eval, len(rows))))
    return SectionEvaluator(list(rows), kd.teacher_model_name_or_path, work)


def grid_points_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    from hf_cot_distill.pipelines.sweep import grid_points

    return grid_points(spec["grid"])


def _r3_champ_records(runs: dict, evaluator: Any, work: Path) -> tuple[list[dict], dict]:
    """Per point: allocation, lead span, seed, compute counts and the held-out section scores; and
    the references (the teacher, the untrained student) scored on the same rows, plus
    ``references["failed"]``: the points whose training failed (named with their error, left out
    of the records; a re-run retrains them)."""
    spec, summary = runs["main"]
    shares = cache_build_shares(runs)
    model_args, _, kd0 = recipe_args(spec, summary[0]["point"])
    references = {
        "teacher": evaluator(kd0.teacher_model_name_or_path, kl=False, cache_file=work / "eval_teacher.json"),
        "untrained": evaluator(
            model_args.model_name_or_path, cache_file=work / "eval_untrained_student.json"
        ),
    }
    config = Path(str(model_args.model_name_or_path)) / "config.json"
    if config.is_file():
        references["vocab_size"] = json.loads(config.read_text()).get("vocab_size")
    records, references["failed"] = [], []
    for entry in summary:
        folder, kd = Path(entry["output_dir"]), recipe_args(spec, entry["point"])[2]
        if entry.get("status") == "failed":
            references["failed"].append(f"{folder.name}: {entry.get('error', 'failed')}")
            continue
        rec = {"group": "main", "allocation": kd.supervision_preset, "lsp": _lead_span(kd), "seed": kd.seed}
        rec["ce_sections"] = kd.ce_sections or kd.supervision_preset
        rec |= report.compute_counts(folder)
        _cache_fields(rec, entry, kd, shares)
        rec |= evaluator(folder)
        records.append(rec)
    return records, references


def _as_dict(value: Any) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def _command_lines(name: str, size: str, out_dir: Path, smoke: bool = False) -> list[str]:
    cmds = [f"hf-cot-distill reproduce {name} --size {size} --out {out_dir}" + " --smoke" * smoke]
    cmds += ["# the same training through the sweep runner alone (from the repository root):"]
    cmds += [
        f"hf-cot-distill sweep --config reproductions/sweeps/{f}" for f in SWEEP_FILES[name][size].values()
    ]
    return cmds


def claim_out_dir(out_dir: str | os.PathLike, inputs: dict[str, Any] | None = None) -> Path:
    """``out_dir`` through the one output rule (:mod:`hf_cot_distill.core.outputs`): a new or empty
    folder, or one ``reproduce`` wrote (its marker: re-running resumes), then created and marked;
    never the cwd, home, a file, or a folder holding (or inside) the sweep specs or ``inputs``.

    A folder from before the marker counts as reproduce's when all it holds is run folders
    (``R1``, ``R3-champ_smoke``, ...); the sweeps' own folders inside are checked by the sweep runner."""
    from hf_cot_distill.core.outputs import claim_output_dir, written_by

    out = Path(out_dir)
    runs = {n + suffix for n in NAMES for suffix in ("", "_smoke")}
    earlier = out.is_dir() and written_by(out) is None and all(p.name in runs for p in out.iterdir())
    given = {"reproductions/sweeps": str(SWEEPS_DIR), **(inputs or {})}
    return claim_output_dir(out, "reproduce", overwrite=earlier, inputs=given, overwrite_flag=None)


def run_reproduction(
    name: str,
    size: str = "cpu",
    out_dir: str | os.PathLike = "reproductions/runs",
    *,
    report_dir: str | os.PathLike | None = None,
    seeds: Sequence[int] | None = None,
    set_overrides: dict[str, Any] | None = None,
    grid_overrides: dict[str, list] | None = None,
    eval_tasks: int | None = None,
    threads: int | None = 1,
    smoke: bool = False,
    champ_assets: dict[str, Any] | None = None,
) -> Path:
    """Train (resumably), evaluate, aggregate and report one reproduction; returns the ``.md`` path.

    Args:
        name: ``"R1"``, ``"R2"``, ``"R3"`` or ``"R3-champ"``.
        size: ``"cpu"`` (tiny models, minutes on 2 cores) or ``"gpu"`` (the full-size recipes);
            R3-champ has the ``"cpu"`` size only.
        out_dir: model folders go to ``out_dir/<name>/<sweep>/<point>`` (keep it out of git);
            smoke runs use ``out_dir/<name>_smoke/``.
        report_dir: where ``<name>_<topic>_<size>.{md,json,png}`` go (default ``reproductions/``);
            smoke reports are ``<name>_<topic>_<size>_smoke.*`` (default: ``out_dir/<name>_smoke/``).
        seeds: replace the sweeps' seed lists (default: the specs', 3 seeds).
        set_overrides: extra fixed recipe overrides for every sweep (e.g. ``{"max_steps": 50}``).
        grid_overrides: replace the values of grid keys (e.g. fewer lead spans).
        eval_tasks: evaluate on at most this many eval tasks (>= 1; default: the config's eval split);
            R3-champ: held-out traces (default :data:`CHAMP_EVAL_ROWS`).
        threads: ``torch.set_num_threads`` for the run (>= 1; ``None`` leaves it). 1 by default: these
            models are tiny and a shared 2-core machine runs them much faster single-threaded.
        smoke: seconds-long settings (8 steps, 64 tasks) for tests; the numbers mean nothing. Kept
            apart from full runs (own model folders and report names).
        champ_assets: R3-champ only: keyword arguments of
            :func:`~hf_cot_distill.experiments.reproduce_champ.prepare_assets` (``teacher_source``,
            ``layers``, ``n_train``, ``n_test``; default: the SmolLM2 GGUF, layers 0/10/20/29, every row).
    """
    check_choice("name", name, list(SWEEP_FILES))
    check_choice("size", size, SIZES)
    if size not in SWEEP_FILES[name]:
        raise ValueError(f"size={size!r}: {name} has the sizes {list(SWEEP_FILES[name])}; fix: --size cpu.")
    if champ_assets is not None and name != "R3-champ":
        raise ValueError(f"champ_assets: only R3-champ prepares assets, not {name}; fix: leave it None.")
    for field, value in (("eval_tasks", eval_tasks), ("threads", threads)):
        if value is not None:  # None: the default
            check_int(field, value, minimum=1, fix="pass an int >= 1, or None for the default")
    for i, seed in enumerate(seeds or ()):
        check_int(f"seeds[{i}]", seed, minimum=0, maximum=2**32 - 1, fix="seeds are ints in [0, 2**32)")
    if not SWEEPS_DIR.is_dir():
        raise FileNotFoundError(
            f"{SWEEPS_DIR} is missing: reproductions run from a source checkout of hf-cot-distill (their sweep "
            "specs and recorded reports live in the repository); fix: clone it and `pip install -e .`."
        )
    run_name = f"{name}_smoke" if smoke else name  # smoke runs never resume or overwrite full ones
    teacher_source = (champ_assets or {}).get("teacher_source")
    out = claim_out_dir(out_dir, inputs={"teacher_source": teacher_source}).resolve() / run_name
    out.mkdir(exist_ok=True)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if report_dir is not None:
        report_path = Path(report_dir).resolve()
    else:
        report_path = out if smoke else ROOT / "reproductions"
    champ = name == "R3-champ"
    smoke_set = SMOKE_SET_CHAMP if champ else SMOKE_SET_R1 if name == "R1" else SMOKE_SET
    overrides = (smoke_set if smoke else {}) | dict(set_overrides or {})
    start = time.perf_counter()
    remap, references = {}, None
    if champ:
        from hf_cot_distill.experiments.reproduce_champ import ASSETS, prepare_assets

        prepare_assets(out / "assets", **(champ_assets or {}))
        remap[ASSETS] = str(out / "assets")
    with _in_repo_root():
        runs = _run_sweeps(
            name, size, out, remap, seeds=seeds, set_overrides=overrides, grid_overrides=grid_overrides
        )
        quality = not (name == "R3" and size == "gpu")  # OpenThoughts students: no CoT-ICL eval split
        evaluator = _Evaluator(eval_tasks) if quality and not champ else None
        if champ:
            n_eval = eval_tasks or (CHAMP_SMOKE_EVAL_ROWS if smoke else CHAMP_EVAL_ROWS)
            champ_eval = champ_evaluator(runs["main"][0], out, n_eval)
            records, references = _r3_champ_records(runs, champ_eval, out)
            teacher = None
        elif name == "R1":
            records, teacher = _r1_records(runs, evaluator), None
        elif name == "R2":
            records, teacher = _r2_records(runs, evaluator), None
        else:
            records, teacher = _r3_records(runs, evaluator)
    main_spec = runs["main"][0]
    meta = {
        "name": name,
        "title": report.TEXTS[name][0] + (" (smoke run: numbers mean nothing)" if smoke else ""),
        "setup": report.TEXTS[name][1],
        "size": size,
        "seeds": main_spec["grid"].get("seed", [main_spec["set"].get("seed", 0)]),
        "eval_count": records[0].get("count", "n/a") if records else 0,
        "eval_note": "drop-k as in the table" if name == "R2" else "full CoT context, drop-k 0",
        "references": references,
        "wall_time_s": time.perf_counter() - start,
        "train_wall_time_s_sum": sum(
            float(e["metrics"].get("wall_time_s") or 0.0) for _, summary in runs.values() for e in summary
        ),
        "models_trained": sum(len(summary) for _, summary in runs.values()),
        "threads": f"torch threads: {threads if threads is not None else torch.get_num_threads()}",
        "seed_note": report.SEED_NOTE_CHAMP if champ else report.SEED_NOTE,
        "notes": list(report.NOTES[name]) if size == "cpu" and not smoke else [],
        "commands": _command_lines(name, size, Path(out_dir), smoke),
        "sweeps": report.relative_paths({role: spec for role, (spec, _) in runs.items()}, ROOT),
        "teacher": teacher,
        "overrides": overrides,
    }
    # every invocation's wall time (re-runs resume: the total is what the run cost)
    log = out / f"invocations_{size}{'_smoke' if smoke else ''}.json"
    meta["invocations"] = json.loads(log.read_text()) if log.is_file() else []
    meta["invocations"].append(
        {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_time_s": meta["wall_time_s"]}
    )
    log.write_text(json.dumps(meta["invocations"], indent=1))
    stem = f"{name}_{TOPICS[name]}_{size}" + ("_smoke" if smoke else "")
    if champ:
        meta["eval_count"] = records[0]["eval_rows"] if records else 0
        meta["eval_text"] = f"{meta['eval_count']} held-out traces per model (teacher-forced, no decoding)"
    writer = {"R1": report.write_r1, "R2": report.write_r2, "R3": report.write_r3}
    writer = writer | {"R3-champ": report.write_r3_champ}
    writer = writer[name]
    return writer(report_path, stem, records, meta)
