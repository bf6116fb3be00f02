"""``hf-cot-distill eval``: evaluate a saved model, write a JSON and a markdown table."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cot_distill.core.outputs import nearest_existing
from hf_cot_distill.core.tables import markdown_table
from hf_cot_distill.data.builder import generate_table, resolve_config
from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig
from hf_cot_distill.data.synthetic.symbolic import SymbolicConfig
from hf_cot_distill.eval.cot_icl import evaluate_cot_icl


def _load_model(model_dir: str):
    """The saved model (safetensors only); a clear error for a missing folder or one that does not load."""
    from hf_cot_distill.models.loading import load_causal_lm

    try:
        return load_causal_lm(model_dir, "model", trust_remote_code=False)
    except ValueError as err:
        folder = Path(model_dir)
        if folder.is_dir():
            raise  # its message names the pickle-only folder, or what else did not load
        where = "is a file, not a folder" if folder.exists() else f"does not exist (cwd: {Path.cwd()})"
        raise FileNotFoundError(
            f"model: {model_dir!r} {where}, and is not a model the Hub could provide; "
            "fix: pass the model folder a train run saved (its output_dir)."
        ) from err


def _check_drop_options(name: str, gen: Any, drop_ks: Sequence[int], drop_mode: str) -> None:
    if not isinstance(gen, CoTICLConfig) and (list(drop_ks) != [0] or drop_mode != "first_k"):
        raise ValueError(
            f"drop_ks={list(drop_ks)}, drop_mode={drop_mode!r}: dropping think blocks applies to CoT-ICL "
            f"configs only, and {name!r} is a {type(gen).__name__}; fix: leave out --drop-k / --drop-mode."
        )


def _check_tokenizer(model_dir: str, name: str) -> None:
    """A symbolic config evaluates text: the model folder must carry its tokenizer."""
    from hf_cot_distill.models.loading import TOKENIZER_FILES, has_tokenizer_files

    folder = Path(model_dir)
    if folder.is_dir() and not has_tokenizer_files(folder):
        raise ValueError(
            f"model: {model_dir!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}), and {name!r} is a "
            "text config; fix: evaluate a model trained on text (its folder holds the tokenizer), or save the "
            f"student's tokenizer there: AutoTokenizer.from_pretrained(<student>).save_pretrained({model_dir!r})."
        )


def _check_vocab(model: Any, model_dir: str, name: str, gen: CoTICLConfig) -> None:
    rows = model.get_input_embeddings().num_embeddings
    if rows < gen.vocab_size:
        raise ValueError(
            f"model: {model_dir!r} has {rows} token embeddings, but config {name!r} uses token ids up to "
            f"{gen.vocab_size - 1} (vocab_size={gen.vocab_size}); fix: evaluate on the generator config the "
            "model was trained on (the dataset_name of its recipe, e.g. a generator YAML)."
        )


def evaluate_saved_model(
    model_dir: str,
    config: str,
    *,
    num_tasks: int | None = None,
    drop_ks: Sequence[int] = (0,),
    drop_mode: str = "first_k",
    batch_size: int = 16,
    split: str = "eval",
) -> dict[str, Any]:
    """Evaluate ``model_dir`` on the eval split of a generator config (CoT-ICL Lab or symbolic).

    Returns ``{"model", "config", "results": [one dict per drop_k]}`` (CoT-ICL) or
    ``{"model", "config", "results": [symbolic metrics]}``. Raises ``ValueError`` /
    ``FileNotFoundError`` (before generating or evaluating anything) for a missing or unloadable
    model folder, a symbolic config with a folder that has no tokenizer, ``drop_ks`` / ``drop_mode``
    with a config that is not CoT-ICL, and a model whose vocabulary the config's token ids overflow.
    """
    name, gen = resolve_config(config)
    n = num_tasks if num_tasks is not None else (gen.num_eval_tasks if split == "eval" else gen.num_tasks)
    if n < 1:
        raise ValueError(f"num_tasks={n}: evaluate on at least one task.")
    _check_drop_options(name, gen, drop_ks, drop_mode)
    if isinstance(gen, SymbolicConfig):
        _check_tokenizer(model_dir, name)
    model = _load_model(model_dir)
    if isinstance(gen, CoTICLConfig):
        _check_vocab(model, model_dir, name, gen)
    gen = dataclasses.replace(gen, num_eval_tasks=n) if split == "eval" else gen
    rows = generate_table(gen, 0, n, split).to_pylist()
    if isinstance(gen, CoTICLConfig):
        results = [
            evaluate_cot_icl(model, gen, rows, drop_k=k, drop_mode=drop_mode, batch_size=batch_size)
            for k in drop_ks
        ]
    elif isinstance(gen, SymbolicConfig):
        from transformers import AutoTokenizer

        from hf_cot_distill.eval.generation import evaluate_symbolic

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        res = evaluate_symbolic(
            model, tokenizer, rows, answer_header=gen.answer_header, batch_size=batch_size
        )
        res.pop("completions")
        results = [res]
    else:  # resolve_config only returns the two kinds
        raise TypeError(type(gen).__name__)
    return {"model": str(model_dir), "config": name, "split": split, "num_tasks": n, "results": results}


def report_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The numeric results of a report as table headers and rows (one row per drop-k for CoT-ICL)."""
    rows = report["results"]
    if not rows:
        return [], []
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return keys, [[_fmt(r[k]) for k in keys] for r in rows]


def report_markdown(report: dict[str, Any]) -> str:
    """A title line and the results table."""
    head, rows = report_rows(report)
    title = (
        f"Model `{report['model']}` on `{report['config']}` ({report['split']}, {report['num_tasks']} tasks)"
    )
    return title + "\n\n" + (markdown_table(head, rows) if head else "(no results)\n")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


REPORT_MARK = "hf-cot-distill eval"  # in every report this command writes (JSON key / markdown comment)


def default_report_path(model_dir: str | Path) -> Path:
    """Where ``eval`` writes when ``--out`` is not given: beside the model folder, never inside it
    (``runs/student`` -> ``runs/student.eval.json``)."""
    folder = Path(model_dir)
    return folder.parent / f"{folder.name or folder.resolve().name}.eval.json"


def _written_by_eval(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".md":
        return text.startswith(f"<!-- {REPORT_MARK} -->")
    try:
        return json.loads(text).get("written_by") == REPORT_MARK
    except (ValueError, AttributeError):
        return False


def check_report_path(
    out: str | Path, *, inputs: dict[str, str | None] | None = None, overwrite: bool = False
) -> Path:
    """The output rule for ``eval --out`` (a JSON file and the same path with ``.md``), before the
    evaluation runs: refused are a folder, a path under a file, a path inside an input (``inputs``:
    flag -> path, e.g. the model folder), and an existing file that an earlier ``eval`` did not
    write, unless ``overwrite``. ``ValueError`` naming the path and the fix."""
    out = Path(out)
    for path in (out, out.with_suffix(".md")):
        if path.is_dir():
            raise ValueError(
                f"eval --out {out}: {path} is a folder; fix: give a JSON file path, e.g. --out {out / 'eval.json'}."
            )
    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise ValueError(
            f"eval --out {out}: {parent} is a file, not a folder; fix: give a JSON path in a folder."
        )
    resolved = out.resolve()
    for flag, given in (inputs or {}).items():
        if given and Path(given).is_dir() and Path(given).resolve() in resolved.parents:
            raise ValueError(
                f"eval --out {out}: lies inside the input {flag} {given}; fix: write the report outside it, e.g. "
                f"--out {default_report_path(given)}."
            )
    if not overwrite:
        for path in (out, out.with_suffix(".md")):
            if path.exists() and not _written_by_eval(path):
                raise ValueError(
                    f"eval --out {out}: {path} exists and was not written by `hf-cot-distill eval`; nothing was "
                    "written; fix: another --out, or pass --overwrite to replace it."
                )
    return out


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the same path with ``.md`` (markdown table), both marked as written
    by ``eval`` (so a later ``eval`` may replace them, and nothing else)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "written_by": REPORT_MARK}, indent=2, sort_keys=True))
    md = out.with_suffix(".md")
    md.write_text(f"<!-- {REPORT_MARK} -->\n" + report_markdown(report))
    return out, md


# ---- math benchmarks (AIME-style boxed answers): ``hf-cot-distill eval-math`` ---------------

MATH_EVAL_FOLDER = "eval"  # packaged math-eval specs: recipes/eval/<name>.yaml
_DATA_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def resolve_math_eval_spec(config: str) -> tuple[str, Path]:
    """``config``: a spec YAML path (a path that exists wins), a packaged name (``eval/aime25_boxed``)
    or a bare name looked up in ``recipes/eval/`` (``aime25_boxed``). Returns ``(name, path)``."""
    from hf_cot_distill.core.resources import packaged_recipe, resolve_recipe

    try:
        path = resolve_recipe(config, "eval-math --config")
    except FileNotFoundError:
        found = packaged_recipe(f"{MATH_EVAL_FOLDER}/{config}")
        if found is None:
            from hf_cot_distill.core.resources import list_recipes

            names = [n.split("/", 1)[1] for n in list_recipes() if n.startswith(f"{MATH_EVAL_FOLDER}/")]
            raise FileNotFoundError(
                f"eval-math --config {config!r}: no such file and no packaged math-eval spec of that name; fix: "
                f"a spec YAML (fields of MathEvalSpec) or one of: {', '.join(names) or '(none packaged)'}."
            ) from None
        path = found
    return path.stem, path


def load_math_problems(spec: Any, dataset: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``spec``'s benchmark (``spec.split``), or of ``dataset`` instead of
    ``spec.dataset_name``: a Hub id, a dataset folder, or one data file (.parquet, .json, .jsonl,
    .csv). A failure is a ``ValueError`` naming the source and the fix."""
    import datasets

    name = dataset or spec.dataset_name
    flag = "--dataset" if dataset else "dataset_name (of the spec; override with --dataset)"
    path = Path(name)
    try:
        if path.is_file():
            builder = _DATA_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ValueError(
                    f"{flag} {name!r}: a {path.suffix or 'suffix-less'} file; fix: a .parquet, .json, .jsonl or .csv "
                    "file, or a dataset folder."
                )
            rows = datasets.load_dataset(builder, data_files={spec.split: str(path)}, split=spec.split)
        else:
            rows = datasets.load_dataset(name, spec.dataset_config if not dataset else None, split=spec.split)
    except (ConnectionError, FileNotFoundError) as err:
        offline = " (offline mode: HF_HUB_OFFLINE=1)" if datasets.config.HF_HUB_OFFLINE else ""
        raise ValueError(
            f"{flag} {name!r}: not a local file or folder (nothing at {path.absolute()}), and the Hub could not "
            f"provide it{offline}: {err}; fix: pass --dataset with a local copy (columns {spec.problem_field!r} "
            f"and {spec.answer_field!r}), or go online."
        ) from err
    except datasets.exceptions.DatasetGenerationError as err:
        raise ValueError(f"{flag} {name!r}: could not read it: {err.__cause__ or err}") from err
    except ValueError as err:
        if "split" not in str(err).lower():
            raise
        raise ValueError(
            f"{flag} {name!r}: no split {spec.split!r} ({err}); fix: set split in the spec to one it has."
        ) from err
    if len(rows) == 0:
        raise ValueError(f"{flag} {name!r}: split {spec.split!r} has 0 rows; fix: a dataset with problems.")
    return rows.to_list()


def default_math_report_path(model_dir: str | Path, config_name: str) -> Path:
    """Where ``eval-math`` writes without ``--out``: beside the model folder like ``eval``
    (:func:`default_report_path`), named after the benchmark so it never replaces the ``eval``
    report (``runs/student`` -> ``runs/student.aime25_boxed.eval.json``)."""
    plain = default_report_path(model_dir)
    return plain.with_name(plain.name.removesuffix(".eval.json") + f".{config_name}.eval.json")


def evaluate_math_model(
    model_dir: str,
    config: str,
    *,
    dataset: str | None = None,
    num_samples: int | None = None,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate the saved chat model ``model_dir`` (safetensors, with its tokenizer) on a math
    benchmark spec (:func:`resolve_math_eval_spec`), its problems from ``dataset`` when given
    (``limit``: the first N only), with ``num_samples`` / ``max_new_tokens`` replacing the spec's.

    Returns ``{"model", "config", "split", "num_tasks", "dataset", "spec", "results": [scores],
    "answers", "completions"}`` (the shape :func:`write_report` writes). Every input is checked
    (spec, dataset, model folder and tokenizer, math-verify) before the model generates anything.
    """
    from hf_cot_distill.eval.math_benchmark import (
        evaluate_math_benchmark,
        load_math_eval_yaml,
        problems_and_answers,
    )

    name, path = resolve_math_eval_spec(config)
    spec = load_math_eval_yaml(path)
    changes = {
        k: v for k, v in (("num_samples", num_samples), ("max_new_tokens", max_new_tokens)) if v is not None
    }
    spec = dataclasses.replace(spec, **changes)  # re-validated (e.g. greedy with several samples)
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: evaluate at least one problem; fix: --limit N with N >= 1.")
    rows = load_math_problems(spec, dataset)[:limit]
    problems_and_answers(spec, rows)  # the columns, before the model loads
    from hf_cot_distill.eval.answers import math_verify_available

    if not math_verify_available():
        raise ImportError("eval-math scores with math-verify; fix: pip install 'hf-cot-distill[math]'.")
    _check_tokenizer(model_dir, name)
    model = _load_model(model_dir)
    import torch
    from transformers import AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    result = evaluate_math_benchmark(model, tokenizer, spec, rows)
    completions = result.pop("completions")
    _, answers = problems_and_answers(spec, rows)
    return {
        "model": str(model_dir),
        "config": name,
        "split": spec.split,
        "num_tasks": len(rows),
        "dataset": dataset or spec.dataset_name,
        "spec": dataclasses.asdict(spec),
        "results": [result],
        "answers": answers,
        "completions": completions,
    }
