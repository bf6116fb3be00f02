"""``hf-cot-distill compress``: prune -> KD recovery -> quantize, from one flat recipe.

A compress recipe is a training recipe (the KD recovery stage: ``ModelArguments``,
``DataArguments``, ``SectionKDConfig``) plus the fields of :class:`CompressArguments`.
``model_name_or_path`` is the model to compress; it is also the teacher of the recovery stage
unless ``teacher_model_name_or_path`` names another. Stages, each saved to its own folder under
``output_dir`` with a model card that records the settings:

1. ``pruned/`` (``prune: true``): structured pruning of MLP channels and attention heads
   (:mod:`hf_cot_distill.compress.prune`) scored on calibration rows of the training split;
2. ``recovered/`` (``prune: true`` and ``recover: true``): ``SectionKDTrainer`` trains the pruned
   model against the original (the recipe's supervision, truncation, steps, ...);
3. ``quantized/`` (``quantize_bits: 4|8``): weight quantization of the last stage
   (:mod:`hf_cot_distill.compress.quantize`): GPTQ with static activation ordering by default,
   QuantEase (``quantize_method: quantease``, :mod:`hf_cot_distill.compress.quantease`) or
   round-to-nearest, saved in the compressed-tensors format; the card states the column ordering.

``compress_report.json`` in ``output_dir`` lists every stage: folder, parameters, size on disk,
and the stage's own report (kept channels/heads, reconstruction errors, ...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_cot_distill.core.tables import markdown_table
from hf_cot_distill.core.validation import check_bool, check_choice, check_float, check_int

PRUNE_CRITERIA = ("reconstruction", "magnitude")
QUANT_METHODS = ("gptq", "quantease", "rtn")
QUANTEASE_INITS = ("gptq", "weight")


@dataclass
class CompressArguments:
    """What ``hf-cot-distill compress`` does to the model (the recipe's other fields drive recovery)."""

    prune: bool = field(
        default=False, metadata={"help": "Structured pruning of MLP channels / attention heads."}
    )
    prune_mlp_keep_ratio: float = field(
        default=0.5, metadata={"help": "Share of MLP intermediate channels kept in every layer, in (0, 1]."}
    )
    prune_kv_heads_keep: int | None = field(
        default=None,
        metadata={"help": "KV heads kept per layer (a KV group goes with its query heads); unset = all."},
    )
    prune_q_heads_per_kv_keep: int | None = field(
        default=None, metadata={"help": "Query heads kept in every kept KV group; unset = all."}
    )
    prune_criterion: str = field(
        default="reconstruction",
        metadata={"help": f"Importance score: {' or '.join(PRUNE_CRITERIA)} (weight-norm baseline)."},
    )
    prune_refit: bool = field(
        default=True,
        metadata={"help": "Re-solve down_proj / o_proj by least squares on calibration data after pruning."},
    )
    recover: bool = field(
        default=True,
        metadata={
            "help": "After pruning, train the pruned model by KD from the original (the recipe's steps)."
        },
    )
    quantize_bits: int | None = field(
        default=None, metadata={"help": "Quantize the weights of the last stage to 4 or 8 bits; unset = no."}
    )
    quantize_group_size: int = field(
        default=128, metadata={"help": "Input columns per quantization scale; -1 = one scale per output row."}
    )
    quantize_symmetric: bool = field(default=True, metadata={"help": "Symmetric (no zero point) scales."})
    quantize_method: str = field(
        default="gptq",
        metadata={
            "help": f"{', '.join(QUANT_METHODS)}: GPTQ error feedback, QuantEase coordinate descent "
            "(starts from GPTQ) or round-to-nearest (no calibration)."
        },
    )
    quantize_act_order: bool = field(
        default=True,
        metadata={
            "help": "Static activation ordering: GPTQ / QuantEase process the columns by decreasing Hessian "
            "diagonal, group scales from the original weight (false: input order)."
        },
    )
    quantize_quantease_iters: int = field(
        default=8, metadata={"help": "QuantEase: coordinate-descent sweeps over all columns."}
    )
    quantize_quantease_init: str = field(
        default="gptq",
        metadata={
            "help": f"QuantEase start: {' or '.join(QUANTEASE_INITS)} (the GPTQ solution, or the "
            "unquantized weight as in the paper)."
        },
    )
    quantize_damp: float = field(default=0.01, metadata={"help": "GPTQ Hessian dampening (x mean diagonal)."})
    quantize_ignore: list[str] | None = field(
        default=None,
        metadata={
            "help": "Decoder linears kept in full precision: module-name suffixes (self_attn.o_proj) or "
            "'re:<regex>' patterns, e.g. for a layer whose width quantize_group_size does not divide."
        },
    )
    calibration_samples: int = field(
        default=64, metadata={"help": "Training rows used as calibration data for pruning and quantization."}
    )
    calibration_batch_size: int = field(default=8, metadata={"help": "Rows per calibration forward pass."})
    eval_samples: int = field(
        default=256,
        metadata={
            "help": "Eval-split rows for the held-out CE of every stage (0 = skip; needs an eval split)."
        },
    )

    def __post_init__(self) -> None:
        check_float(
            "prune_mlp_keep_ratio",
            self.prune_mlp_keep_ratio,
            minimum=0,
            maximum=1,
            min_open=True,
            fix="e.g. 0.5",
        )
        check_choice("prune_criterion", self.prune_criterion, PRUNE_CRITERIA)
        if self.quantize_bits is not None:  # None: no quantization
            fix = "use 4 or 8 (or leave it unset)"
            check_int("quantize_bits", self.quantize_bits, fix=fix)
            check_choice("quantize_bits", self.quantize_bits, (4, 8), fix=fix)
        check_choice("quantize_method", self.quantize_method, QUANT_METHODS)
        check_bool("quantize_act_order", self.quantize_act_order)
        check_int("quantize_quantease_iters", self.quantize_quantease_iters, minimum=0, fix="e.g. 8")
        check_choice("quantize_quantease_init", self.quantize_quantease_init, QUANTEASE_INITS)
        if self.quantize_group_size != -1:  # -1: one scale per output row
            fix = "use a positive size, or -1 for one scale per output row"
            check_int("quantize_group_size", self.quantize_group_size, minimum=1, fix=fix)
        check_int(
            "eval_samples", self.eval_samples, minimum=0, fix="use an int >= 0 (0 skips the held-out CE)"
        )
        for name in ("prune_kv_heads_keep", "prune_q_heads_per_kv_keep"):
            if getattr(self, name) is not None:  # None: keep all
                fix = "keep at least 1 (or leave it unset to keep all)"
                check_int(name, getattr(self, name), minimum=1, fix=fix)
        self._check_quantize_ignore()
        for name in ("calibration_samples", "calibration_batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        if not self.prune and self.quantize_bits is None:
            raise ValueError("nothing to do: set prune: true and/or quantize_bits: 4|8.")

    def _check_quantize_ignore(self) -> None:
        if self.quantize_ignore is None:
            return
        from hf_cot_distill.compress.quantize import valid_ignore_pattern

        if self.quantize_bits is None:
            raise ValueError(
                f"quantize_ignore={self.quantize_ignore}: only applies to quantization; "
                "fix: set quantize_bits: 4|8, or drop quantize_ignore."
            )
        if isinstance(self.quantize_ignore, str):
            raise ValueError(
                f"quantize_ignore={self.quantize_ignore!r}: use a list of patterns, e.g. [{self.quantize_ignore!r}]."
            )
        for pattern in self.quantize_ignore:
            if not valid_ignore_pattern(pattern):
                raise ValueError(
                    f"quantize_ignore: {pattern!r} is not a module-name suffix (e.g. 'self_attn.o_proj') "
                    "or a 're:<regex>' pattern that compiles; fix that entry."
                )

    def prune_config(self) -> Any:
        from hf_cot_distill.compress.prune import PruneConfig

        return PruneConfig(
            mlp_keep_ratio=self.prune_mlp_keep_ratio,
            kv_heads_keep=self.prune_kv_heads_keep,
            q_heads_per_kv_keep=self.prune_q_heads_per_kv_keep,
            criterion=self.prune_criterion,
            refit=self.prune_refit,
        )

    def quantization_ordering(self) -> str:
        """The column ordering of the quantizer, in words (the card's ``ordering``)."""
        if self.quantize_method == "rtn":
            return "none (round-to-nearest: every weight on its own)"
        if self.quantize_act_order:
            return "static activation order (columns by decreasing Hessian diagonal; group scales from the original weight)"
        return "input order (group scales from the error-updated columns)"

    def quantize_config(self) -> Any:
        from hf_cot_distill.compress.quantize import QuantizeConfig

        return QuantizeConfig(
            bits=self.quantize_bits,
            group_size=None if self.quantize_group_size == -1 else self.quantize_group_size,
            symmetric=self.quantize_symmetric,
            method=self.quantize_method,
            damp=self.quantize_damp,
            act_order=self.quantize_act_order,
            quantease_iters=self.quantize_quantease_iters,
            quantease_init=self.quantize_quantease_init,
            **({} if self.quantize_ignore is None else {"ignore": tuple(self.quantize_ignore)}),
        )


def calibration_batches(
    rows: Any, n_samples: int, batch_size: int, pad_token_id: int = 0
) -> list[dict[str, torch.Tensor]]:
    """The first ``n_samples`` rows (with ``input_ids``) as right-padded batches, longest rows first.

    Returns ``[{"input_ids": LongTensor[B, T], "attention_mask": LongTensor[B, T]}]``; padding
    carries ``attention_mask = 0`` (the pruning / quantization statistics skip it). The rows are
    batched in decreasing length (stable), so rows of similar length share a batch and little
    compute goes to padding; the statistics are sums over the tokens, which the grouping does not change.
    """
    n = min(n_samples, len(rows))
    if n == 0:
        raise ValueError("calibration: the training split has no rows; fix: point dataset_name at data.")
    ids = sorted((rows[i]["input_ids"] for i in range(n)), key=len, reverse=True)
    batches = []
    for start in range(0, n, batch_size):
        input_ids, mask = _right_pad(ids[start : start + batch_size], pad_token_id)
        batches.append({"input_ids": input_ids, "attention_mask": mask})
    return batches


def _right_pad(seqs: list[Any], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of ints as a right-padded ``LongTensor[B, T]`` (``T`` = the longest) and its
    ``attention_mask`` (1 on real positions)."""
    width = max(len(seq) for seq in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        out[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return out, mask


@torch.no_grad()
def heldout_ce(model: torch.nn.Module, rows: Any, max_rows: int = 256, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats) on the CoT and answer tokens of ``rows``.

    ``rows``: a dataset / list of rows with ``input_ids`` and ``section_ids`` (the encoded or
    generated splits of :func:`hf_cot_distill.pipelines.training_data.prepare_data`); the target at position
    ``t + 1`` counts when its section is CoT or answer. Returns ``nan`` only if no row has one.
    """
    import torch.nn.functional as F

    from hf_cot_distill.core.sections import Section

    n = min(max_rows, len(rows))
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for start in range(0, n, batch_size):
        chunk = [rows[i] for i in range(start, min(start + batch_size, n))]
        ids, mask = _right_pad([r["input_ids"] for r in chunk], 0)
        sections, _ = _right_pad([r["section_ids"] for r in chunk], int(Section.PAD))
        device = next(model.parameters()).device
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float().cpu()
        target = ids[:, 1:]
        keep = (sections[:, 1:] == int(Section.COT)) | (sections[:, 1:] == int(Section.ANSWER))
        ce = F.cross_entropy(logits[keep], target[keep], reduction="sum")
        total, count = total + float(ce), count + int(keep.sum())
    model.train(was_training)
    return total / count if count else float("nan")


def folder_size_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (``*.safetensors``) in ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (``parameters()`` yields a tied weight once)."""
    return sum(p.numel() for p in model.parameters())


def _report_dict(report: Any) -> dict[str, Any]:
    if hasattr(report, "to_dict"):
        return report.to_dict()
    if dataclasses.is_dataclass(report):
        return dataclasses.asdict(report)
    return dict(report)


def _load(path: str, model_args: Any) -> Any:
    """The model in float32 (pruning / quantization statistics need it), safetensors only."""
    from hf_cot_distill.models.loading import load_causal_lm

    return load_causal_lm(
        path, "model_name_or_path", dtype=torch.float32, trust_remote_code=model_args.trust_remote_code
    )


def _check_model_fits(model: torch.nn.Module, args: CompressArguments) -> None:
    """Refuse, before any stage runs, keep counts the model does not have and a quantization
    setting the quantizer would refuse later: a ``quantize_ignore`` entry that matches no linear,
    or a ``quantize_group_size`` that does not divide the input width a decoder linear will have
    when it is quantized (after pruning: ``o_proj`` and ``down_proj`` get narrower)."""
    from torch import nn

    from hf_cot_distill.models.decoder import decoder_layers

    prefix, layers = decoder_layers(model)
    narrowed: dict[str, int] = {}  # module-name suffix -> its input width after pruning
    if args.prune:
        from hf_cot_distill.compress.prune import PruneConfig, make_plan, prunable_layers

        prunable_layers(model)  # an unsupported architecture fails here, not after data generation
        plan = make_plan(layers, PruneConfig(mlp_keep_ratio=args.prune_mlp_keep_ratio))
        for name, have, what in (
            ("prune_kv_heads_keep", plan.n_kv, "KV heads per layer"),
            ("prune_q_heads_per_kv_keep", plan.q_per_kv, "query heads per KV group"),
        ):
            keep = getattr(args, name)
            if keep is not None and keep > have:
                raise ValueError(
                    f"{name}={keep}: the model has {have} {what}; fix: use 1..{have} (or leave it unset to keep all)."
                )
        kv = args.prune_kv_heads_keep or plan.n_kv
        heads = kv * (args.prune_q_heads_per_kv_keep or plan.q_per_kv)
        narrowed = {"self_attn.o_proj": heads * plan.head_dim, "mlp.down_proj": plan.mlp_keep}
    if args.quantize_bits is None:
        return
    config = args.quantize_config()
    all_linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for pattern in args.quantize_ignore or ():
        one = dataclasses.replace(config, ignore=(pattern,))
        if not any(one.is_ignored(n) for n in all_linears):
            raise ValueError(
                f"quantize_ignore: {pattern!r} matches no linear of the model (names look like "
                f"{all_linears[0]!r}); fix: use a module-name suffix such as 'self_attn.o_proj'."
            )
    # (name inside its layer, input width when quantized) of every decoder linear that gets quantized
    widths: dict[tuple[str, int], None] = {}
    for index, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear) and not config.is_ignored(f"{prefix}.{index}.{name}"):
                widths[(name, narrowed.get(name, module.in_features))] = None
    if not widths:
        raise ValueError(
            f"quantize_ignore={args.quantize_ignore} leaves no decoder linear to quantize; "
            "fix: ignore fewer layers, or unset quantize_bits."
        )
    size = config.group_size
    bad = [(name, width) for name, width in widths if size is not None and width % size]
    if bad:
        after = " after pruning" if {name for name, _ in bad} & set(narrowed) else ""
        shown = ", ".join(f"{name} ({width})" for name, width in bad)
        ignore = sorted({name for name, _ in bad})
        ignore_fix = (
            f", or add {ignore} to quantize_ignore (kept in full precision)" if len(bad) < len(widths) else ""
        )
        raise ValueError(
            f"quantize_group_size={size} does not divide the input width of {shown}{after}; fix: set "
            f"quantize_group_size: {math.gcd(*(width for _, width in widths))} (divides every quantized "
            f"linear) or -1 (one scale per output row){ignore_fix}."
        )


def _settings(args: CompressArguments, prefix: str) -> dict[str, Any]:
    return {
        f.name[len(prefix) :]: getattr(args, f.name)
        for f in dataclasses.fields(args)
        if f.name.startswith(prefix) and getattr(args, f.name) is not None
    }


def run_compress(
    model_args: Any,
    data_args: Any,
    kd_args: Any,
    compress_args: CompressArguments,
    recipe_path: str | None = None,
) -> dict[str, Any]:
    """Run the stages the recipe asks for; returns (and writes) ``compress_report.json``."""
    from hf_cot_distill.hub.cards import write_model_card
    from hf_cot_distill.pipelines.train import run_training
    from hf_cot_distill.pipelines.training_data import prepare_data
    from hf_cot_distill.pipelines.training_models import check_run_sources, load_tokenizer

    if not model_args.model_name_or_path:
        raise ValueError(
            "model_name_or_path: the model to compress is required (a local safetensors folder)."
        )
    check_run_sources(model_args, kd_args, data_args)
    original = model_args.model_name_or_path
    teacher = kd_args.teacher_model_name_or_path or original
    out = Path(kd_args.output_dir)
    # Statistics and solves run on the GPU when there is one (and the recipe does not ask for CPU).
    device = torch.device("cuda" if torch.cuda.is_available() and not kd_args.use_cpu else "cpu")
    model = _load(original, model_args)
    _check_model_fits(model, compress_args)  # before data generation and before any folder exists
    model = model.to(device)
    tokenizer = load_tokenizer(model_args)
    data = prepare_data(data_args, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    calib = calibration_batches(
        data.train, compress_args.calibration_samples, compress_args.calibration_batch_size, pad_id
    )
    out.mkdir(parents=True, exist_ok=True)

    def quality(m: torch.nn.Module) -> dict[str, float]:
        if data.eval is None or compress_args.eval_samples == 0:
            return {}
        return {"heldout_ce": heldout_ce(m, data.eval, max_rows=compress_args.eval_samples)}

    stages: list[dict[str, Any]] = [
        {"stage": "original", "path": original, "parameters": count_parameters(model),
         "size_bytes": folder_size_bytes(original) if Path(original).is_dir() else None, **quality(model)}
    ]  # fmt: skip
    compression: dict[str, dict[str, Any]] = {}
    current = original

    n_rows = sum(int(b["input_ids"].shape[0]) for b in calib)
    n_calib = sum(int(b["attention_mask"].sum()) for b in calib)
    if compress_args.prune:
        from hf_cot_distill.compress.prune import prune_model

        print(
            f"[compress] pruning {original} on {n_calib:,} calibration tokens ({compress_args.prune_criterion})"
        )
        start = time.perf_counter()
        report = _report_dict(prune_model(model, calib, compress_args.prune_config()))
        folder = out / "pruned"
        model.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        compression["pruning"] = {
            **_settings(compress_args, "prune_"),
            "calibration_samples": n_rows,
            "parameters_before": stages[0]["parameters"],
            "parameters_after": count_parameters(model),
        }
        write_model_card(folder, model_name=folder.name, base_model=original, compression=compression)
        stages.append(
            {"stage": "pruned", "path": str(folder), "parameters": count_parameters(model),
             "size_bytes": folder_size_bytes(folder), "seconds": time.perf_counter() - start, "report": report,
             **quality(model)}
        )  # fmt: skip
        current = str(folder)
        if compress_args.recover:
            folder = out / "recovered"
            print(f"[compress] KD recovery of the pruned model from {teacher}, {kd_args.max_steps} steps")
            recover_model = dataclasses.replace(model_args, model_name_or_path=current)
            kd_args.teacher_model_name_or_path = teacher
            kd_args.output_dir = str(folder)
            compression["kd_recovery"] = {
                "teacher": teacher, "supervision_preset": kd_args.supervision_preset,
                "divergence": kd_args.divergence, "max_steps": kd_args.max_steps,
                "learning_rate": kd_args.learning_rate,
            }  # fmt: skip
            metrics = run_training(
                recover_model, data_args, kd_args, recipe_path=recipe_path,
                card_fields={"compression": compression},
            )  # fmt: skip
            model = _load(str(folder), model_args).to(device)
            stages.append(
                {"stage": "recovered", "path": str(folder), "parameters": count_parameters(model),
                 "size_bytes": folder_size_bytes(folder), "train_metrics": metrics, **quality(model)}
            )  # fmt: skip
            current = str(folder)

    if compress_args.quantize_bits is not None:
        from hf_cot_distill.compress.quantize import quantize_model, save_quantized

        print(
            f"[compress] quantizing {current} to {compress_args.quantize_bits} bits ({compress_args.quantize_method})"
        )
        start = time.perf_counter()
        report = quantize_model(model, calib, compress_args.quantize_config())
        folder = out / "quantized"
        save_quantized(model, folder, report, tokenizer=tokenizer)
        settings = _settings(compress_args, "quantize_")
        if compress_args.quantize_method != "quantease":
            settings = {k: v for k, v in settings.items() if not k.startswith("quantease_")}
        compression["quantization"] = {
            **settings,
            "ordering": compress_args.quantization_ordering(),
            "format": "compressed-tensors",
            "calibration_samples": n_rows,
        }
        write_model_card(folder, model_name=folder.name, base_model=current, compression=compression)
        stages.append(
            {"stage": "quantized", "path": str(folder), "parameters": count_parameters(model),
             "size_bytes": folder_size_bytes(folder), "seconds": time.perf_counter() - start,
             "report": _report_dict(report), **quality(model)}
        )  # fmt: skip

    summary = {"recipe": recipe_path, "original": original, "teacher": teacher, "stages": stages}
    (out / "compress_report.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def stage_table(stages: list[dict[str, Any]]) -> str:
    """The stages of a compress run as a markdown table (parameters, weights on disk, folder)."""
    rows = []
    for stage in stages:
        size = stage.get("size_bytes")
        shown = f"{size / 2**20:,.2f} MiB" if size else "-"
        rows.append([stage["stage"], f"{stage['parameters']:,}", shown, stage["path"]])
    return markdown_table(["stage", "parameters", "weights on disk", "folder"], rows)
