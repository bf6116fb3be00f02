"""The ``hf-cot-distill`` command line: argument parsing and a ``{command: handler}`` table.

The only module that parses command lines. Each handler turns parsed arguments into one call of
the library (``pipelines``, ``experiments``, ``hub``, ...) and a refused input into ``error: ...``
on stderr with exit code 2. Nothing heavy is imported before a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

# Errors a command turns into one `error:` line and exit code 2 (anything else is a bug: traceback).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
)


def _int_at_least(minimum: int):
    """An argparse type: an int >= ``minimum``, with a message that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid: must be an int >= {minimum}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _error(message: object, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-cot-distill", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic CoT dataset as parquet + dataset card")
    gen.add_argument(
        "--config",
        required=True,
        help="a named config (see `hf-cot-distill list-configs`), a generator YAML file, or a packaged one",
    )
    gen.add_argument("--out", required=True, help="output folder (load it with load_dataset(OUT, NAME))")
    gen.add_argument("--num-tasks", type=_positive_int, help="training tasks (default: the config's)")
    gen.add_argument(
        "--num-eval-tasks", type=_nonnegative_int, help="eval tasks (default: the config's; 0: no eval split)"
    )
    gen.add_argument("--tasks-per-shard", type=_positive_int, default=4096)
    gen.add_argument("--name", help="config name in the output folder (default: the config's name)")
    gen.add_argument(
        "--push",
        "--push-to-hub",
        "--push_to_hub",
        dest="push",
        metavar="REPO",
        help="then push the output folder to this Hub dataset repo",
    )
    gen.add_argument("--private", action="store_true", help="with --push: create the repo private")
    gen.add_argument("--revision", help="with --push: the branch to push to (created if missing)")
    gen.add_argument("--no-progress", action="store_true")
    gen.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out not written by generate (its files stay)",
    )

    push = sub.add_parser(
        "push",
        help="upload a model or dataset folder with its card to the Hub",
        description="Upload FOLDER to the Hub. Token: HF_TOKEN or `hf auth login`; endpoint: HF_ENDPOINT.",
    )
    push.add_argument("folder", help="a save_pretrained model folder or a `generate --out` dataset folder")
    push.add_argument("--repo-id", required=True, help="namespace/name")
    push.add_argument("--repo-type", choices=("model", "dataset"), default="model")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="the branch to push to (created if missing)")
    push.add_argument("--commit-message")

    sub.add_parser("list-configs", help="list the named generator configs")

    recipes = sub.add_parser("recipes", help="the recipes shipped with the package: list, show, copy")
    rsub = recipes.add_subparsers(dest="recipes_command", required=True)
    rsub.add_parser("list", help="every packaged recipe by name (use a name as --config NAME)")
    show = rsub.add_parser("show", help="print a packaged recipe")
    show.add_argument("name", help="a name from `recipes list`, e.g. tiny/kd_messages")
    copy = rsub.add_parser("copy", help="copy a packaged recipe to edit it (never replaces a file)")
    copy.add_argument("name", help="a name from `recipes list`")
    copy.add_argument("dest", help="a new file path, or an existing folder to copy into")

    demo = sub.add_parser("demo", help="the end-to-end demo, offline on CPU")
    demo.add_argument("--out", default="demo_output")
    demo.add_argument(
        "--small", action="store_true", help="a reduced smoke run (seconds; numbers mean little)"
    )

    sub.add_parser(
        "compress",
        help="prune / KD-recover / quantize a model from a recipe: compress --config RECIPE",
        add_help=False,  # `compress --help` lists every recipe field (see _compress)
    )
    sub.add_parser(
        "cache-teacher",
        help="run a recipe's teacher once and store its targets: cache-teacher --config RECIPE --out DIR",
        add_help=False,  # `cache-teacher --help` lists the cache options and every recipe field
    )
    sub.add_parser(
        "train",
        help="train / distill from a recipe: train --config RECIPE [--field value ...]",
        add_help=False,  # `train --help` lists every recipe field (see _train)
    )

    ev = sub.add_parser("eval", help="evaluate a saved model on a generator config's eval split")
    ev.add_argument("--model", required=True, help="a saved model folder (safetensors)")
    ev.add_argument("--config", required=True, help="a named generator config or a generator YAML")
    ev.add_argument("--num-tasks", type=_positive_int, help="eval tasks (default: the config's)")
    ev.add_argument(
        "--drop-k", type=_nonnegative_int, nargs="+", default=[0], help="CoT-ICL: think blocks dropped"
    )
    ev.add_argument("--drop-mode", default="first_k", choices=("first_k", "last_k", "random_k"))
    ev.add_argument("--batch-size", type=_positive_int, default=16)
    ev.add_argument("--out", help="JSON path (a .md table is written beside it); default: MODEL/eval.json")

    sw = sub.add_parser("sweep", help="run a grid of recipe overrides, one output folder per point")
    sw.add_argument("--config", required=True, help="a sweep YAML (recipe, output_root, grid, set)")

    rep = sub.add_parser(
        "reproduce",
        help="mini-reproductions R1-R3 of the papers, with seeds and 95%% CIs (from a source checkout)",
        description="Mini-reproductions R1-R3 (train resumably, evaluate, report mean ± 95%% CI over seeds).",
    )
    rep.add_argument(
        "name", choices=("R1", "R2", "R3"), help="R1 CoT-ICL Lab, R2 CoT-Recipe, R3 Distilling the Essence"
    )
    rep.add_argument(
        "--size", choices=("cpu", "gpu"), default="cpu", help="cpu (tiny, minutes) or gpu (full size)"
    )
    rep.add_argument("--out", default="reproductions/runs", help="model folders (keep out of git)")
    rep.add_argument(
        "--report-dir",
        default=None,
        help="where the .md/.json/.png go (default: reproductions/; with --smoke: <out>/<R>_smoke)",
    )
    rep.add_argument("--seeds", type=_nonnegative_int, nargs="+", help="replace the sweeps' seeds")
    rep.add_argument(
        "--eval-tasks", type=_positive_int, help="evaluate on at most this many eval tasks (>= 1)"
    )
    rep.add_argument(
        "--threads", type=_nonnegative_int, default=1, help="torch threads (0: leave torch's default)"
    )
    rep.add_argument(
        "--smoke",
        action="store_true",
        help="seconds-long settings; numbers mean nothing (own folder <out>/<R>_smoke and report *_smoke)",
    )

    conv = sub.add_parser("convert-gguf", help="convert a GGUF checkpoint to a safetensors model folder")
    conv.add_argument("gguf", help="path to the .gguf file")
    conv.add_argument("--out", required=True)
    conv.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out not written by convert-gguf"
    )
    return parser


OVERWRITE_HELP = (
    "  --overwrite_output_dir true\n"
    "        output_dir must be empty or missing (so that two runs never mix), unless resume_from_checkpoint\n"
    "        is set; this command-line flag (not a recipe field) deletes output_dir's contents first.\n"
)
TRAIN_USAGE = (
    "usage: hf-cot-distill train --config RECIPE [--overwrite_output_dir true] [--<field> <value> ...]\n\n"
    "RECIPE: a YAML file, or a packaged recipe's name (`hf-cot-distill recipes list`; a path wins).\n"
    "Fields of the model, data and training configs; command-line values override the recipe's.\n\n"
    + OVERWRITE_HELP
)
COMPRESS_USAGE = (
    "usage: hf-cot-distill compress --config RECIPE [--<field> <value> ...]\n\n"
    "Prune (prune: true) -> KD recovery from the original (recover: true) -> quantize (quantize_bits: 4|8).\n"
    "Fields: the compression settings, then the model, data and training configs of the recovery stage.\n\n"
    + OVERWRITE_HELP
)
_OVERWRITE_FLAGS = ("--overwrite_output_dir", "--overwrite-output-dir")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _pop_overwrite_flag(argv: list[str]) -> tuple[bool, list[str]]:
    """``--overwrite_output_dir [true|false]`` (also ``=value``), handled here: transformers 5
    has no such field. Returns the flag and the other arguments."""
    overwrite, rest, i = False, [], 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if flag not in _OVERWRITE_FLAGS:
            rest.append(arg)
            i += 1
            continue
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value, i = argv[i + 1], i + 1
        elif not eq:
            value = "true"  # a bare flag, as for the recipe's bool fields
        if value.lower() not in _BOOLS:
            raise ValueError(
                f"command line: --overwrite_output_dir {value!r} is not a bool; fix: true or false."
            )
        overwrite = _BOOLS[value.lower()]
        i += 1
    return overwrite, rest


def _parse_config(argv: list[str], types: tuple[type, ...], usage: str, command: str) -> tuple | int:
    """``--config RECIPE [--overwrite_output_dir true] [--field value ...]`` ->
    ``(recipe, overwrite, *configs)``; an exit code for ``--help`` (the usage line and every
    field) or a bad recipe."""
    from hf_cot_distill.pipelines.recipe import parse_recipe

    if "-h" in argv or "--help" in argv:
        from transformers import HfArgumentParser

        print(usage)
        HfArgumentParser(types).print_help()
        return 0
    recipe, rest = None, list(argv)
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            return _error("--config needs a recipe path or packaged recipe name.")
        recipe = rest[i + 1]
        del rest[i : i + 2]
    try:
        overwrite, rest = _pop_overwrite_flag(rest)
        return (recipe, overwrite, *parse_recipe(types, recipe, rest, command=command))
    except USER_ERRORS as err:
        return _error(err)


# ---------------------------------------------------------------------------------------------
# Handlers: parsed arguments -> one library call -> exit code
# ---------------------------------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> int:
    """``generate``: export parquet + card; with ``--push``, then upload the output folder."""
    from hf_cot_distill.hub.datasets import export_dataset

    if not args.push and (args.private or args.revision):
        return _error("--private and --revision only apply to a push; fix: add --push REPO.")
    if args.push:
        from hf_cot_distill.hub import push as hub

        try:  # before exporting: a refused push leaves nothing behind
            hub.check_repo_id(args.push)
            hub.ensure_can_push(hub.default_api(), command="hf-cot-distill generate ...")
        except (hub.HubPushError, ValueError) as err:
            return _error(err)
    try:
        path = export_dataset(
            args.config,
            args.out,
            num_tasks=args.num_tasks,
            num_eval_tasks=args.num_eval_tasks,
            tasks_per_shard=args.tasks_per_shard,
            config_name=args.name,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except USER_ERRORS as err:
        return _error(err)
    print(f"Wrote {path} (load with datasets.load_dataset({args.out!r}, {path.name!r}))")
    if args.push:
        return _upload(args.out, args.push, "dataset", args)
    return 0


def _push(args: argparse.Namespace) -> int:
    return _upload(args.folder, args.repo_id, args.repo_type, args)


def _upload(folder: str, repo_id: str, repo_type: str, args: argparse.Namespace) -> int:
    """Upload ``folder``; a dataset folder of ours gets its card re-rendered for ``repo_id``."""
    from hf_cot_distill.hub import push as hub
    from hf_cot_distill.hub.cards import dataset_card_for_repo

    try:
        card = dataset_card_for_repo(folder, repo_id) if repo_type == "dataset" else None
        left_out = hub.trainer_checkpoints(folder)
        info = hub.push_folder(
            hub.default_api(),
            folder,
            repo_id,
            repo_type,
            private=args.private or None,
            revision=args.revision,
            commit_message=getattr(args, "commit_message", None),
            card=card,
        )
    except hub.HubPushError as err:
        return _error(err, code=1 if err.__cause__ is not None else 2)
    except USER_ERRORS as err:
        return _error(err)
    if left_out:
        print(
            f"Left out of the upload: {', '.join(d + '/' for d in left_out)} (Trainer checkpoints: optimizer "
            "and RNG state for resuming, as pickles; the model is the folder's top level)"
        )
    print(f"Pushed {folder} to {info.repo_url} ({repo_type}, commit {info.oid})")
    return 0


def _check_push_to_hub(kd_args: SectionKDConfig, command: str) -> str | int | None:
    """With ``push_to_hub``: check the repo id, the token and online mode before any work, and turn
    the Trainer's own push off (publishing goes through hub/push.py: checks first, safetensors only).
    Returns the repo id, None without a push, or an exit code."""
    if not kd_args.push_to_hub:
        return None
    from hf_cot_distill.hub import push as hub

    try:
        if not kd_args.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (namespace/name).")
        hub.check_repo_id(kd_args.hub_model_id)
        hub.ensure_can_push(hub.default_api(), command=f"hf-cot-distill {command} ...")
    except (hub.HubPushError, ValueError) as err:
        return _error(err)
    kd_args.push_to_hub = False
    return kd_args.hub_model_id


def _push_trained(folder: str, repo_id: str, kd_args: SectionKDConfig) -> int:
    args = argparse.Namespace(private=kd_args.hub_private_repo, revision=kd_args.hub_revision)
    return _upload(folder, repo_id, "model", args)


def _train(argv: list[str]) -> int:
    """``train``: parse the recipe (+ overrides) into the three configs and run the training."""
    from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    parsed = _parse_config(argv, (ModelArguments, DataArguments, SectionKDConfig), TRAIN_USAGE, "train")
    if isinstance(parsed, int):
        return parsed
    recipe, overwrite, model_args, data_args, kd_args = parsed
    push_repo = _check_push_to_hub(kd_args, "train")
    if isinstance(push_repo, int):
        return push_repo
    from hf_cot_distill.pipelines.output_dir import prepare_output_dir, run_inputs
    from hf_cot_distill.pipelines.train import run_training

    try:
        prepare_output_dir(kd_args, overwrite, run_inputs(recipe, model_args, data_args, kd_args), "train")
        metrics = run_training(model_args, data_args, kd_args, recipe_path=recipe)
    except USER_ERRORS as err:
        return _error(err)
    if kd_args.process_index != 0:
        return 0  # one report and one push per run, from the main process
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print("Final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
    print(f"Saved to {kd_args.output_dir}")
    if push_repo:
        return _push_trained(kd_args.output_dir, push_repo, kd_args)
    return 0


def _compress(argv: list[str]) -> int:
    """``compress``: parse a compress recipe and run its stages (see :mod:`hf_cot_distill.pipelines.compress`)."""
    from hf_cot_distill.pipelines.compress import CompressArguments
    from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    types = (CompressArguments, ModelArguments, DataArguments, SectionKDConfig)
    parsed = _parse_config(argv, types, COMPRESS_USAGE, "compress")
    if isinstance(parsed, int):
        return parsed
    recipe, overwrite, compress_args, model_args, data_args, kd_args = parsed
    push_repo = _check_push_to_hub(kd_args, "compress")
    if isinstance(push_repo, int):
        return push_repo
    from hf_cot_distill.pipelines.compress import run_compress, stage_table
    from hf_cot_distill.pipelines.output_dir import prepare_output_dir, run_inputs

    output_dir = kd_args.output_dir  # run_compress points kd_args at the recovery stage's folder
    try:
        prepare_output_dir(kd_args, overwrite, run_inputs(recipe, model_args, data_args, kd_args), "compress")
        summary = run_compress(model_args, data_args, kd_args, compress_args, recipe_path=recipe)
    except (*USER_ERRORS, ImportError) as err:
        return _error(err)
    print(stage_table(summary["stages"]))
    print(f"Report: {Path(output_dir) / 'compress_report.json'}")
    if push_repo:  # the last stage is the model the recipe asked for
        return _push_trained(summary["stages"][-1]["path"], push_repo, kd_args)
    return 0


CACHE_USAGE = (
    "usage: hf-cot-distill cache-teacher --config RECIPE --out DIR [--mode sampled|topk] [--samples S] [--k K]\n"
    "                                    [--positions all|SECTION,...] [--cache-seed N] [--rows-per-shard N]\n"
    "                                    [--cache-batch-size N] [--<recipe field> <value> ...]\n\n"
    "Runs the recipe's teacher once over the recipe's encoded training data (the same encoding as `train`) and\n"
    "writes a `datasets` folder of its targets; train from it with `teacher_cache: DIR`. Sampled (default): S\n"
    "tokens drawn per position (unbiased forward-KL gradient); topk: the K most likely ids + the tail mass.\n"
    "--positions: the sections whose positions are cached (default: those the recipe distils). The temperature\n"
    "is the recipe's. A re-run with the same --out resumes. Under torchrun every rank builds its shards.\n"
)
_CACHE_FLAGS = {
    "--out": ("out", str),
    "--mode": ("mode", str),
    "--samples": ("samples", int),
    "--k": ("k", int),
    "--positions": ("positions", str),
    "--cache-seed": ("seed", int),
    "--rows-per-shard": ("rows_per_shard", int),
    "--cache-batch-size": ("batch_size", int),
}


def _pop_cache_flags(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """The ``cache-teacher`` options (``--flag value`` or ``--flag=value``) and the other arguments."""
    found: dict[str, object] = {}
    rest, i = [], 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag not in _CACHE_FLAGS:
            rest.append(argv[i])
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"command line: {flag} needs a value; fix: {flag} VALUE.")
            value, i = argv[i + 1], i + 1
        name, kind = _CACHE_FLAGS[flag]
        try:
            found[name] = kind(value)
        except ValueError:
            raise ValueError(f"command line: {flag} {value!r} is not an int; fix: {flag} N.") from None
        i += 1
    return found, rest


def _cache_teacher(argv: list[str]) -> int:
    """``cache-teacher``: parse the recipe and the cache options, build (or resume) the cache."""
    from hf_cot_distill.pipelines.recipe import train_config_types

    if "-h" in argv or "--help" in argv:
        return _parse_config(argv, train_config_types(), CACHE_USAGE, "cache-teacher")  # prints the help
    try:
        options, rest = _pop_cache_flags(argv)
    except ValueError as err:
        return _error(err)
    parsed = _parse_config(rest, train_config_types(), CACHE_USAGE, "cache-teacher")
    if isinstance(parsed, int):
        return parsed
    _, _, model_args, data_args, kd_args = parsed
    from hf_cot_distill.pipelines.cache_teacher import default_sections, run_cache_teacher
    from hf_cot_distill.trainers.teacher_cache import CacheSettings

    try:
        positions = str(options.pop("positions", "") or "")
        out = options.pop("out", None) or f"{kd_args.output_dir.rstrip('/')}-teacher-cache"
        if positions == "all":
            sections: tuple[str, ...] = ("prompt", "cot", "answer")
        elif positions:
            sections = tuple(s.strip() for s in positions.split(",") if s.strip())
        else:
            sections = default_sections(kd_args)
        settings = CacheSettings(temperature=float(kd_args.temperature), sections=sections, **options)  # type: ignore[arg-type]
        path = run_cache_teacher(model_args, data_args, kd_args, settings, out)
    except (*USER_ERRORS, ImportError) as err:
        return _error(err)
    if kd_args.process_index == 0:
        print(
            f"Teacher cache: {path} (load with datasets.load_dataset({str(path)!r}); train with teacher_cache: {path})"
        )
    return 0


def _list_configs(args: argparse.Namespace) -> int:
    from hf_cot_distill.data.builder import NAMED_CONFIGS

    for name, cfg in NAMED_CONFIGS.items():
        print(f"{name}: {type(cfg).__name__}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    """``recipes list | show NAME | copy NAME DEST``: the recipes shipped in the wheel."""
    from hf_cot_distill.core.resources import copy_recipe, list_recipes, resolve_recipe

    try:
        if args.recipes_command == "list":
            print("\n".join(list_recipes()))
        elif args.recipes_command == "show":
            from hf_cot_distill.core.resources import packaged_recipe

            path = packaged_recipe(args.name)
            if path is None:
                resolve_recipe(args.name)  # raises the not-found message
                raise ValueError(
                    f"{args.name!r} is a file, not a packaged recipe name; fix: `cat` it instead."
                )
            print(path.read_text(), end="")
        else:
            print(f"Wrote {copy_recipe(args.name, args.dest)}")
    except USER_ERRORS as err:
        return _error(err)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """``demo``: the end-to-end demo into ``--out`` (an earlier demo's model folders there are replaced)."""
    from hf_cot_distill.core.outputs import claim_output_dir
    from hf_cot_distill.experiments.demo import clear_earlier_demo, run_demo

    try:
        claim_output_dir(args.out, "demo")
        for folder in clear_earlier_demo(args.out):
            print(f"demo: replacing the earlier run in {folder}")
        run_demo(args.out, size="small" if args.small else "full")
    except USER_ERRORS as err:
        return _error(err)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from hf_cot_distill.pipelines.evaluate import (
        check_report_path,
        evaluate_saved_model,
        report_markdown,
        write_report,
    )

    out = args.out or f"{args.model}/eval.json"
    try:
        check_report_path(Path(out))  # before the evaluation, not after it
        report = evaluate_saved_model(
            args.model,
            args.config,
            num_tasks=args.num_tasks,
            drop_ks=args.drop_k,
            drop_mode=args.drop_mode,
            batch_size=args.batch_size,
        )
    except (*USER_ERRORS, OSError) as err:
        return _error(err)
    json_path, md_path = write_report(report, out)
    print(report_markdown(report), end="")
    print(f"Wrote {json_path} and {md_path}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from hf_cot_distill.pipelines.sweep import run_sweep

    try:
        summary = run_sweep(args.config)
    except USER_ERRORS as err:
        return _error(err)
    failed = [s for s in summary if s.get("status") == "failed"]
    where = f"{summary[0]['output_dir'].rsplit('/', 1)[0]}/summary.md" if summary else "-"
    print(f"{len(summary)} runs, {len(failed)} failed; summary in {where}")
    return 1 if failed else 0


def _reproduce(args: argparse.Namespace) -> int:
    from hf_cot_distill.experiments.reproduce import run_reproduction

    try:
        path = run_reproduction(
            args.name,
            args.size,
            args.out,
            report_dir=args.report_dir,
            seeds=args.seeds,
            eval_tasks=args.eval_tasks,
            threads=args.threads or None,
            smoke=args.smoke,
        )
    except USER_ERRORS as err:
        return _error(err)
    print(f"Report: {path}")
    return 0


def _convert_gguf(args: argparse.Namespace) -> int:
    from hf_cot_distill.models.convert import convert_gguf_to_safetensors

    try:
        out = convert_gguf_to_safetensors(args.gguf, args.out, overwrite=args.overwrite)
    except (*USER_ERRORS, ImportError) as err:
        return _error(err)
    print(f"Wrote {out}")
    return 0


# Commands that read their own argv (every recipe field is a flag) and those argparse parses.
RAW_HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "train": _train,
    "compress": _compress,
    "cache-teacher": _cache_teacher,
}
HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": _generate,
    "push": _push,
    "list-configs": _list_configs,
    "recipes": _recipes,
    "demo": _demo,
    "eval": _eval,
    "sweep": _sweep,
    "reproduce": _reproduce,
    "convert-gguf": _convert_gguf,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in RAW_HANDLERS:
        return RAW_HANDLERS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    return HANDLERS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
