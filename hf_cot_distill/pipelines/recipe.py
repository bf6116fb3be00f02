"""Recipes: flat YAML whose keys are fields of the config dataclasses, with CLI overrides.

A recipe is parsed into ``(ModelArguments, DataArguments, <training config>)`` with
transformers' ``HfArgumentParser``, so every field gets the same type conversion and
validation as on the command line. Unknown or misspelled keys are an error naming the key and
the closest valid one (TRL's and transformers' YAML paths can silently ignore them).

YAML values become argv tokens: lists -> several values, dicts -> JSON, bools -> true/false,
``null`` -> the field's default only if that default is ``None``. Command-line overrides
(``--key value``) come after the YAML ones, so they win. A mapping is accepted for the fields that
hold one (dict-typed fields, the configs' ``_VALID_DICT_FIELDS``, ``model_config``), e.g.
``section_kd_temperatures: {cot: 2.0}``; anywhere else it is an error (recipes are flat).

A value of the wrong type (``max_steps: two``) is a one-line ``ValueError`` naming the field,
the value, the expected type and where it came from (the recipe file or the command line).

A known field that the command does not use with the other settings (``lora_r`` without
``use_peft``, ``--learning_rate`` on cache-teacher's command line, ``prune_*`` without ``prune``) is a
one-line warning naming it (:func:`check_settings`, one rule table for every recipe command);
never silently dropped. A command-line value replacing the recipe's is intended: not warned.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import types as _pytypes
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from hf_cot_distill.core.resources import resolve_recipe
from hf_cot_distill.core.validation import check_choice, check_int


@dataclass
class ModelArguments:
    """Which student model to train and how to build it."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Student: a Hub id or a local folder. Offline runs override it with a local path."},
    )
    model_revision: str = field(default="main", metadata={"help": "Revision of the student on the Hub."})
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer (default: the student's). Not needed for CoT-ICL token data."},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Student weights dtype: float32, bfloat16, float16 or auto."},
    )
    attn_implementation: str | None = field(
        default="sdpa", metadata={"help": "Attention implementation: sdpa, eager, flash_attention_2."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom modelling code from the Hub. Off by default (security)."},
    )
    init_from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Build the student from `model_config` with random weights (CoT-ICL meta-training)."
        },
    )
    model_config: str | None = field(
        default=None,
        metadata={
            "help": "JSON/YAML mapping of a transformers config for init_from_scratch, e.g. "
            '{"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, ...}.'
        },
    )
    student_from_teacher_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Build the student from the teacher (teacher_model_name_or_path): its embeddings, these "
            "decoder layers (indices, increasing), final norm and lm_head, e.g. [0, 10, 20, 29]."
        },
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: all linear layers but the lm_head)."}
    )

    def __post_init__(self) -> None:
        # `--model_name_or_path ""` on the command line removes a recipe's student path.
        self.model_name_or_path = self.model_name_or_path or None
        check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16", "auto"))
        if self.init_from_scratch and not self.model_config:
            raise ValueError("init_from_scratch=true needs model_config (a transformers config mapping).")
        if not self.init_from_scratch and self.model_config:
            raise ValueError(
                "model_config is only used with init_from_scratch=true; set it or remove model_config."
            )
        if self.student_from_teacher_layers is not None and (
            self.init_from_scratch or self.model_name_or_path
        ):
            raise ValueError(
                "student_from_teacher_layers builds the student from the teacher; remove "
                "model_name_or_path / init_from_scratch, or remove student_from_teacher_layers."
            )
        check_int("lora_r", self.lora_r, minimum=1)

    def model_config_dict(self) -> dict[str, Any]:
        if not self.model_config:
            return {}
        value = yaml.safe_load(self.model_config) if isinstance(self.model_config, str) else self.model_config
        if not isinstance(value, dict) or "model_type" not in value:
            raise ValueError(f"model_config must be a mapping with a model_type, got {self.model_config!r}.")
        return value


DATASET_FORMATS = ("auto", "tokenized", "messages", "conversations", "prompt_completion", "reasoning_content")


@dataclass
class DataArguments:
    """Which data to train on and how to turn it into section-tagged tokens."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A local folder / Hub dataset for load_dataset, or `generator:<named config or yaml>` to "
            "generate CoT-ICL Lab / symbolic tasks on the fly."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_eval_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on (optional)."}
    )
    dataset_format: str = field(
        default="auto",
        metadata={
            "help": f"Row layout: one of {DATASET_FORMATS}; `tokenized` = rows with input_ids/section_ids."
        },
    )
    source_markers: str = field(
        default="think",
        metadata={
            "help": "Reasoning markers in the source text: think, openthoughts, symbolic or symbolic_paper "
            "(the symbolic tasks rendered with render: paper)."
        },
    )
    render_markers: str = field(
        default="think",
        metadata={
            "help": "Markers the model is trained with: think (<think>...</think>), symbolic (keep the "
            "symbolic tasks' '### Reasoning' / '### Answer' headers; use with on_empty_cot: as_given), or "
            "symbolic_paper (keep the paper rendering's '<|im_start|>think' / '<|im_start|>final answer'; "
            "likewise with on_empty_cot: as_given)."
        },
    )
    max_length: int = field(default=4096, metadata={"help": "Longest encoded sample, in tokens."})
    on_too_long: str = field(
        default="refuse",
        metadata={
            "help": "Samples over max_length: refuse (drop them: counted per split on stderr, in "
            "train_metrics.json (data_rows) and the model card; a split left with 0 rows is an error) or "
            "keep (a truncation_policy cuts them)."
        },
    )
    on_empty_cot: str = field(
        default="empty_block",
        metadata={
            "help": "A supervised turn without CoT: empty_block (render an empty think block), as_given "
            "or refuse (dropped, counted)."
        },
    )
    on_empty_answer: str = field(
        default="refuse",
        metadata={"help": "A supervised turn with nothing after its CoT: refuse (dropped, counted) or keep."},
    )
    generator_num_tasks: int | None = field(
        default=None, metadata={"help": "With generator:<config>: training tasks (default: the config's)."}
    )
    generator_num_eval_tasks: int | None = field(
        default=None, metadata={"help": "With generator:<config>: eval tasks (default: the config's)."}
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "Use only the first N training rows (only they are read and encoded; rows the encoder drops among them are counted, not replaced)."
        },
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N eval rows."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for Dataset.map."})

    def __post_init__(self) -> None:
        check_choice("dataset_format", self.dataset_format, DATASET_FORMATS)
        check_int("max_length", self.max_length, minimum=8, fix="use at least 8 tokens")
        from hf_cot_distill.data.traces.formats import MARKER_PRESETS

        choices = {
            "source_markers": tuple(MARKER_PRESETS),
            "render_markers": tuple(MARKER_PRESETS),
            "on_too_long": ("refuse", "keep"),
            "on_empty_cot": ("empty_block", "as_given", "refuse"),
            "on_empty_answer": ("refuse", "keep"),
        }
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)


def train_config_types() -> tuple[type, ...]:
    """``(ModelArguments, DataArguments, SectionKDConfig)``: the configs a training recipe fills."""
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    return (ModelArguments, DataArguments, SectionKDConfig)


def _fields(types: tuple[type, ...]) -> dict[str, dataclasses.Field]:
    out: dict[str, dataclasses.Field] = {}
    for t in types:
        for f in dataclasses.fields(t):
            if f.init:
                out.setdefault(f.name, f)
    return out


# Not recipe fields, but options of the `train` / `compress` command line itself.
_CLI_ONLY = {"overwrite_output_dir": "a command-line flag of `train` / `compress`, not a recipe field"}


def _unknown_key_error(keys: list[str], valid: dict, where: str, command: str = "train") -> ValueError:
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
        hint = f" ({_CLI_ONLY[key]})" if key in _CLI_ONLY else ""
        hints.append(f"{key!r}" + (hint or (f" (did you mean {close[0]!r}?)" if close else "")))
    return ValueError(
        f"{where}: unknown key{'s' if len(keys) > 1 else ''} {', '.join(hints)}. Keys must be fields of "
        f"the configs listed by `hf-cot-distill {command} --help`."
    )


def _to_argv(key: str, value: Any, f: dataclasses.Field, where: str) -> list[str]:
    if value is None:
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is not None:
            raise ValueError(
                f"{where}: {key}: null is not allowed (default {default!r}); remove the key instead."
            )
        return []
    if isinstance(value, bool):
        return [f"--{key}", "true" if value else "false"]
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{where}: {key}: an empty list cannot be expressed; remove the key instead.")
        return [f"--{key}", *[json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in value]]
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", str(value)]


def _holds_mapping(annotation: Any) -> bool:
    """``dict[...]``, ``dict | str | None`` ...: a field annotation that admits a mapping."""
    if annotation is dict or typing.get_origin(annotation) is dict:
        return True
    if typing.get_origin(annotation) in (typing.Union, _pytypes.UnionType):
        return any(_holds_mapping(arg) for arg in typing.get_args(annotation))
    return False


# Typed ``str`` but documented as a mapping (a transformers config for init_from_scratch).
_MAPPING_STR_FIELDS = {"model_config"}


def dict_fields(types: tuple[type, ...]) -> set[str]:
    """Fields of ``types`` whose value may be a mapping in a recipe (passed on as JSON): the
    dict-typed fields, each config's own ``_VALID_DICT_FIELDS`` and ``model_config``."""
    out = set(_MAPPING_STR_FIELDS)
    for t in types:
        out.update(getattr(t, "_VALID_DICT_FIELDS", ()))
        try:
            hints = typing.get_type_hints(t)
        except Exception:  # an unresolvable annotation: fall back to the declared dict fields
            hints = {}
        out.update(name for name, annotation in hints.items() if _holds_mapping(annotation))
    return out & set(_fields(types))


def recipe_argv(
    recipe: dict[str, Any], types: tuple[type, ...], where: str = "recipe", command: str = "train"
) -> list[str]:
    """Validate a recipe mapping against the dataclasses and turn it into argv tokens."""
    valid = _fields(types)
    unknown = sorted(k for k in recipe if k not in valid)
    if unknown:
        raise _unknown_key_error(unknown, valid, where, command)
    mappings = dict_fields(types)
    nested = [k for k, v in recipe.items() if isinstance(v, dict) and k not in mappings]
    if nested:
        raise ValueError(
            f"{where}: {nested} hold{'s' if len(nested) == 1 else ''} a mapping, but "
            f"{'it takes' if len(nested) == 1 else 'they take'} a single value (recipes are flat: only "
            f"{sorted(mappings)} take mappings); fix: write the value itself, or the fields of the mapping "
            "as top-level keys."
        )
    argv: list[str] = []
    for key, value in recipe.items():
        argv += _to_argv(key, value, valid[key], where)
    return argv


def load_recipe_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe file as a mapping (checked against the configs by :func:`recipe_argv`). ``path``
    may be a packaged recipe's name (:func:`hf_cot_distill.core.resources.resolve_recipe`)."""
    path = resolve_recipe(path)
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a flat mapping of config fields, got {type(data).__name__}.")
    return data


def _json_mapping(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


_json_mapping.__name__ = "JSON mapping"
# argparse's own names of the type converters HfArgumentParser uses -> what a user reads.
_TYPE_NAMES = {"string_to_bool": "bool (true or false)", "int": "int", "float": "float", "str": "string"}


def _argument_parser(types: tuple[type, ...]) -> Any:
    """An ``HfArgumentParser`` whose errors raise (``ValueError`` / ``argparse.ArgumentError``)
    instead of printing the whole usage and exiting."""
    from transformers import HfArgumentParser

    class RecipeArgumentParser(HfArgumentParser):
        def error(self, message: str) -> typing.NoReturn:
            raise ValueError(message)

    parser = RecipeArgumentParser(types, exit_on_error=False)
    for action in parser._actions:  # dict-typed fields without str in their type: parse JSON
        if action.type is dict or typing.get_origin(action.type) is dict:
            action.type = _json_mapping
    return parser


def _argument_error(err: argparse.ArgumentError, where: str, from_recipe: bool) -> ValueError:
    """``argument --max_steps/--max-steps: invalid int value: 'two'`` -> one line that names the
    field, the value, the expected type and the source (the recipe file or the command line)."""
    name = (err.argument_name or "").split("/")[0].lstrip("-") or "argument"
    message = err.message.rstrip(".")
    bad = re.fullmatch(r"invalid (.+) value: (.*)", message, flags=re.DOTALL)
    if bad:
        expected, value = _TYPE_NAMES.get(bad.group(1), bad.group(1)), bad.group(2)
    elif (truthy := re.match(r"Truthy value expected: got (.*) but", message)) is not None:
        expected, value = _TYPE_NAMES["string_to_bool"], repr(truthy.group(1))
    else:
        return ValueError(f"{where}: {name}: {message}.")
    shown = f"{name}: {value}" if from_recipe else f"--{name} {value}"
    return ValueError(
        f"{where}: {shown} is not a valid {expected}; fix: give {name} a value of type {expected}."
    )


def parse_recipe(
    types: tuple[type, ...],
    recipe_path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    *,
    command: str = "train",
) -> tuple:
    """Parse a YAML recipe plus ``--key value`` overrides into instances of ``types``.

    ``command`` is the ``hf-cot-distill`` command whose ``--help`` lists the fields (named in
    the unknown-key error). Every parse error is a ``ValueError``; argparse never exits.
    """
    overrides = list(overrides or [])
    valid = _fields(types)
    bad = [a[2:].split("=")[0].replace("-", "_") for a in overrides if a.startswith("--")]
    bad = [k for k in bad if k not in valid and not (k.startswith("no_") and k[3:] in valid)]
    if bad:
        raise _unknown_key_error(bad, valid, "command line", command)
    argv: list[str] = []
    parser = _argument_parser(types)
    if recipe_path is not None:
        argv = recipe_argv(load_recipe_yaml(recipe_path), types, where=str(recipe_path), command=command)
        try:  # the recipe's own values first, so that an error names the file
            argparse.ArgumentParser.parse_known_args(parser, argv)
        except argparse.ArgumentError as err:
            raise _argument_error(err, f"recipe {recipe_path}", from_recipe=True) from None
    try:
        return tuple(
            parser.parse_args_into_dataclasses(args=argv + overrides, return_remaining_strings=False)
        )
    except argparse.ArgumentError as err:
        raise _argument_error(err, "command line", from_recipe=False) from None


# ---------------------------------------------------------------------------------------------
# Settings a command ignores: a warning that names them, never silently dropped
# ---------------------------------------------------------------------------------------------

# The Trainer's loop (optimisation, run length, checkpoints, logging, evaluation, publishing):
# used by `train` and compress's recovery stage only.
TRAINING_LOOP_KEYS = frozenset(
    {
        "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
        "num_train_epochs", "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio",
        "warmup_steps", "optim", "optim_args", "gradient_accumulation_steps", "per_device_train_batch_size",
        "per_device_eval_batch_size", "gradient_checkpointing", "logging_strategy", "logging_steps",
        "logging_first_step", "save_strategy", "save_steps", "save_total_limit", "save_only_model",
        "eval_strategy", "eval_steps", "load_best_model_at_end", "metric_for_best_model", "report_to",
        "push_to_hub", "hub_model_id", "hub_private_repo", "resume_from_checkpoint", "label_smoothing_factor",
    }
)  # fmt: skip
# How the student is built and how the KD loss is computed (not the teacher, data or sections).
STUDENT_KEYS = frozenset({"dtype", "attn_implementation", "init_from_scratch", "model_config", "use_peft"})
LORA_KEYS = frozenset({"lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"})
KD_LOSS_KEYS = frozenset({"divergence", "beta", "alpha", "scale_by_temperature_squared", "disable_dropout"})
TEACHER_KEYS = frozenset(
    {"teacher_model_name_or_path", "teacher_cache", "teacher_dtype", "teacher_model_init_kwargs"}
)


def _value(settings: dict[str, Any], key: str) -> Any:
    value = settings.get(key)
    return getattr(value, "value", value)  # transformers' strategy enums -> "steps", "no", ...


def _steps_only(kind: str) -> tuple[frozenset[str], Any, str]:
    return (
        frozenset({f"{kind}_steps"}),
        lambda s: _value(s, f"{kind}_strategy") != "steps",
        f"only used with {kind}_strategy: steps",
    )


# (keys, when they are ignored (over the parsed settings: field -> value; None: when given on the
# command line, a recipe's own keys being for another command that shares it), why), for the
# training-recipe commands. `train`'s rules hold wherever a run trains (a sweep's points, compress's
# recovery stage).
_TRAIN_RULES: list[tuple[frozenset[str], Any, str]] = [
    (LORA_KEYS, lambda s: not s.get("use_peft"), "LoRA settings: only used with use_peft: true"),
    (
        frozenset({"num_train_epochs"}),
        lambda s: (s.get("max_steps") or -1) > 0,
        "max_steps > 0 sets the run's length (transformers' rule)",
    ),
    (
        frozenset({"generator_num_tasks", "generator_num_eval_tasks"}),
        lambda s: not str(s.get("dataset_name") or "").startswith("generator:"),
        "only used with dataset_name: generator:<config>",
    ),
    _steps_only("save"),  # (eval_steps is used without eval_strategy: the CoT-ICL eval callback)
    _steps_only("logging"),
]
_UNUSED_RULES: dict[str, list[tuple[frozenset[str], Any, str]]] = {
    "train": _TRAIN_RULES,
    "sweep": _TRAIN_RULES,
    "cache-teacher": [
        (
            TRAINING_LOOP_KEYS | STUDENT_KEYS | LORA_KEYS | KD_LOSS_KEYS,
            None,  # a training recipe's own keys are for the `train` run that uses the cache
            "cache-teacher runs the teacher over the recipe's data; the student, training-loop and loss "
            "settings are for `train`",
        ),
        _TRAIN_RULES[2],  # generator_num_tasks without a generator: dataset
    ],
    "compress": [
        (
            frozenset(
                {
                    "prune_mlp_keep_ratio",
                    "prune_kv_heads_keep",
                    "prune_q_heads_per_kv_keep",
                    "prune_criterion",
                    "prune_refit",
                    "recover",
                }
            ),  # fmt: skip
            lambda s: not s.get("prune"),
            "only used with prune: true (recovery follows pruning)",
        ),
        (
            frozenset(
                {
                    "quantize_group_size",
                    "quantize_symmetric",
                    "quantize_method",
                    "quantize_act_order",
                    "quantize_quantease_iters",
                    "quantize_quantease_init",
                    "quantize_damp",
                }
            ),  # fmt: skip
            lambda s: s.get("quantize_bits") is None,
            "only used with quantize_bits: 4 or 8",
        ),
        (
            (TRAINING_LOOP_KEYS | KD_LOSS_KEYS | LORA_KEYS | TEACHER_KEYS) - {"push_to_hub", "hub_model_id"},
            lambda s: not (s.get("prune") and s.get("recover")),
            "training settings: only used by the KD recovery stage (prune: true and recover: true)",
        ),
        *_TRAIN_RULES,
    ],
}


def given_keys(recipe: dict[str, Any] | None, overrides: list[str] | None = None) -> list[str]:
    """The fields a recipe mapping and ``--key value`` overrides set, in order, once each."""
    keys = list(recipe or {})
    for arg in overrides or ():
        if arg.startswith("--"):
            keys.append(arg[2:].split("=")[0].replace("-", "_").removeprefix("no_"))
    return list(dict.fromkeys(keys))


def unused_settings(
    command: str, keys: list[str], configs: tuple | list, command_line: list[str] | tuple = ()
) -> dict[str, str]:
    """Of the fields ``keys`` given to ``command``, those it ignores with the parsed ``configs``
    (its config instances): ``{key: why}``. ``command``: train, sweep, cache-teacher or compress;
    ``command_line``: the keys among ``keys`` given on the command line."""
    settings: dict[str, Any] = {}
    for config in configs:
        for f in dataclasses.fields(config):
            settings.setdefault(f.name, getattr(config, f.name, None))
    out: dict[str, str] = {}
    for rule_keys, ignored, why in _UNUSED_RULES.get(command, []):
        hit = [k for k in keys if k in rule_keys and k not in out]
        if ignored is None:  # only what the command line gives
            hit = [k for k in hit if k in command_line]
        if hit and (ignored is None or ignored(settings)):
            out.update(dict.fromkeys(hit, why))
    return out


def warn_unused(where: str, command: str, unused: dict[str, str]) -> list[str]:
    """One ``warning:`` line per reason, naming the keys ``command`` ignores; returns the lines."""
    by_reason: dict[str, list[str]] = {}
    for key, why in unused.items():
        by_reason.setdefault(why, []).append(key)
    from hf_cot_distill.core.console import warn

    lines = []
    for why, keys in by_reason.items():
        it = "it" if len(keys) == 1 else "them"
        lines.append(
            f"{where}: `{command}` does not use {', '.join(keys)}: {why}; remove {it} to silence this."
        )
        warn(lines[-1])
    return lines


def check_settings(
    command: str,
    recipe_path: str | os.PathLike | None,
    overrides: list[str],
    configs: tuple | list,
) -> list[str]:
    """After :func:`parse_recipe`: warn (one line per reason) about the fields, from the recipe or
    the command line, that ``command`` does not use with these ``configs``; returns the lines. A
    command-line value replacing the recipe's is what the command line is for: not warned about."""
    recipe = load_recipe_yaml(recipe_path) if recipe_path is not None else {}
    unused = unused_settings(command, given_keys(recipe, overrides), configs, given_keys(None, overrides))
    return warn_unused(str(recipe_path or "command line"), command, unused)
