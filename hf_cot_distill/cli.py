"""The ``hf-cot-distill`` command line: argument parsing and a ``{command: handler}`` table.

The only module that parses command lines. Each handler turns parsed arguments into one call of
the library (``pipelines``, ``experiments``, ``hub``, ...) and a refused input into ``error: ...``
on stderr with exit code 2. Nothing heavy is imported before a command runs.
"""

from __future__ import annotations

import argparse
import json
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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: <command>: <message>; see ... --help``)
    with exit code 2, like every other refused input, not the usage block plus the message."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {message}; see `{self.prog} --help`.", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hf-cot-distill", description=__doc__.split("\n")[0])
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
    ev.add_argument(
        "--out",
        help="JSON path (a .md table is written beside it; never inside the model folder); default: MODEL.eval.json "
        "beside the model folder",
    )
    ev.add_argument(
        "--overwrite", action="store_true", help="replace report files that an earlier eval did not write"
    )

    em = sub.add_parser(
        "eval-math",
        help="evaluate a saved chat model on a math benchmark with boxed answers (e.g. AIME 2025)",
        description="Ask every problem of a math-eval spec (recipes/eval/, e.g. aime25_boxed) through the model's "
        "chat template, take the last \\boxed{} of each completion and score it by math-verify equivalence "
        "(needs the `math` extra). Writes a JSON report (scores, answers, completions) and a .md table.",
    )
    em.add_argument("--model", required=True, help="a saved model folder (safetensors) with its tokenizer")
    em.add_argument(
        "--config", required=True, help="a math-eval spec: a packaged name (aime25_boxed) or a YAML file"
    )
    em.add_argument(
        "--dataset",
        help="the problems from here instead of the spec's dataset_name: a local folder, a .parquet/.json/.jsonl/"
        ".csv file or a Hub id (offline: a local copy)",
    )
    em.add_argument("--num-samples", type=_positive_int, help="completions per problem (default: the spec's)")
    em.add_argument("--max-new-tokens", type=_positive_int, help="default: the spec's")
    em.add_argument("--limit", type=_positive_int, help="the first N problems only (a smoke run)")
    em.add_argument(
        "--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."
    )
    em.add_argument(
        "--out",
        help="JSON path (a .md table is written beside it; never inside the model folder); default: "
        "MODEL.CONFIG.eval.json beside the model folder",
    )
    em.add_argument(
        "--overwrite", action="store_true", help="replace report files that an earlier eval did not write"
    )

    sw = sub.add_parser("sweep", help="run a grid of recipe overrides, one output folder per point")
    sw.add_argument("--config", required=True, help="a sweep YAML (recipe, output_root, grid, set)")

    rep = sub.add_parser(
        "reproduce",
        help="mini-reproductions R1-R3, R3-champ of the papers, with seeds and 95%% CIs (source checkout)",
        description="Mini-reproductions R1-R3, R3-champ (train resumably, evaluate, report mean ± 95%% CI "
        "over seeds).",
    )
    rep.add_argument(
        "name",
        choices=("R1", "R2", "R3", "R3-champ"),
        help="R1 CoT-ICL Lab, R2 CoT-Recipe, R3 Distilling the Essence on CoT-ICL, R3-champ Distilling the "
        "Essence on real CHAMP traces with the SmolLM2-135M-Instruct teacher (cpu only)",
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

    card = sub.add_parser(
        "card",
        help="write the model card (README.md) of a model folder, e.g. before `push`",
        description="Render the model card of FOLDER (a save_pretrained model folder) from what it holds: "
        "config.json, and train_metrics.json when present. Never replaces an existing "
        "README.md without --overwrite.",
    )
    card.add_argument("folder", help="a save_pretrained model folder (*.safetensors + config.json)")
    start = card.add_mutually_exclusive_group(required=True)  # the card states it: never guessed
    start.add_argument("--base-model", help="the Hub id or path the model was trained from")
    start.add_argument("--from-scratch", action="store_true", help="it was trained from random weights")
    card.add_argument("--teacher", help="the teacher it was distilled from, if any")
    card.add_argument(
        "--dataset", action="append", default=[], help="a dataset it was trained on (repeatable)"
    )
    card.add_argument("--license", default="apache-2.0", help="the license in the card's metadata")
    card.add_argument("--repo-id", help="where it will be pushed (its 'how to load' uses it)")
    card.add_argument("--overwrite", action="store_true", help="replace an existing README.md")

    for command in (gen, demo, ev, em, sw, rep, conv):
        command.add_argument(
            "--verbose",
            action="store_true",
            help="the libraries' raw output (logs as dicts, warnings with their source line)",
        )
    return parser


OVERWRITE_HELP = (
    "  --overwrite_output_dir true\n"
    "        output_dir must be empty or missing (so that two runs never mix), unless resume_from_checkpoint\n"
    "        is set; this command-line flag (not a recipe field) deletes output_dir's contents first.\n"
)
VERBOSE_HELP = (
    "  --verbose\n"
    "        the libraries' raw output (every training log as a dict, DeepSpeed's log lines, warnings with\n"
    "        their source line) instead of one progress bar with the key figures; the logs' files are the same.\n"
)
TRAIN_USAGE = (
    "usage: hf-cot-distill train --config RECIPE [--overwrite_output_dir true] [--verbose] [--<field> <value> ...]\n\n"
    "RECIPE: a YAML file, or a packaged recipe's name (`hf-cot-distill recipes list`; a path wins).\n"
    "Fields of the model, data and training configs; command-line values override the recipe's.\n\n"
    + OVERWRITE_HELP
    + VERBOSE_HELP
)
COMPRESS_USAGE = (
    "usage: hf-cot-distill compress --config RECIPE [--verbose] [--<field> <value> ...]\n\n"
    "Prune (prune: true) -> KD recovery from the original (recover: true) -> quantize (quantize_bits: 4|8).\n"
    "Fields: the compression settings, then the model, data and training configs of the recovery stage.\n\n"
    + OVERWRITE_HELP
    + VERBOSE_HELP
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
    ``(recipe, overwrite, *configs)``; an exit code for a bad recipe."""
    from hf_cot_distill.pipelines.recipe import check_settings, parse_recipe

    recipe, rest = None, list(argv)
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            return _error("--config needs a recipe path or packaged recipe name.")
        recipe = rest[i + 1]
        del rest[i : i + 2]
    try:
        overwrite, rest = _pop_overwrite_flag(rest)
        configs = parse_recipe(types, recipe, rest, command=command)
        check_settings(command, recipe, rest, configs)  # warns about fields it does not use
        return (recipe, overwrite, *configs)
    except USER_ERRORS as err:
        return _error(err)


# ---------------------------------------------------------------------------------------------
# The --help pages of the recipe commands, printed without importing torch
# ---------------------------------------------------------------------------------------------

# Every field of the configs a command's recipe fills (transformers' HfArgumentParser listing) is
# rendered ahead of time into hf_cot_distill/_help_pages.py by write_help_pages(): building that
# parser imports transformers and torch (~10 s). The stored listing is printed only while it was
# rendered from the same sources (_HELP_SOURCES), transformers and Python; otherwise `--help`
# renders it live (once per environment: the help cache), so it is never stale. tests/test_cli_help.py checks that the stored pages equal
# the live rendering.
HELP_WIDTH = 100
HELP_PAGE = {"train": "train", "cache-teacher": "train", "compress": "compress"}
_HELP_SOURCES = ("pipelines/recipe.py", "trainers/kd_config.py", "pipelines/compress.py")


def _help_config_types(page: str) -> tuple[type, ...]:
    from hf_cot_distill.pipelines.recipe import train_config_types

    if page == "compress":
        from hf_cot_distill.pipelines.compress import CompressArguments

        return (CompressArguments, *train_config_types())
    return train_config_types()


def render_fields_help(page: str) -> str:
    """The live listing of every field of ``page``'s configs (imports transformers and torch)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        _help_config_types(page),
        prog=f"hf-cot-distill {page}",
        usage=argparse.SUPPRESS,  # the command's own usage text comes first
        formatter_class=lambda prog: argparse.ArgumentDefaultsHelpFormatter(prog, width=HELP_WIDTH),
    )
    return parser.format_help()


def help_fingerprint() -> dict[str, object]:
    """What the fields listing is rendered from: the config sources, transformers, Python."""
    import hashlib
    import importlib.util
    import re

    root = Path(__file__).resolve().parent
    spec = importlib.util.find_spec("transformers")  # its __version__, read without importing it
    source = Path(spec.origin).read_text() if spec is not None and spec.origin else ""
    found = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", source, flags=re.MULTILINE)
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "transformers": found.group(1) if found else None,
        "sources": {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in _HELP_SOURCES},
    }


def help_cache_file(fingerprint: dict[str, object]) -> Path:
    """Where ``--help`` keeps listings it rendered live (another transformers or Python than the
    stored pages'), keyed by the fingerprint: ``$XDG_CACHE_HOME/hf_cot_distill/help-<key>.json``."""
    import hashlib
    import os

    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hf_cot_distill" / f"help-{key}.json"


def fields_help(page: str) -> str:
    """The stored listing of ``page`` when it is current; else one rendered live for this exact
    environment before (the help cache); else the live rendering, then cached (best effort)."""
    from hf_cot_distill import _help_pages

    fingerprint = help_fingerprint()
    if _help_pages.FINGERPRINT == fingerprint and page in _help_pages.PAGES:
        return _help_pages.PAGES[page]
    cache = help_cache_file(fingerprint)
    try:
        pages = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pages = {}
    if isinstance(pages, dict) and isinstance(pages.get(page), str):
        return pages[page]
    text = render_fields_help(page)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(
            json.dumps({**(pages if isinstance(pages, dict) else {}), page: text}), encoding="utf-8"
        )
    except OSError:  # a read-only home: the next --help renders again
        pass
    return text


def write_help_pages(path: str | Path | None = None) -> Path:
    """Render the listings into ``hf_cot_distill/_help_pages.py`` (run after changing a config)."""
    path = Path(path) if path is not None else Path(__file__).resolve().parent / "_help_pages.py"
    lines = [
        '"""The fields listed by ``hf-cot-distill train|cache-teacher|compress --help``, rendered from the',
        "config dataclasses so that ``--help`` imports no torch. Generated; do not edit. Regenerate with",
        "``python -c 'from hf_cot_distill.cli import write_help_pages; write_help_pages()'``.",
        '"""',
        "",
        "# fmt: off",
        f"FINGERPRINT = {help_fingerprint()!r}",
        "PAGES = {",
    ]
    for page in sorted(set(HELP_PAGE.values())):
        lines.append(f"    {page!r}: (")
        lines += [
            f"        {json.dumps(line, ensure_ascii=False)}"
            for line in render_fields_help(page).splitlines(True)
        ]
        lines.append("    ),")
    lines += ["}", "# fmt: on", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _print_help(command: str) -> int:
    print(COMMAND_USAGE[command])
    print(fields_help(HELP_PAGE[command]), end="")
    return 0


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


def _card(args: argparse.Namespace) -> int:
    """``card FOLDER``: write a model folder's card (never over a README without --overwrite)."""
    from hf_cot_distill.hub.push import write_folder_card

    try:
        path = write_folder_card(
            args.folder,
            overwrite=args.overwrite,
            base_model=args.base_model,
            teacher=args.teacher,
            datasets=args.dataset,
            license=args.license,
            repo_id=args.repo_id,
        )
    except USER_ERRORS as err:
        return _error(err)
    print(f"Wrote {path} (review it, then `hf-cot-distill push {args.folder} --repo-id NAMESPACE/NAME`)")
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
    "                                    [--cache-batch-size N] [--verbose] [--<recipe field> <value> ...]\n\n"
    "Runs the recipe's teacher once over the recipe's encoded training data (the same encoding as `train`) and\n"
    "writes a `datasets` folder of its targets; train from it with `teacher_cache: DIR`. Sampled (default): S\n"
    "tokens drawn per position (unbiased forward-KL gradient); topk: the K most likely ids + the tail mass.\n"
    "--positions: the sections whose positions are cached (default: those the recipe distils). The temperature\n"
    "is the recipe's. A re-run with the same --out resumes. Under torchrun every rank builds its shards.\n\n"
    + VERBOSE_HELP
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
COMMAND_USAGE = {"train": TRAIN_USAGE, "compress": COMPRESS_USAGE, "cache-teacher": CACHE_USAGE}


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
        default_report_path,
        evaluate_saved_model,
        report_markdown,
        write_report,
    )

    out = args.out or default_report_path(args.model)
    try:  # before the evaluation, not after it
        check_report_path(
            out, inputs={"--model": args.model, "--config": args.config}, overwrite=args.overwrite
        )
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


def _eval_math(args: argparse.Namespace) -> int:
    """``eval-math``: a math benchmark spec on a saved model; the report as ``eval`` writes it."""
    from hf_cot_distill.pipelines.evaluate import (
        check_report_path,
        default_math_report_path,
        evaluate_math_model,
        report_markdown,
        resolve_math_eval_spec,
        write_report,
    )

    try:  # the spec and the output path before the evaluation, not after it
        name, _ = resolve_math_eval_spec(args.config)
        out = args.out or default_math_report_path(args.model, name)
        check_report_path(
            out, inputs={"--model": args.model, "--dataset": args.dataset}, overwrite=args.overwrite
        )
        report = evaluate_math_model(
            args.model,
            args.config,
            dataset=args.dataset,
            num_samples=args.num_samples,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
            device=args.device,
        )
    except (*USER_ERRORS, ImportError, OSError) as err:
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
    "card": _card,
    "list-configs": _list_configs,
    "recipes": _recipes,
    "demo": _demo,
    "eval": _eval,
    "eval-math": _eval_math,
    "sweep": _sweep,
    "reproduce": _reproduce,
    "convert-gguf": _convert_gguf,
}


def main(argv: list[str] | None = None) -> int:
    from hf_cot_distill.core.console import is_verbose, session

    argv = list(sys.argv[1:] if argv is None else argv)
    # The console is set before anything heavy loads (DeepSpeed's logger is made at import);
    # HF_COT_DISTILL_VERBOSE=1, set by a parent command, counts as --verbose.
    if argv[:1] and argv[0] in RAW_HANDLERS:
        command, rest = argv[0], argv[1:]
        if "-h" in rest or "--help" in rest:
            return _print_help(command)
        with session("--verbose" in rest or is_verbose()):
            return _close_distributed(RAW_HANDLERS[command]([a for a in rest if a != "--verbose"]))
    args = build_parser().parse_args(argv)
    with session(getattr(args, "verbose", False) or is_verbose()):
        return _close_distributed(HANDLERS[args.command](args))


def _close_distributed(code: int | None) -> int | None:
    """End a multi-process run in step: every rank reaches a barrier, then the process group is torn down.

    Left to interpreter shutdown, one rank can exit while another's communication threads (gloo,
    DeepSpeed's shared-memory collectives) are still alive, and that rank aborts ("terminate called
    without an active exception") after the run itself succeeded. Only a successful run waits at the
    barrier: a failed rank must not hang waiting for the others.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return code
    if not code:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
