"""The ``hf-cot-distill`` command line (the only module that parses command lines)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hf_cot_distill.trainers.kd_config import SectionKDConfig


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-cot-distill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic CoT dataset as parquet + dataset card")
    gen.add_argument(
        "--config",
        required=True,
        help="a named config (see `hf-cot-distill list-configs`) or a generator YAML file",
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

    demo = sub.add_parser("demo", help="the end-to-end demo, offline on CPU")
    demo.add_argument("--out", default="demo_output")
    demo.add_argument(
        "--small", action="store_true", help="a reduced smoke run (seconds; numbers mean little)"
    )

    sub.add_parser(
        "compress",
        help="prune / KD-recover / quantize a model from a recipe: compress --config RECIPE.yaml",
        add_help=False,  # `compress --help` lists every recipe field (see _compress)
    )
    sub.add_parser(
        "train",
        help="train / distill from a recipe: train --config RECIPE.yaml [--field value ...]",
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

    from hf_cot_distill.reproduce import add_arguments as reproduce_arguments

    reproduce_arguments(
        sub.add_parser("reproduce", help="mini-reproductions R1-R3 of the papers, with seeds and 95%% CIs")
    )

    conv = sub.add_parser("convert-gguf", help="convert a GGUF checkpoint to a safetensors model folder")
    conv.add_argument("gguf", help="path to the .gguf file")
    conv.add_argument("--out", required=True)
    return parser


def _error(message: object, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _generate(args: argparse.Namespace) -> int:
    """``generate``: export parquet + card; with ``--push``, then upload the output folder."""
    from hf_cot_distill.data.builder import export_dataset

    if not args.push and (args.private or args.revision):
        return _error("--private and --revision only apply to a push; fix: add --push REPO.")
    if args.push:
        from hf_cot_distill import hub

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
        )
    except (ValueError, FileNotFoundError) as err:
        return _error(err)
    print(f"Wrote {path} (load with datasets.load_dataset({args.out!r}, {path.name!r}))")
    if args.push:
        return _push(args.out, args.push, "dataset", args)
    return 0


def _push(folder: str, repo_id: str, repo_type: str, args: argparse.Namespace) -> int:
    """Upload ``folder``; a dataset folder of ours gets its card re-rendered for ``repo_id``."""
    from hf_cot_distill import hub
    from hf_cot_distill.cards import dataset_card_for_repo

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
    except (ValueError, FileNotFoundError) as err:
        return _error(err)
    if left_out:
        print(
            f"Left out of the upload: {', '.join(d + '/' for d in left_out)} (Trainer checkpoints: optimizer "
            "and RNG state for resuming, as pickles; the model is the folder's top level)"
        )
    print(f"Pushed {folder} to {info.repo_url} ({repo_type}, commit {info.oid})")
    return 0


OVERWRITE_HELP = (
    "  --overwrite_output_dir true\n"
    "        output_dir must be empty or missing (so that two runs never mix), unless resume_from_checkpoint\n"
    "        is set; this command-line flag (not a recipe field) deletes output_dir's contents first.\n"
)
TRAIN_USAGE = (
    "usage: hf-cot-distill train --config RECIPE.yaml [--overwrite_output_dir true] [--<field> <value> ...]\n\n"
    "Fields of the model, data and training configs; command-line values override the recipe's.\n\n"
    + OVERWRITE_HELP
)


def _parse_config(argv: list[str], types: tuple[type, ...], usage: str, command: str) -> tuple | int:
    """``--config RECIPE [--overwrite_output_dir true] [--field value ...]`` ->
    ``(recipe, overwrite, *configs)``; an exit code for ``--help`` (the usage line and every
    field) or a bad recipe."""
    from hf_cot_distill.recipe import parse_recipe

    if "-h" in argv or "--help" in argv:
        from transformers import HfArgumentParser

        print(usage)
        HfArgumentParser(types).print_help()
        return 0
    recipe, rest = None, list(argv)
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            return _error("--config needs a recipe path.")
        recipe = rest[i + 1]
        del rest[i : i + 2]
    try:
        overwrite, rest = _pop_overwrite_flag(rest)
        return (recipe, overwrite, *parse_recipe(types, recipe, rest, command=command))
    except (ValueError, FileNotFoundError) as err:
        return _error(err)


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


def _resuming(kd_args: SectionKDConfig) -> bool:
    return bool(kd_args.resume_from_checkpoint)  # SectionKDConfig turned "true"/"false" into True/None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_output_dir(
    kd_args: SectionKDConfig, overwrite: bool, inputs: dict[str, str | None], command: str
) -> None:
    """Refuse to write a run into a non-empty ``output_dir`` (its old files would sit beside the new
    ones, e.g. another run's ``checkpoint-*/``), unless the run resumes from a checkpoint there or
    ``--overwrite_output_dir true`` asks to delete its contents first. ``inputs``: the run's
    local inputs (field -> path), which must not lie inside a folder that is cleared."""
    out = Path(kd_args.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file; fix: give output_dir a folder (missing or empty).")
    if overwrite and _resuming(kd_args):
        raise ValueError(
            f"--overwrite_output_dir true would delete the checkpoints resume_from_checkpoint="
            f"{kd_args.resume_from_checkpoint!r} resumes from; fix: drop one of the two."
        )
    if not out.is_dir() or not any(out.iterdir()) or _resuming(kd_args):
        return
    if not overwrite:
        shown = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise ValueError(
            f"output_dir {out} is not empty ({', '.join(shown[:5])}{more}): a new run there would mix its "
            f"files with the old ones; fix: choose another --output_dir, delete the folder, resume with "
            f"--resume_from_checkpoint CHECKPOINT, or pass --overwrite_output_dir true to `hf-cot-distill "
            f"{command}` to delete its contents first."
        )
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved in (Path(resolved.anchor), Path.home().resolve()) or _inside(cwd, resolved):
        raise ValueError(
            f"--overwrite_output_dir true: refusing to delete the contents of {out} (the current folder, "
            "one of its parents, or the home folder); fix: choose a dedicated --output_dir."
        )
    for name, path in inputs.items():
        if path and Path(path).exists() and _inside(Path(path).resolve(), resolved):
            raise ValueError(
                f"--overwrite_output_dir true would delete {name}={path}, which lies in output_dir {out}; "
                "fix: choose another --output_dir."
            )
    if kd_args.process_index == 0:  # one process deletes; the others wait (main_process_first)
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        print(f"--overwrite_output_dir: deleted the contents of {out}", file=sys.stderr)


def _prepare_output_dir(
    kd_args: SectionKDConfig, overwrite: bool, inputs: dict[str, str | None], command: str
) -> int | None:
    """:func:`_check_output_dir`, the main process first (it deletes, when asked); an exit code on refusal."""
    with kd_args.main_process_first(local=False, desc="output_dir check"):
        try:
            _check_output_dir(kd_args, overwrite, inputs, command)
        except ValueError as err:
            return _error(err)
    return None


def _inputs(recipe: str | None, model_args, data_args, kd_args) -> dict[str, str | None]:
    dataset = data_args.dataset_name or ""
    return {
        "recipe": recipe,
        "model_name_or_path": model_args.model_name_or_path,
        "tokenizer_name_or_path": model_args.tokenizer_name_or_path,
        "teacher_model_name_or_path": kd_args.teacher_model_name_or_path,
        "dataset_name": dataset.removeprefix("generator:") or None,
    }


def _train(argv: list[str]) -> int:
    """``train``: parse the recipe (+ overrides) into the three configs and run the training."""
    from hf_cot_distill.recipe import DataArguments, ModelArguments
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    parsed = _parse_config(argv, (ModelArguments, DataArguments, SectionKDConfig), TRAIN_USAGE, "train")
    if isinstance(parsed, int):
        return parsed
    recipe, overwrite, model_args, data_args, kd_args = parsed
    push_repo = _check_push_to_hub(kd_args, "train")
    if isinstance(push_repo, int):
        return push_repo
    refused = _prepare_output_dir(
        kd_args, overwrite, _inputs(recipe, model_args, data_args, kd_args), "train"
    )
    if refused is not None:
        return refused
    from hf_cot_distill.train import run_training

    try:
        metrics = run_training(model_args, data_args, kd_args, recipe_path=recipe)
    except (ValueError, FileNotFoundError) as err:
        return _error(err)
    if kd_args.process_index != 0:
        return 0  # one report and one push per run, from the main process
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print("Final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
    print(f"Saved to {kd_args.output_dir}")
    if push_repo:
        return _push_trained(kd_args.output_dir, push_repo, kd_args)
    return 0


def _check_push_to_hub(kd_args: SectionKDConfig, command: str) -> str | int | None:
    """With ``push_to_hub``: check the repo id, the token and online mode before any work, and turn
    the Trainer's own push off (publishing goes through hub.py: checks first, safetensors only).
    Returns the repo id, None without a push, or an exit code."""
    if not kd_args.push_to_hub:
        return None
    from hf_cot_distill import hub

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
    return _push(folder, repo_id, "model", args)


COMPRESS_USAGE = (
    "usage: hf-cot-distill compress --config RECIPE.yaml [--<field> <value> ...]\n\n"
    "Prune (prune: true) -> KD recovery from the original (recover: true) -> quantize (quantize_bits: 4|8).\n"
    "Fields: the compression settings, then the model, data and training configs of the recovery stage.\n\n"
    + OVERWRITE_HELP
)


def _compress(argv: list[str]) -> int:
    """``compress``: parse a compress recipe and run its stages (see :mod:`hf_cot_distill.compress.pipeline`)."""
    from hf_cot_distill.compress.pipeline import CompressArguments, run_compress
    from hf_cot_distill.recipe import DataArguments, ModelArguments
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    types = (CompressArguments, ModelArguments, DataArguments, SectionKDConfig)
    parsed = _parse_config(argv, types, COMPRESS_USAGE, "compress")
    if isinstance(parsed, int):
        return parsed
    recipe, overwrite, compress_args, model_args, data_args, kd_args = parsed
    push_repo = _check_push_to_hub(kd_args, "compress")
    if isinstance(push_repo, int):
        return push_repo
    inputs = _inputs(recipe, model_args, data_args, kd_args)
    refused = _prepare_output_dir(kd_args, overwrite, inputs, "compress")
    if refused is not None:
        return refused
    output_dir = kd_args.output_dir  # run_compress points kd_args at the recovery stage's folder
    try:
        summary = run_compress(model_args, data_args, kd_args, compress_args, recipe_path=recipe)
    except (ValueError, FileNotFoundError, ImportError) as err:
        return _error(err)
    print("| stage | parameters | weights on disk | folder |\n|---|---|---|---|")
    for stage in summary["stages"]:
        size = stage.get("size_bytes")
        shown = f"{size / 2**20:,.2f} MiB" if size else "-"
        print(f"| {stage['stage']} | {stage['parameters']:,} | {shown} | {stage['path']} |")
    print(f"Report: {Path(output_dir) / 'compress_report.json'}")
    if push_repo:  # the last stage is the model the recipe asked for
        return _push_trained(summary["stages"][-1]["path"], push_repo, kd_args)
    return 0


def _unwritable_report_path(out: Path) -> str | None:
    """Why ``eval --out`` (a JSON file, with a ``.md`` beside it) cannot be written, or None."""
    for path in (out, out.with_suffix(".md")):
        if path.is_dir():
            return f"eval --out {out}: {path} is a folder; fix: give a JSON file path, e.g. --out {out / 'eval.json'}."
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"eval --out {out}: {parent} is a file, not a folder; fix: give a JSON path in a folder."
    return None


def _demo(args: argparse.Namespace) -> int:
    """``demo``: the end-to-end demo into ``--out``. An earlier demo's model folders there are
    replaced (training refuses a non-empty folder); other files in them stop the demo."""
    from hf_cot_distill.demo import VARIANTS, run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _error(f"demo --out {out} is a file; fix: give a folder (missing, or an earlier demo's).")
    earlier = []
    for variant in VARIANTS:
        folder = out / variant.name
        if not folder.is_dir() or not any(folder.iterdir()):
            continue
        card = folder / "README.md"
        if not (folder / "training_args.json").is_file() or variant.recipe not in _read(card):
            return _error(
                f"demo --out {out}: {folder} holds files that are not an earlier demo's {variant.name}; fix: "
                "choose another --out, or move them away."
            )
        earlier.append(folder)
    for folder in earlier:
        shutil.rmtree(folder)
        print(f"demo: replacing the earlier run in {folder}")
    try:
        run_demo(out, size="small" if args.small else "full")
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        return _error(err)
    return 0


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        return _train(argv[1:])
    if argv[:1] == ["compress"]:
        return _compress(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    if args.command == "push":
        return _push(args.folder, args.repo_id, args.repo_type, args)
    if args.command == "list-configs":
        from hf_cot_distill.data.builder import NAMED_CONFIGS

        for name, cfg in NAMED_CONFIGS.items():
            print(f"{name}: {type(cfg).__name__}")
        return 0
    if args.command == "demo":
        return _demo(args)
    if args.command == "eval":
        from hf_cot_distill.eval.report import evaluate_saved_model, markdown_table, write_report

        out = args.out or f"{args.model}/eval.json"
        bad_out = _unwritable_report_path(Path(out))
        if bad_out:  # before the evaluation, not after it
            return _error(bad_out)
        try:
            report = evaluate_saved_model(
                args.model,
                args.config,
                num_tasks=args.num_tasks,
                drop_ks=args.drop_k,
                drop_mode=args.drop_mode,
                batch_size=args.batch_size,
            )
        except (ValueError, FileNotFoundError, OSError) as err:
            return _error(err)
        json_path, md_path = write_report(report, out)
        print(markdown_table(report))
        print(f"Wrote {json_path} and {md_path}")
        return 0
    if args.command == "sweep":
        from hf_cot_distill.sweep import run_sweep

        try:
            summary = run_sweep(args.config)
        except (ValueError, FileNotFoundError) as err:
            return _error(err)
        print(f"{len(summary)} runs; summary in {summary[0]['output_dir'].rsplit('/', 1)[0]}/summary.md")
        return 0
    if args.command == "reproduce":
        from hf_cot_distill.reproduce import run_from_args

        return run_from_args(args)
    if args.command == "convert-gguf":
        from hf_cot_distill.convert import convert_gguf_to_safetensors

        try:
            out = convert_gguf_to_safetensors(args.gguf, args.out)
        except (ValueError, FileNotFoundError, ImportError) as err:
            return _error(err)
        print(f"Wrote {out}")
        return 0
    raise AssertionError(args.command)  # argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
