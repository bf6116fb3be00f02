"""SectionKDConfig: defaults, builders, documented fields and clear errors on bad values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from transformers import TrainingArguments

from hf_cot_distill.core.sections import Section
from hf_cot_distill.supervision.truncation import LeadSpanProportion, SectionPreserving
from hf_cot_distill.trainers import SectionKDConfig


def config(**kwargs: Any) -> SectionKDConfig:
    return SectionKDConfig(output_dir="/tmp/kd_config_test", report_to="none", **kwargs)


def test_defaults_are_the_paper_objective() -> None:
    c = config()
    assert c.logging_nan_inf_filter is False  # a NaN loss is logged as NaN, not hidden
    assert (c.divergence, c.temperature, c.ce_weight, c.kd_weight, c.kd_mode) == (
        "forward_kl",
        1.0,
        0.5,
        0.5,
        "supervised",
    )
    assert c.remove_unused_columns is False
    policy = c.build_supervision()
    assert (
        policy.for_section(Section.COT).kd_weight == 0.5 and policy.for_section(Section.PROMPT).kd_weight == 0
    )
    assert c.build_truncation() is None
    assert "forward_kl(T=1)" in c.describe_objective()


def test_every_own_field_is_documented() -> None:
    own = {f.name for f in dataclasses.fields(SectionKDConfig)} - {
        f.name for f in dataclasses.fields(TrainingArguments)
    }
    assert len(own) >= 20
    for f in dataclasses.fields(SectionKDConfig):
        if f.name in own:
            assert f.metadata.get("help"), f.name


def test_truncation_from_name_and_json_kwargs() -> None:
    c = config(truncation_policy="lead_span_proportion", truncation_kwargs='{"lead_span_proportion": 0.5}')
    assert c.build_truncation() == LeadSpanProportion(0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"divergence": "kl"}, r"divergence='kl': must be one of"),
        ({"beta": 1.5}, r"beta=1.5: must be a finite number >= 0 and <= 1"),
        ({"alpha": 1.0}, r"alpha=1.0: must be a finite number >= 0 and < 1"),
        ({"temperature": 0.0}, r"temperature=0.0: must be a finite number > 0"),
        ({"temperature": float("nan")}, r"temperature=nan: "),
        ({"teacher_dtype": "fp8"}, r"teacher_dtype='fp8': must be one of"),
        ({"supervision_preset": "thoughts"}, r"supervision_preset='thoughts': must be one of"),
        ({"ce_sections": "all"}, r"ce_sections='all': must be one of"),
        ({"ce_weight": -1.0}, r"ce_weight=-1.0: must be a finite number >= 0"),
        ({"ce_weight": 0.0, "kd_weight": 0.0}, r"both 0, the policy supervises no token"),
        ({"truncation_policy": "half"}, r"truncation_policy='half': must be one of"),
        ({"truncation_kwargs": {"max_tokens": 4}}, r"set truncation_policy too"),
        (
            {"truncation_policy": "keep_first", "truncation_kwargs": {"lead_span_proportion": 0.5}},
            r"do not fit KeepFirst",
        ),
        (
            {"truncation_policy": "lead_span_proportion", "truncation_kwargs": {"lead_span_proportion": 2}},
            r"lead_span_proportion=2: ",
        ),
        ({"truncation_kwargs": "{not json"}, r"truncation_kwargs='\{not json': must be a JSON object"),
        ({"on_supervision_lost": "ignore"}, r"on_supervision_lost='ignore': must be one of 'keep', 'drop'"),
        ({"pad_to_multiple_of": 0}, r"pad_to_multiple_of=0: must be an int >= 1"),
        ({"chunk_size": 0}, r"chunk_size=0: must be an int >= 1"),
        ({"kd_mode": "offline"}, r"kd_mode='offline': must be one of"),
        (
            {"kd_mode": "on_policy", "padding_free": True},
            r"padding_free=True: must be False with kd_mode='on_policy'; fix: .*generation",
        ),
        ({"max_new_tokens": 0}, r"max_new_tokens=0: must be an int >= 1"),
        ({"generation_temperature": -1.0}, r"generation_temperature=-1.0: must be a finite number > 0"),
        ({"generated_section": "prompt"}, r"generated_section='prompt': must be one of"),
        ({"remove_unused_columns": True}, r"remove_unused_columns=True: must be False"),
        ({"padding_free": "no"}, r"padding_free='no': must be true or false; fix: pass True or False"),
        (
            {"scale_by_temperature_squared": 1},
            r"scale_by_temperature_squared=1: must be true or false; fix: pass True or False",
        ),
        (
            {"num_train_epochs": 0},
            r"num_train_epochs=0: must be a finite number > 0; .* it would train 0 steps",
        ),
        ({"max_steps": -5}, r"max_steps=-5: must be an int >= 1; fix: use an int > 0, or -1"),
        ({"max_steps": 0}, r"max_steps=0: must be an int >= 1"),
    ],
)
def test_bad_values_name_field_value_and_fix(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config(**kwargs)


def test_section_preserving_marker_lengths_come_from_the_tokenizer(qwen25_tokenizer, qwen3_tokenizer) -> None:
    c = config(truncation_policy="section_preserving", truncation_kwargs={"max_tokens": 512})
    assert c.build_truncation() == SectionPreserving(512)  # token-id rows: single-token markers
    assert c.build_truncation(qwen25_tokenizer) == SectionPreserving(
        512, cot_open_tokens=3, cot_close_tokens=3
    )
    assert c.build_truncation(qwen3_tokenizer) == SectionPreserving(512)  # <think> is one Qwen3 token
    given = {"max_tokens": 512, "cot_open_tokens": 2}
    c = config(truncation_policy="section_preserving", truncation_kwargs=given)
    assert c.build_truncation(qwen25_tokenizer) == SectionPreserving(
        512, cot_open_tokens=2, cot_close_tokens=3
    )
    c = config(
        truncation_policy="section_preserving", truncation_kwargs={"max_tokens": 9, "keep_cot_close": False}
    )
    assert c.build_truncation(qwen25_tokenizer) == SectionPreserving(9, False, cot_open_tokens=3)
    with pytest.raises(ValueError, match=r"cot_close_tokens: 3 with keep_cot_close=False"):
        config(
            truncation_policy="section_preserving",
            truncation_kwargs={"max_tokens": 9, "keep_cot_close": False, "cot_close_tokens": 3},
        )


def test_resume_from_checkpoint_words_become_bools() -> None:
    """`--resume_from_checkpoint true` = the latest checkpoint; any spelling of false = no resume
    (the CLI's non-empty output_dir check and the Trainer read the same value)."""
    assert config(resume_from_checkpoint="True").resume_from_checkpoint is True
    assert config(resume_from_checkpoint="FALSE").resume_from_checkpoint is None
    assert config(resume_from_checkpoint="out/checkpoint-2").resume_from_checkpoint == "out/checkpoint-2"
