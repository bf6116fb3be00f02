"""The ``hf-cot-distill`` command line (the only module that parses command lines)."""

from __future__ import annotations

import argparse
import sys

PUSH_NOT_AVAILABLE = (
    "--push is not available in this version yet: publishing to the Hub lands with the Hub "
    "integration. Generate locally, then upload the folder, e.g. "
    "`huggingface-cli upload REPO DIR --repo-type dataset`."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be an int >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-cot-distill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic CoT dataset as parquet + dataset card")
    gen.add_argument("--config", required=True, help="a named config (see --list) or a generator YAML file")
    gen.add_argument("--out", required=True, help="output folder (load it with load_dataset(OUT, NAME))")
    gen.add_argument("--num-tasks", type=_positive_int, help="training tasks (default: the config's)")
    gen.add_argument("--num-eval-tasks", type=_positive_int, help="eval tasks (default: the config's)")
    gen.add_argument("--tasks-per-shard", type=_positive_int, default=4096)
    gen.add_argument("--name", help="config name in the output folder (default: the config's name)")
    gen.add_argument("--push", metavar="REPO", help="push to the Hub (not available yet: errors)")
    gen.add_argument("--no-progress", action="store_true")

    sub.add_parser("list-configs", help="list the named generator configs")

    demo = sub.add_parser("demo", help="the end-to-end demo, offline on CPU")
    demo.add_argument("--out", default="demo_output")

    conv = sub.add_parser("convert-gguf", help="convert a GGUF checkpoint to a safetensors model folder")
    conv.add_argument("gguf", help="path to the .gguf file")
    conv.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        if args.push:
            print(f"error: {PUSH_NOT_AVAILABLE}", file=sys.stderr)
            return 2
        from hf_cot_distill.data.builder import export_dataset

        try:
            path = export_dataset(
                args.config,
                args.out,
                num_tasks=args.num_tasks,
                num_eval_tasks=args.num_eval_tasks,
                tasks_per_shard=args.tasks_per_shard or 4096,
                config_name=args.name,
                progress=not args.no_progress,
            )
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"Wrote {path} (load with datasets.load_dataset({args.out!r}, {path.name!r}))")
        return 0
    if args.command == "list-configs":
        from hf_cot_distill.data.builder import NAMED_CONFIGS

        for name, cfg in NAMED_CONFIGS.items():
            print(f"{name}: {type(cfg).__name__}")
        return 0
    if args.command == "demo":
        from hf_cot_distill.demo import run_demo

        run_demo(args.out)
        return 0
    if args.command == "convert-gguf":
        from hf_cot_distill.convert import convert_gguf_to_safetensors

        out = convert_gguf_to_safetensors(args.gguf, args.out)
        print(f"Wrote {out}")
        return 0
    raise AssertionError(args.command)  # argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
