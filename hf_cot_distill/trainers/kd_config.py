"""``SectionKDConfig``: the arguments of :class:`~hf_cot_distill.trainers.SectionKDTrainer`.

A ``transformers.TrainingArguments`` subclass (like TRL's ``GKDConfig``) adding the teacher,
the divergence, the per-section supervision policy, the truncation policy, the fused-loss
chunk size and the KD mode. Every field is validated in ``__post_init__``; errors name the
field, the value and the fix.

The objective (per accumulation window, normalised over all micro-batches and ranks)::

    loss = sum_i ce_w_i CE_i / n_ce  +  sum_i kd_w_i D_i / n_kd

with ``ce_w`` / ``kd_w`` the per-section weights of the supervision policy, ``n_ce`` / ``n_kd``
the numbers of positions with a CE / KD weight > 0, ``CE`` at temperature 1 and ``D`` the
chosen divergence at ``temperature`` (the true divergence, see
:mod:`hf_cot_distill.losses.divergences`). The default (``ce_weight = kd_weight = 0.5``,
``forward_kl``, ``T = 1``) is the paper's ``0.5·CE + 0.5·forward KL``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from hf_cot_distill.core.sections import CONTENT_SECTION_NAMES, Section
from hf_cot_distill.core.validation import check_bool, check_choice, check_float, check_int, check_known_keys
from hf_cot_distill.losses import DIVERGENCES
from hf_cot_distill.supervision.policy import SUPERVISION_PRESETS, SupervisionPolicy
from hf_cot_distill.supervision.truncation import (
    TRUNCATION_POLICIES,
    SectionPreserving,
    TruncationPolicy,
    cot_marker_token_counts,
)

KD_MODES: tuple[str, ...] = ("supervised", "on_policy", "sequence_level")
TEACHER_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
GENERATED_SECTIONS: dict[str, Section] = {"cot": Section.COT, "answer": Section.ANSWER}
ON_EMPTY_WINDOW: tuple[str, ...] = ("error", "skip")


@dataclass
class SectionKDConfig(TrainingArguments):
    """Configuration of :class:`~hf_cot_distill.trainers.SectionKDTrainer`.

    Only the KD-specific fields are listed here; see ``transformers.TrainingArguments`` for
    the rest. ``remove_unused_columns`` defaults to ``False`` (the collator needs
    ``section_ids``, which the model's forward does not take).
    """

    _VALID_DICT_FIELDS = [
        *TrainingArguments._VALID_DICT_FIELDS,
        "truncation_kwargs",
        "teacher_model_init_kwargs",
        "section_kd_temperatures",
    ]

    # ---- teacher ----------------------------------------------------------------------
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Path (or Hub id) of the teacher, loaded with AutoModelForCausalLM when the trainer gets no "
            "teacher_model object. None and no teacher_model: KD is off (plain section-weighted CE)."
        },
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "A teacher cache folder (`hf-cot-distill cache-teacher`): KD from its stored targets and no "
            "teacher is loaded. Forward KL at the cache's temperature, kd_mode 'supervised', one temperature."
        },
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={
            "help": f"dtype of a teacher loaded from teacher_model_name_or_path; one of {TEACHER_DTYPES}."
        },
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Extra keyword arguments of AutoModelForCausalLM.from_pretrained for the teacher."},
    )
    # ---- divergence -------------------------------------------------------------------
    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": f"Token-level divergence between teacher and student; one of {sorted(DIVERGENCES)}."
        },
    )
    beta: float = field(
        default=0.5,
        metadata={
            "help": "JSD interpolation beta in [0, 1] (TRL GKD convention: 0 = forward KL, 1 = reverse KL)."
        },
    )
    alpha: float = field(
        default=0.1,
        metadata={"help": "Skew alpha in [0, 1) of skew_kl / skew_reverse_kl (DistiLLM); 0 = plain KL."},
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "KD temperature T > 0 dividing both logits before the softmax (CE is always at T=1)."
        },
    )
    section_kd_temperatures: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Per-section KD temperatures overriding `temperature`, e.g. {'cot': 2.0} (keys: prompt, cot, "
            "answer). Positions are grouped by temperature and each group runs the fused loss once."
        },
    )
    scale_by_temperature_squared: bool = field(
        default=False,
        metadata={"help": "Multiply the divergence (value and gradient) by T^2 (Hinton et al., 2015)."},
    )
    # ---- supervision ------------------------------------------------------------------
    supervision_preset: str = field(
        default="cot+answer",
        metadata={
            "help": f"Sections that get KD (and CE unless ce_sections is set); one of {sorted(SUPERVISION_PRESETS)}. "
            "The paper recommends 'cot'."
        },
    )
    ce_sections: str | None = field(
        default=None,
        metadata={
            "help": "Sections that get CE if different from supervision_preset (a preset name), or None."
        },
    )
    ce_weight: float = field(
        default=0.5,
        metadata={"help": "CE weight on the CE sections (>= 0). Paper default: 0.5·CE + 0.5·KD."},
    )
    kd_weight: float = field(
        default=0.5,
        metadata={"help": "KD weight on the KD sections (>= 0). Ignored (KD off) when there is no teacher."},
    )
    # ---- truncation and batching ------------------------------------------------------
    truncation_policy: str | None = field(
        default=None,
        metadata={
            "help": f"Truncation policy applied by the collator; None or one of {sorted(TRUNCATION_POLICIES)}."
        },
    )
    truncation_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Arguments of the truncation policy, e.g. {'lead_span_proportion': 0.5} or {'max_tokens': 4096}. "
            "section_preserving's cot_open_tokens / cot_close_tokens (CoT marker lengths in tokens) are measured "
            "on the training tokenizer when not set here."
        },
    )
    on_supervision_lost: str = field(
        default="keep",
        metadata={
            "help": "'keep' or 'drop' samples whose supervised tokens were all cut by truncation (counted)."
        },
    )
    on_empty_window: str = field(
        default="error",
        metadata={
            "help": "A training accumulation window with no position to supervise (every KD/CE weight 0, e.g. an "
            "answer-only policy whose answers a lead span cut): 'error' stops the run; 'skip' trains it at zero "
            "loss (a zero that flows through the student, so distributed ranks stay in step; no update beyond "
            "weight decay and the optimizer's momentum), counted as windows_skipped_empty in the logs and "
            "checkpoints. A run whose every window was empty is an error either way. Eval batches: always an error."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Pack each batch into one row with restarting position_ids (no attention_mask)."},
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad the batch length (or packed total) up to a multiple of this."}
    )
    chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Positions per chunk of the fused KD/CE (memory ~ chunk_size x vocab x 4 bytes x a few "
            "buffers); None = automatic (~256 MB of buffers)."
        },
    )
    # ---- KD mode and generation -------------------------------------------------------
    kd_mode: str = field(
        default="supervised",
        metadata={
            "help": "'supervised': teacher scores the dataset sequence; 'on_policy': the student samples a "
            "completion of each prompt, the teacher scores it, KD on the sampled tokens; 'sequence_level': the "
            "teacher generates the completion, the student trains on it."
        },
    )
    max_new_tokens: int = field(
        default=128, metadata={"help": "Maximum generated completion length (on_policy / sequence_level)."}
    )
    generation_temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of on_policy / sequence_level generation (> 0)."}
    )
    generation_do_sample: bool = field(
        default=True,
        metadata={"help": "Sample (True) or decode greedily (False) when generating completions."},
    )
    generated_section: str = field(
        default="cot",
        metadata={
            "help": "Section the generated completion tokens count as for the supervision policy: 'cot' or "
            "'answer' (generated text carries no section markers we would trust)."
        },
    )
    # ---- misc -------------------------------------------------------------------------
    disable_dropout: bool = field(
        default=True, metadata={"help": "Set dropout to 0 in the student and teacher."}
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "Transformers' default True logs a NaN/inf loss as the running mean of the finite ones, "
            "hiding a diverged run; here False: the logged loss is the real one."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Must stay False: the SectionCollator needs section_ids, which the model does not take."
        },
    )

    def __post_init__(self) -> None:
        for name in ("truncation_kwargs", "teacher_model_init_kwargs", "section_kd_temperatures"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{name}={value!r}: must be a JSON object ({err}); fix: e.g. '{{\"max_tokens\": 4096}}'."
                    ) from err
        if isinstance(self.resume_from_checkpoint, str) and self.resume_from_checkpoint.lower() in (
            "true",
            "false",
        ):
            # `--resume_from_checkpoint true`: the latest checkpoint in output_dir; `false`: none
            self.resume_from_checkpoint = True if self.resume_from_checkpoint.lower() == "true" else None
        super().__post_init__()
        apply_section_temperatures(SupervisionPolicy(), self.section_kd_temperatures)  # validate early
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, what: str, fix: str) -> ValueError:
            return ValueError(f"{name}={getattr(self, name)!r}: must be {what}; fix: {fix}.")

        for name in (
            "scale_by_temperature_squared",
            "padding_free",
            "generation_do_sample",
            "disable_dropout",
            "remove_unused_columns",
        ):
            fix = "pass True or False (a string such as 'no' would count as True)"
            setattr(self, name, check_bool(name, getattr(self, name), fix=fix))
        if self.max_steps == -1:  # train num_train_epochs epochs
            fix = "use a number > 0 (or max_steps > 0): it would train 0 steps"
            check_float("num_train_epochs", self.num_train_epochs, minimum=0, min_open=True, fix=fix)
        else:
            fix = "use an int > 0, or -1 to train num_train_epochs epochs"
            self.max_steps = check_int("max_steps", self.max_steps, minimum=1, fix=fix)
        check_choice("divergence", self.divergence, sorted(DIVERGENCES))
        check_float(
            "beta",
            self.beta,
            minimum=0,
            maximum=1,
            fix="use a number in [0, 1] (0 = forward KL, 1 = reverse KL)",
        )
        check_float(
            "alpha",
            self.alpha,
            minimum=0,
            maximum=1,
            max_open=True,
            fix="use a number in [0, 1) (0 = plain KL)",
        )
        check_float(
            "temperature",
            self.temperature,
            minimum=0,
            min_open=True,
            fix="use a number > 0 (1.0 = the paper's setting)",
        )
        check_choice("teacher_dtype", self.teacher_dtype, TEACHER_DTYPES)
        if self.teacher_model_init_kwargs is not None and not isinstance(
            self.teacher_model_init_kwargs, dict
        ):
            raise bad("teacher_model_init_kwargs", "a dict", "a dict, a JSON object string or None")
        check_choice("supervision_preset", self.supervision_preset, sorted(SUPERVISION_PRESETS))
        if self.ce_sections is not None:  # None: CE on the supervision_preset sections
            check_choice("ce_sections", self.ce_sections, sorted(SUPERVISION_PRESETS))
        for name in ("ce_weight", "kd_weight"):
            check_float(
                name, getattr(self, name), minimum=0, fix="use a finite number >= 0 (paper default 0.5)"
            )
        if self.ce_weight == 0 and self.kd_weight == 0:
            raise ValueError(
                "ce_weight/kd_weight: both 0, the policy supervises no token; fix: set ce_weight and/or kd_weight > 0."
            )
        if self.truncation_policy is not None:  # None: no truncation
            check_choice("truncation_policy", self.truncation_policy, sorted(TRUNCATION_POLICIES))
        if self.truncation_kwargs is not None and not isinstance(self.truncation_kwargs, dict):
            raise bad("truncation_kwargs", "a dict", "a dict, a JSON object string or None")
        if self.truncation_policy is None and self.truncation_kwargs:
            raise bad("truncation_kwargs", "empty without a truncation_policy", "set truncation_policy too")
        self.build_truncation()  # raises the policy's own ValueError on bad parameters
        check_choice("on_supervision_lost", self.on_supervision_lost, ("keep", "drop"))
        check_choice("on_empty_window", self.on_empty_window, ON_EMPTY_WINDOW)
        if self.pad_to_multiple_of is not None:  # None: no rounding
            fix = "pass an int >= 1, or None"
            self.pad_to_multiple_of = check_int(
                "pad_to_multiple_of", self.pad_to_multiple_of, minimum=1, fix=fix
            )
        if self.chunk_size is not None:  # None: automatic
            fix = "pass an int >= 1, or None (automatic)"
            self.chunk_size = check_int("chunk_size", self.chunk_size, minimum=1, fix=fix)
        check_choice("kd_mode", self.kd_mode, KD_MODES)
        if self.teacher_cache is not None:
            self._check_teacher_cache_settings()
        if self.kd_mode != "supervised" and self.padding_free:
            raise bad(
                "padding_free",
                f"False with kd_mode={self.kd_mode!r}",
                "set it False: generation needs padded batches",
            )
        self.max_new_tokens = check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        check_float("generation_temperature", self.generation_temperature, minimum=0, min_open=True)
        check_choice("generated_section", self.generated_section, sorted(GENERATED_SECTIONS))
        if self.remove_unused_columns:
            raise bad(
                "remove_unused_columns",
                "False",
                "set it False: the collator needs section_ids and the model drops them",
            )

    def _check_teacher_cache_settings(self) -> None:
        """What a teacher cache cannot serve, refused up front (the cache itself is read by the trainer)."""
        if self.divergence != "forward_kl":
            raise ValueError(
                f"divergence={self.divergence!r} with teacher_cache: only forward_kl can be estimated from cached "
                "targets (the others need the teacher's whole distribution); fix: divergence: forward_kl, or drop "
                "teacher_cache and train with the online teacher."
            )
        if self.kd_mode != "supervised":
            raise ValueError(
                f"kd_mode={self.kd_mode!r} with teacher_cache: generated sequences need a live teacher; fix: kd_mode: "
                "supervised, or drop teacher_cache."
            )
        if self.section_kd_temperatures:
            raise ValueError(
                f"section_kd_temperatures={self.section_kd_temperatures!r} with teacher_cache: a cache holds one "
                "temperature; fix: drop section_kd_temperatures, or train with the online teacher."
            )

    # ---- builders ---------------------------------------------------------------------
    def build_supervision(self, kd_enabled: bool = True) -> SupervisionPolicy:
        """The :class:`SupervisionPolicy` of ``supervision_preset`` / ``ce_sections`` / weights /
        ``section_kd_temperatures`` — the one builder, for the trainer and the checks before it.

        ``kd_enabled=False`` (no teacher): KD weights are 0. A policy that supervises no token
        anywhere is a ``ValueError``.
        """
        policy = apply_section_temperatures(
            SupervisionPolicy.from_preset(
                self.supervision_preset,
                ce_weight=self.ce_weight,
                kd_weight=self.kd_weight if kd_enabled else 0.0,
                ce_sections=self.ce_sections,
            ),
            self.section_kd_temperatures,
        )
        if not policy.supervised_sections:
            raise ValueError(
                f"ce_weight={self.ce_weight!r}: must be > 0 with no teacher (KD off), else the policy selects no "
                "token anywhere; fix: set ce_weight > 0 for plain CE training, or pass a teacher for KD."
            )
        return policy

    def build_truncation(self, tokenizer: Any = None, markers: Any = None) -> TruncationPolicy | None:
        """The truncation policy object, or ``None``.

        ``section_preserving`` keeps each CoT run's opening and closing markers, whose length in
        tokens depends on the tokenizer (one token for Qwen3's ``<think>`` and the CoT-ICL Lab
        special tokens, three for Qwen2.5's ``</think>``). Given the training ``tokenizer``, the
        lengths that ``truncation_kwargs`` does not set (``cot_open_tokens`` /
        ``cot_close_tokens``) are measured on it for the markers text traces are rendered with
        (``markers``, a ``TraceMarkers``; default: ``ReasoningTraceEncoder``'s default
        ``render_markers``, ``<think>``); without one they stay 1, right for rows of token ids
        whose markers are single tokens.
        """
        if self.truncation_policy is None:
            return None
        cls = TRUNCATION_POLICIES[self.truncation_policy]
        kwargs = dict(self.truncation_kwargs or {})
        if cls is SectionPreserving and tokenizer is not None:
            missing = [k for k in ("cot_open_tokens", "cot_close_tokens") if k not in kwargs]
            if missing:
                from hf_cot_distill.data.traces.formats import MARKER_PRESETS

                try:
                    counts = cot_marker_token_counts(tokenizer, markers or MARKER_PRESETS["think"])
                except ValueError as err:
                    raise ValueError(
                        f"truncation_kwargs: {missing} cannot be measured on the tokenizer ({err}); fix: set "
                        "them in truncation_kwargs, e.g. {'max_tokens': 4096, 'cot_open_tokens': 1, "
                        "'cot_close_tokens': 1}."
                    ) from err
                measured = dict(zip(("cot_open_tokens", "cot_close_tokens"), counts))
                if kwargs.get("keep_cot_close") is False:
                    measured["cot_close_tokens"] = 1
                kwargs.update({k: measured[k] for k in missing})
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ValueError(
                f"truncation_kwargs: {self.truncation_kwargs!r} do not fit {cls.__name__} ({err}); fix: see its "
                "docstring, e.g. {'lead_span_proportion': 0.5} for lead_span_proportion."
            ) from err

    def describe_objective(self) -> str:
        """One line saying exactly what the trainer optimises (used in logs and model cards)."""
        pol = self.build_supervision()
        t2 = " x T^2" if self.scale_by_temperature_squared else ""
        return (
            f"sum(ce_w*CE)/n_ce + sum(kd_w*{self.divergence}(T={self.temperature:g}){t2})/n_kd; "
            + "; ".join(pol.describe().splitlines())
        )


def apply_section_temperatures(
    policy: SupervisionPolicy, temperatures: dict[str, float] | None
) -> SupervisionPolicy:
    """``policy`` with per-section KD temperatures set (``None``: unchanged)."""
    if not temperatures:
        return policy
    check_known_keys("section_kd_temperatures", temperatures, CONTENT_SECTION_NAMES)
    changes = {}
    for name, t in temperatures.items():
        t = check_float(f"section_kd_temperatures[{name!r}]", t, minimum=0, min_open=True, fix="e.g. 2.0")
        changes[name] = dataclasses.replace(getattr(policy, name), kd_temperature=t)
    return dataclasses.replace(policy, **changes)
