"""``hf-cot-distill eval``: evaluate a saved model, write a JSON and a markdown table."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def check_report_path(out: Path) -> None:
    """Refuse an ``eval --out`` that cannot be written (a folder, or a file where a folder must be)
    before the evaluation runs, not after it."""
    for path in (out, out.with_suffix(".md")):
        if path.is_dir():
            raise ValueError(
                f"eval --out {out}: {path} is a folder; fix: give a JSON file path, e.g. --out {out / 'eval.json'}."
            )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(
            f"eval --out {out}: {parent} is a file, not a folder; fix: give a JSON path in a folder."
        )


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the same path with ``.md`` (markdown table)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True))
    md = out.with_suffix(".md")
    md.write_text(report_markdown(report))
    return out, md
