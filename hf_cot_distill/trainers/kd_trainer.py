"""``SectionKDTrainer``: section-aware, memory-bounded KD (and CE) as a ``transformers.Trainer``.

Per micro-batch (``compute_loss``):

1. the student's and the frozen teacher's *last hidden states* are computed by their own
   forwards with the lm_head run on zero positions (:func:`heads.last_hidden_states`), so no
   ``(B, T, V)`` logits ever exist;
2. hidden states, labels, weights and section ids are shifted by one: position ``i`` predicts
   token ``i + 1`` and takes the weights and the section of the *predicted* token;
3. :func:`hf_cot_distill.losses.fused_linear_kd` computes CE and KD chunk by chunk at the
   selected positions only, with ``kd_scale = world / n_kd`` and ``ce_scale = world / n_ce``
   where ``n_kd`` / ``n_ce`` count the KD / CE positions of the whole accumulation window over
   all micro-batches and ranks (:meth:`_get_num_items_in_batch`; ``world`` undoes DDP's
   gradient averaging). So batch 4 x accumulation 1 and batch 1 x accumulation 4 give the same
   update, and padding or packing changes nothing.

Without a teacher (or with ``kd_weight=0``) it is plain section-weighted CE. ``kd_mode``
``on_policy`` / ``sequence_level`` replace each batch of an accumulation window by generated
completions *before* the window's counts are taken (:meth:`get_batch_samples`).

Logged (train): ``ce/<section>``, ``kd/<section>`` (mean per token, unweighted), tokens
trained per section (``tokens_kd/*``, ``tokens_ce/*``), tokens cut by truncation
(``truncation/tokens_cut/*``), counted FLOPs (:mod:`hf_cot_distill.models.compute`) and peak memory.
``self.model_card_fields`` keeps what a model card needs.
The console shows one progress bar with the key figures of these logs instead of the Trainer's
raw dicts (:mod:`hf_cot_distill.trainers.console`; ``--verbose`` / ``HF_COT_DISTILL_VERBOSE=1``
keep the raw stream); the logs themselves go to ``state.log_history`` unchanged.

An accumulation window with no position to supervise stops the run (``on_empty_window="error"``)
or trains at a graph-connected zero loss (``"skip"``: the student's forward and the fused loss run
with all weights 0, so every parameter gets a zero gradient and DDP / DeepSpeed ranks stay in
step); skipped windows are counted (``windows_skipped_empty``, logged and saved with the
checkpoints), and a run whose every window was empty is refused when it ends.

A diverged run stops: a non-finite window loss (checked once per optimizer step) or gradient
norm raises :class:`TrainingDivergedError` before the optimizer step, and :meth:`save_model`
refuses parameters holding NaN/inf (final model and checkpoints).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer, TrainerCallback

from hf_cot_distill.core.sections import NUM_SECTIONS, SECTION_NAMES, Section
from hf_cot_distill.losses import fused_cached_kd, fused_linear_kd
from hf_cot_distill.models import heads
from hf_cot_distill.models.compute import ComputeAccounting, body_parameter_count, kd_step_flops
from hf_cot_distill.models.loading import load_causal_lm
from hf_cot_distill.supervision.collators import SectionCollator
from hf_cot_distill.supervision.truncation import TruncationAccounting
from hf_cot_distill.trainers import _generation
from hf_cot_distill.trainers.console import use_console
from hf_cot_distill.trainers.kd_config import GENERATED_SECTIONS, SectionKDConfig
from hf_cot_distill.trainers.metrics import SectionLossStats
from hf_cot_distill.trainers.teacher import load_teacher, prepare_teacher
from hf_cot_distill.trainers.teacher_cache import (
    TeacherCache,
    batch_targets,
    check_cache_fits,
    with_cache_rows,
)

_FORWARD_KEYS = ("input_ids", "attention_mask", "position_ids")
COUNTERS_FILE = "hf_cot_distill_counters-rank{rank}.json"


def _fields_dict(obj: Any) -> dict[str, Any]:
    """A dataclass of ints, floats and numpy arrays as JSON-able lists (exact: int64 / float64)."""
    return {
        f.name: (v.tolist() if isinstance(v, np.ndarray) else v)
        for f in fields(obj)
        if (v := getattr(obj, f.name)) is not None
    }


def _from_fields(cls: type, saved: dict[str, Any]) -> Any:
    """Rebuild ``cls`` from :func:`_fields_dict`, each array with its default's dtype."""
    default = cls()
    values = {}
    for f in fields(cls):
        if f.name not in saved or not f.init:
            continue
        old = getattr(default, f.name)
        values[f.name] = (
            np.asarray(saved[f.name], dtype=old.dtype) if isinstance(old, np.ndarray) else saved[f.name]
        )
    return cls(**values)


_REQUIRED_KEYS = ("input_ids", "labels", "section_ids", "ce_weights", "kd_weights")


class SectionKDTrainer(Trainer):
    """Trainer for section-aware KD (Distilling the Essence) with a frozen teacher.

    Args:
        model: the student (``*ForCausalLM``, or a path loaded with ``AutoModelForCausalLM``).
        teacher_model: the teacher (object or path); ``None`` falls back to
            ``args.teacher_model_name_or_path``; no teacher at all = KD off (section-weighted CE).
        args: :class:`SectionKDConfig`.
        data_collator: default: a :class:`SectionCollator` built from ``args`` (policy,
            truncation, padding/packing) that also returns its truncation accounting.
        train_dataset / eval_dataset: rows with ``input_ids`` and ``section_ids`` (and
            optionally ``labels``, ``attention_mask``).
        processing_class: the student tokenizer (its length is the real vocabulary; lm_head
            rows beyond it are padding).
        teacher_processing_class: the teacher tokenizer; with both, the tokenizer compatibility
            check runs at init (ValueError on mismatch).
        peft_config: a ``peft.PeftConfig``; the student is wrapped with ``get_peft_model``.
        callbacks, optimizers, compute_metrics: as in ``transformers.Trainer``.
    """

    _tag_names = ["hf-cot-distill", "section-kd"]
    loss_is_scaled_for_ga = True  # compute_loss normalises by the window's global counts

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
        args: SectionKDConfig | None = None,
        data_collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        teacher_processing_class: Any = None,
        peft_config: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        compute_metrics: Callable[..., dict[str, float]] | None = None,
    ) -> None:
        args = args if args is not None else SectionKDConfig(output_dir="section_kd_output")
        if not isinstance(args, SectionKDConfig):
            raise TypeError(
                f"args: expected SectionKDConfig, got {type(args).__name__}; build a SectionKDConfig."
            )
        if isinstance(model, str):
            model = load_causal_lm(model, "model")
        if isinstance(teacher_model, str):
            args.teacher_model_name_or_path = teacher_model
            teacher_model = None
        self.teacher_cache = TeacherCache(args.teacher_cache) if args.teacher_cache is not None else None
        if self.teacher_cache is not None and teacher_model is not None:
            raise ValueError(
                "teacher_model and teacher_cache: both given; fix: the cache replaces the teacher (drop "
                "teacher_model), or drop teacher_cache to distil online."
            )
        if (
            teacher_model is None
            and args.teacher_model_name_or_path is not None
            and self.teacher_cache is None
        ):
            teacher_model = load_teacher(args)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        if args.disable_dropout:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0

        self.kd_enabled = (teacher_model is not None or self.teacher_cache is not None) and args.kd_weight > 0
        self.supervision = args.build_supervision(self.kd_enabled)
        if args.kd_mode != "supervised" and teacher_model is None:
            raise ValueError(
                f"kd_mode: {args.kd_mode!r} needs a teacher (to score or to generate); fix: pass teacher_model "
                "or set teacher_model_name_or_path, or use kd_mode='supervised'."
            )
        self.vocab_size = heads.resolve_vocab_size(
            model, teacher_model, processing_class, teacher_processing_class
        )
        self.pad_token_id = self._pad_token_id(model, processing_class)
        if self.teacher_cache is not None:
            check_cache_fits(self.teacher_cache, args, self.supervision, self.vocab_size)
            train_dataset = with_cache_rows(train_dataset, self.teacher_cache)
        if data_collator is None:
            data_collator = SectionCollator(
                supervision=self.supervision,
                pad_token_id=self.pad_token_id,
                truncation=args.build_truncation(processing_class),  # whole multi-token CoT markers
                pad_to_multiple_of=args.pad_to_multiple_of,
                padding_free=args.padding_free,
                on_supervision_lost=args.on_supervision_lost,  # type: ignore[arg-type]
                return_accounting=True,
                default_kd_temperature=args.temperature,
                carry_source_positions=self.teacher_cache is not None,
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            compute_metrics=compute_metrics,
        )
        self.teacher_model = prepare_teacher(teacher_model, self) if teacher_model is not None else None
        self._kd_section_w = np.array(
            [self.supervision.for_section(s).kd_weight for s in range(NUM_SECTIONS)], dtype=np.float64
        )
        self._ce_section_w = np.array(
            [self.supervision.for_section(s).ce_weight for s in range(NUM_SECTIONS)], dtype=np.float64
        )
        self._stats = {"train": SectionLossStats(), "eval": SectionLossStats()}
        self.compute_accounting = ComputeAccounting()
        self.truncation_accounting = TruncationAccounting()
        self._flop_sizes = self._model_sizes(model, teacher_model)
        self._window_loss: Tensor | None = None  # summed micro-batch losses of the current window
        self._loss_before_call = 0.0  # loss summed over the steps before a resume (restored)
        self.windows_skipped_empty = 0  # training windows with nothing to supervise (on_empty_window="skip")
        self._resumed = False
        self.model_card_fields: dict[str, Any] = {}
        self._update_model_card_fields()
        use_console(self)  # one progress bar with the key figures, unless --verbose

    # ---- setup helpers ----------------------------------------------------------------
    @staticmethod
    def _pad_token_id(model: nn.Module, tokenizer: Any) -> int:
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        if pad is None:
            pad = getattr(heads.unwrap_causal_lm(model).config, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    @staticmethod
    def _model_sizes(student: nn.Module, teacher: nn.Module | None) -> dict[str, int]:
        sizes = {
            "student_body": body_parameter_count(student),
            "student_hidden": heads.hidden_size(student),
        }
        sizes["teacher_body"] = body_parameter_count(teacher) if teacher is not None else 0
        sizes["teacher_hidden"] = heads.hidden_size(teacher) if teacher is not None else 0
        return sizes

    # ---- counts for normalisation -------------------------------------------------------
    def _local_counts(self, batches: list[dict[str, Any]]) -> Tensor:
        """``(2,)`` float64 ``[n_kd, n_ce]``: positions with KD / CE weight > 0 (shifted)."""
        n_kd = n_ce = 0
        for batch in batches:
            self._check_batch(batch)
            if self.kd_enabled:
                n_kd += int((batch["kd_weights"][..., 1:] > 0).sum())
            n_ce += int((batch["ce_weights"][..., 1:] > 0).sum())
        return torch.tensor([n_kd, n_ce], dtype=torch.float64)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Tensor | None:
        """Global ``[n_kd, n_ce]`` of an accumulation window, summed over micro-batches and ranks."""
        if not batch_samples:
            return None
        counts = self._local_counts(batch_samples).to(device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.gather(counts).reshape(-1, 2).sum(0)
        return counts

    def get_batch_samples(
        self, epoch_iterator: Any, num_batches: int, device: torch.device
    ) -> tuple[list, Any]:
        """Fetch a window's micro-batches, replace them by generations if asked, then count."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if self.args.kd_mode != "supervised":
            batches = [self._generated(b) for b in batches]
        counts = self._get_num_items_in_batch(batches, device)
        if counts is not None and not bool(counts.sum() > 0):
            if self.args.on_empty_window == "error":
                raise ValueError(self._empty_window_message("this accumulation window"))
            self.windows_skipped_empty += 1  # global counts: every rank counts the same windows
        return batches, counts

    def _empty_window_message(self, where: str) -> str:
        skip = (
            ""
            if where != "this accumulation window"
            else ", or on_empty_window: skip to train such windows at zero loss (counted as windows_skipped_empty)"
        )
        return (
            f"batch: no position carries a KD or CE weight in {where} (policy "
            f"{self.args.supervision_preset!r}, ce_weight {self.args.ce_weight}, KD "
            f"{'on' if self.kd_enabled else 'off'}); fix: a supervision preset that matches the data's sections, "
            f"or a truncation policy that keeps the supervised sections (see truncation accounting){skip}."
        )

    @staticmethod
    def _check_batch(batch: dict[str, Any]) -> None:
        missing = [k for k in _REQUIRED_KEYS if k not in batch]
        if missing:
            raise ValueError(
                f"batch: missing {missing} (keys {sorted(batch)}); fix: use hf_cot_distill.supervision.collators.SectionCollator "
                "(the trainer's default data_collator), which adds section ids and CE/KD weights."
            )

    # ---- on_policy / sequence_level -----------------------------------------------------
    def _generated(self, batch: dict[str, Any]) -> dict[str, Any]:
        from trl.models import unwrap_model_for_generation

        accounting = batch.pop("truncation_accounting", None)
        prompts = _generation.split_prompts(batch)
        on_policy = self.args.kd_mode == "on_policy"
        source = self.model_wrapped if on_policy else self.teacher_model
        with unwrap_model_for_generation(source, self.accelerator) as generator:
            was_training = generator.training
            generator.eval()
            eos = generator.generation_config.eos_token_id
            if eos is None and self.processing_class is not None:
                eos = getattr(self.processing_class, "eos_token_id", None)
            completions = _generation.generate_completions(
                generator,
                [p for p, _ in prompts],
                pad_token_id=self.pad_token_id,
                eos_token_id=eos,
                max_new_tokens=self.args.max_new_tokens,
                do_sample=self.args.generation_do_sample,
                temperature=self.args.generation_temperature,
            )
            generator.train(was_training)
        new = _generation.build_generated_batch(
            prompts,
            completions,
            policy=self.supervision,
            generated_section=GENERATED_SECTIONS[self.args.generated_section],
            ce_on_generated=not on_policy,
            pad_token_id=self.pad_token_id,
        )
        if accounting is not None:
            new["truncation_accounting"] = accounting
        return new

    # ---- the loss ---------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Section-weighted KD + CE of one micro-batch, normalised by the window's global counts.

        ``inputs``: a :class:`SectionCollator` batch, ``(B, T)`` padded or ``(1, N)`` packed.
        ``num_items_in_batch``: ``(2,)`` ``[n_kd, n_ce]`` from :meth:`_get_num_items_in_batch`;
        anything else (e.g. a direct call) falls back to this micro-batch's own counts.
        """
        inputs = dict(inputs)
        accounting = inputs.pop("truncation_accounting", None)
        self._check_batch(inputs)
        training = model.training
        if accounting is not None and training:
            self.truncation_accounting = self.truncation_accounting + accounting
        if isinstance(num_items_in_batch, Tensor) and num_items_in_batch.numel() == 2:
            counts = num_items_in_batch.double()
        else:
            counts = self._local_counts([inputs])
        n_kd, n_ce = float(counts[0]), float(counts[1])
        if n_kd + n_ce == 0 and not (training and self.args.on_empty_window == "skip"):
            # skip: the fused loss below runs with all weights 0 (scales 0) and returns a zero that
            # flows through the student's forward and head: a zero gradient for every parameter.
            where = "this accumulation window" if training else "this evaluation batch"
            raise ValueError(self._empty_window_message(where))
        fwd = {k: inputs[k] for k in _FORWARD_KEYS if k in inputs}
        # A cache covers the training rows only: evaluation is CE there (its KD needs the teacher).
        kd_on = self.kd_enabled and (self.teacher_cache is None or training)
        kd_w = inputs["kd_weights"][:, 1:] if kd_on else torch.zeros_like(inputs["kd_weights"][:, 1:])
        ce_w, labels, sections = (
            inputs["ce_weights"][:, 1:],
            inputs["labels"][:, 1:],
            inputs["section_ids"][:, 1:],
        )

        student_h = heads.last_hidden_states(model, fwd)[:, :-1]
        student_w, student_b = heads.lm_head_params(model)
        cached = None
        if self.teacher_cache is not None and bool((kd_w > 0).any()):
            cached = batch_targets(self.teacher_cache, inputs, kd_w)
        if self.teacher_model is not None and bool((kd_w > 0).any()):
            with torch.no_grad():
                teacher_h = heads.last_hidden_states(self.teacher_model, fwd)[:, :-1]
            teacher_w, teacher_b = heads.lm_head_params(self.teacher_model)
        else:  # nothing to distil here: the student's own (detached) head stands in, unused
            teacher_h, teacher_w, teacher_b = student_h.detach(), student_w.detach(), None
        world = self.accelerator.num_processes
        args = self.args

        def fused(hidden: Tensor, kd_weights: Tensor, ce_weights: Tensor, temperature: float) -> Any:
            shared = dict(
                kd_weights=kd_weights,
                ce_labels=labels,
                ce_weights=ce_weights,
                student_bias=student_b,
                temperature=temperature,
                scale_by_temperature_squared=args.scale_by_temperature_squared,
                vocab_size=self.vocab_size,
                section_ids=sections,
                kd_scale=world / n_kd if n_kd else 0.0,
                ce_scale=world / n_ce if n_ce else 0.0,
                chunk_size=args.chunk_size,
            )
            if cached is not None:  # the teacher cache's targets instead of the teacher's logits
                return fused_cached_kd(hidden, student_w, cached, **shared)
            return fused_linear_kd(
                hidden, student_w, teacher_h, teacher_w, teacher_bias=teacher_b, divergence=args.divergence,
                beta=args.beta, alpha=args.alpha, **shared,
            )  # fmt: skip

        # One fused pass per distinct KD temperature (per-section temperatures); CE goes with
        # the first. Each pass touches only its own positions, so no work is repeated.
        groups = self._temperature_groups(inputs, kd_w)
        outs = []
        for i, (temperature, group_kd_w) in enumerate(groups):
            group_ce_w = ce_w if i == 0 else torch.zeros_like(ce_w)

            def run(hidden: Tensor, kd_weights: Tensor = group_kd_w, ce_weights: Tensor = group_ce_w,
                    temperature: float = temperature) -> Any:  # fmt: skip
                return fused(hidden, kd_weights, ce_weights, temperature)

            if hasattr(student_w, "ds_id"):
                # ZeRO-3: the student's lm_head weight is partitioned. Running the fused loss *as
                # the lm_head's forward* lets DeepSpeed's module hooks gather the weight for the
                # forward and again for the backward (where its gradient is accumulated and
                # reduce-scattered); a bare use of the weight outside its module would not be.
                outs.append(heads.call_as_module_forward(heads.output_head(model), run, student_h))
            else:
                outs.append(run(student_h))
        out = outs[0] if len(outs) == 1 else _sum_outputs(outs)
        self._record(out, inputs, kd_w, ce_w, "train" if training else "eval")
        if return_outputs:
            return out.loss, {"kd_sum": out.kd_sum, "ce_sum": out.ce_sum}
        return out.loss

    def _temperature_groups(self, inputs: dict[str, Any], kd_w: Tensor) -> list[tuple[float, Tensor]]:
        """``[(temperature, kd_weights of its positions)]``; one group without per-section temperatures."""
        temps = inputs.get("kd_temperatures")
        if temps is None:
            return [(float(self.args.temperature), kd_w)]
        temps = temps[:, 1:]
        values = sorted({float(t) for t in temps[kd_w > 0].unique().tolist()}) or [
            float(self.args.temperature)
        ]
        return [(t, torch.where(temps == t, kd_w, torch.zeros_like(kd_w))) for t in values]

    def _record(self, out: Any, inputs: dict[str, Any], kd_w: Tensor, ce_w: Tensor, mode: str) -> None:
        self._stats[mode].add(
            out.section_kd_sum,
            out.section_kd_count,
            out.section_ce_sum,
            out.section_ce_count,
            self._kd_section_w,
            self._ce_section_w,
        )
        if mode != "train":
            return
        if "attention_mask" in inputs:
            forwarded = int(inputs["attention_mask"].sum())
        else:  # packed: everything but the padding segment
            forwarded = int((inputs["section_ids"] != int(Section.PAD)).sum())
        n_head, n_kd = int(((kd_w > 0) | (ce_w > 0)).sum()), int((kd_w > 0).sum())
        sizes = self._flop_sizes
        student_flops, teacher_flops = kd_step_flops(
            student_body_params=sizes["student_body"],
            student_hidden=sizes["student_hidden"],
            vocab_size=self.vocab_size,
            tokens_forwarded=forwarded,
            head_positions=n_head,
            teacher_body_params=sizes["teacher_body"] if n_kd else 0,
            teacher_hidden=sizes["teacher_hidden"],
            kd_positions=n_kd,
        )
        self.compute_accounting.add(
            tokens_forwarded=forwarded,
            kd_tokens=out.section_kd_count.cpu().numpy(),
            ce_tokens=out.section_ce_count.cpu().numpy(),
            student_flops=student_flops,
            teacher_flops=teacher_flops,
        )

    # ---- resume: the run's counters travel with its checkpoints -------------------------
    def _counters(self) -> dict[str, Any]:
        return {
            "compute": _fields_dict(self.compute_accounting),
            "truncation": _fields_dict(self.truncation_accounting),
            "train_stats": _fields_dict(self._stats["train"]),
            # the Trainer's loss bookkeeping: logged sum, the sum not logged yet, the last logged step
            "loss_logged": self._loss_before_call + float(getattr(self, "_total_loss_scalar", 0.0)),
            "loss_pending": float(self._tr_loss.item()) if hasattr(self, "_tr_loss") else 0.0,
            "last_logged_step": int(getattr(self, "_globalstep_last_logged", 0)),
            "windows_skipped_empty": self.windows_skipped_empty,
        }

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """``Trainer._save_checkpoint`` plus this rank's counters (tokens, FLOPs, truncation and
        per-section loss sums since the last log), so a resumed run reports what the uninterrupted
        run reports."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / COUNTERS_FILE.format(rank=self.args.process_index)).write_text(json.dumps(self._counters()))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """Called once when a run resumes from ``checkpoint``: restore the counters saved with it."""
        super()._load_rng_state(checkpoint)
        if checkpoint is None:
            return
        path = Path(checkpoint) / COUNTERS_FILE.format(rank=self.args.process_index)
        if not path.is_file():
            raise ValueError(
                f"resume_from_checkpoint={checkpoint!r}: no {path.name} (a checkpoint of another trainer, or of "
                "another number of processes); the run's token, FLOP and truncation counts would restart at 0. "
                "Fix: resume with the number of processes that wrote it, or start a new run."
            )
        saved = json.loads(path.read_text())
        peak = self.compute_accounting.peak_memory  # a measure of this process, not a count
        self.compute_accounting = _from_fields(ComputeAccounting, saved["compute"])
        self.compute_accounting.peak_memory = max(peak, self.compute_accounting.peak_memory)
        self.truncation_accounting = _from_fields(TruncationAccounting, saved["truncation"])
        self._stats["train"] = _from_fields(SectionLossStats, saved["train_stats"])
        # the next log averages over the steps since the last one logged before the interruption,
        # and the run's train_loss over every step (see _finalize_training)
        self._tr_loss += saved["loss_pending"]
        self._globalstep_last_logged = saved["last_logged_step"]
        self._loss_before_call = saved["loss_logged"]
        self.windows_skipped_empty = int(saved.get("windows_skipped_empty", 0))  # older checkpoints: none
        self._resumed = True
        self._update_model_card_fields()

    def _finalize_training(self, trial: Any, num_train_samples: int, start_time: float) -> Any:
        """The Trainer's ``train_loss`` averages the steps of this ``train()`` call only; a resumed
        run reports the mean over all its steps, as the uninterrupted run does."""
        from transformers.trainer_utils import TrainOutput

        steps = self.state.global_step
        if self.windows_skipped_empty and self.windows_skipped_empty >= steps:
            raise ValueError(
                f"on_empty_window='skip': all {steps} optimizer steps of this run had no position to supervise "
                f"(windows_skipped_empty={self.windows_skipped_empty}): nothing was trained, and no final model is "
                f"saved. {self._empty_window_message('any accumulation window').split('; ', 1)[1]}"
            )
        out = super()._finalize_training(trial, num_train_samples, start_time)
        if not self._resumed:
            return out
        loss = (self._loss_before_call + self._total_loss_scalar) / max(self.state.global_step, 1)
        metrics = {**out.metrics, "train_loss": loss}
        for entry in reversed(self.state.log_history):
            if "train_loss" in entry:
                entry["train_loss"] = loss
                break
        return TrainOutput(out.global_step, loss, metrics)

    # ---- divergence guards: no step on a non-finite loss / gradient, no NaN saved ----------
    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Tensor | None = None
    ) -> Tensor:
        """``Trainer.training_step``, then, on a window's last micro-batch (before clipping and
        the optimizer step), one ``isfinite`` check of the window's summed loss: a non-finite
        loss raises :class:`TrainingDivergedError` (``logging_nan_inf_filter`` would hide it)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        window = loss if self._window_loss is None else self._window_loss + loss
        self._window_loss = window
        if self.accelerator.sync_gradients:  # the window's last micro-batch: one check per step
            self._window_loss = None
            bad = (~torch.isfinite(window)).to(torch.float32).reshape(1)
            if self.accelerator.num_processes > 1:  # every rank stops, not only the diverged one
                bad = self.accelerator.reduce(bad, reduction="sum")
            if bool(bad.item()):
                raise TrainingDivergedError(self._diverged_message(f"the training loss is {float(window)}"))
        return loss

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None) -> Any:
        """The Trainer's gradient norm (before the optimizer step); a non-finite one raises
        :class:`TrainingDivergedError`, except under fp16, whose loss scaler skips such steps."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None and not self.args.fp16 and not math.isfinite(float(grad_norm)):
            raise TrainingDivergedError(self._diverged_message(f"the gradient norm is {float(grad_norm)}"))
        return grad_norm

    def _diverged_message(self, what: str) -> str:
        args = self.args
        return (
            f"training diverged at step {self.state.global_step + 1}: {what}; stopped before the optimizer "
            f"step, nothing of this run was saved as a finished model. Fix: lower learning_rate (now "
            f"{args.learning_rate:g}), keep max_grad_norm > 0 (now {args.max_grad_norm:g}), add warmup_steps, "
            "or train in float32 / bf16 instead of fp16."
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model`` (final model and checkpoints), refusing parameters that hold
        NaN / inf: a diverged model is never written."""
        bad = [name for name, p in self.model.named_parameters() if not _finite_tensor(p)]
        count = torch.tensor([float(len(bad))], device=self.args.device)
        if self.accelerator.num_processes > 1:  # sharded (ZeRO-3) weights: every rank decides alike
            count = self.accelerator.reduce(count, reduction="sum")
        if count.item():
            shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise TrainingDivergedError(
                f"refusing to save to {output_dir or self.args.output_dir}: {len(bad) or 'some'} parameter tensors "
                f"hold NaN/inf ({shown or 'on another rank'}); the run diverged. Fix: lower learning_rate "
                f"(now {self.args.learning_rate:g}), keep max_grad_norm > 0, or train in float32 / bf16."
            )
        super().save_model(output_dir, _internal_call)

    # ---- evaluation: loss only (no logits exist) ------------------------------------------
    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Eval loss of one batch (normalised by its own counts); no logits are produced."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ---- logging ------------------------------------------------------------------------
    def _reduced_stats(self, mode: str) -> SectionLossStats:
        stats = self._stats[mode]
        if self.accelerator.num_processes > 1:
            t = torch.tensor(stats.as_array(), device=self.args.device)
            stats = SectionLossStats.from_array(self.accelerator.reduce(t, reduction="sum").cpu().numpy())
        return stats

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add per-section losses, tokens, truncation, FLOPs and peak memory to train/eval logs."""
        if "loss" in logs:
            logs.update(self._reduced_stats("train").means())
            self._stats["train"] = SectionLossStats()
            self.compute_accounting.update_peak_memory(self.args.device)
            logs.update(self.compute_accounting.to_dict())
            cut = self.truncation_accounting.tokens_removed
            for s in (Section.PROMPT, Section.COT, Section.ANSWER):
                logs[f"truncation/tokens_cut/{SECTION_NAMES[int(s)]}"] = int(cut[s])
            if self.args.on_empty_window == "skip":
                logs["windows_skipped_empty"] = self.windows_skipped_empty  # since the run began
            self._update_model_card_fields()
        elif "eval_loss" in logs:
            logs.update(self._reduced_stats("eval").means("eval_"))
            self._stats["eval"] = SectionLossStats()
        super().log(logs, start_time)

    def _update_model_card_fields(self) -> None:
        """What a model card needs (teacher, objective, policy, truncation, tokens, FLOPs)."""
        args = self.args
        teacher = None
        if self.teacher_cache is not None:
            teacher = (
                f"{self.teacher_cache.info.get('teacher')} (from the teacher cache {self.teacher_cache.path})"
            )
        if self.teacher_model is not None:
            cfg = heads.unwrap_causal_lm(self.teacher_model).config
            teacher = (
                args.teacher_model_name_or_path or getattr(cfg, "_name_or_path", None) or type(cfg).__name__
            )
        acc = self.compute_accounting
        self.model_card_fields = {
            "teacher": teacher,
            "kd_mode": args.kd_mode if self.kd_enabled else "none (CE only)",
            "objective": args.describe_objective() if self.kd_enabled else self.supervision.describe(),
            "divergence": args.divergence if self.kd_enabled else None,
            "temperature": args.temperature,
            "supervision_preset": args.supervision_preset,
            "supervision": self.supervision.describe(),
            "truncation_policy": args.truncation_policy,
            "truncation_kwargs": dict(args.truncation_kwargs or {}),
            "truncation_report": self.truncation_accounting.report(),
            "tokens_forwarded": acc.tokens_forwarded,
            "tokens_kd": {SECTION_NAMES[s]: int(acc.kd_tokens[s]) for s in range(1, NUM_SECTIONS)},
            "tokens_ce": {SECTION_NAMES[s]: int(acc.ce_tokens[s]) for s in range(1, NUM_SECTIONS)},
            "flops_counted": acc.total_flops,
            "peak_memory_mb": acc.peak_memory / 2**20,
            "vocab_size": self.vocab_size,
        }


class TrainingDivergedError(ValueError):
    """The loss or gradient norm went NaN/inf, or the parameters to save hold NaN/inf."""


def _finite_tensor(param: Tensor) -> bool:
    """All values finite (the local shard under DeepSpeed ZeRO-3, whose ``param`` is empty)."""
    data = getattr(param, "ds_tensor", param)
    return data.numel() == 0 or bool(torch.isfinite(data.detach()).all())


def _sum_outputs(outs: list[Any]) -> Any:
    """Field-wise sum of several ``FusedKDOutput`` (``None`` fields stay ``None``)."""
    first = outs[0]
    return type(first)(
        *(None if getattr(first, f) is None else sum(getattr(o, f) for o in outs) for f in first._fields)
    )
