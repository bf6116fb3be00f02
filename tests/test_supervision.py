"""Supervision policies: presets, labels and per-token weights in numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_cot_distill.core.sections import Section
from hf_cot_distill.supervision.policy import (
    IGNORE_INDEX,
    SUPERVISION_PRESETS,
    SectionSupervision,
    SupervisionPolicy,
)

SECTIONS = np.array([1, 1, 2, 2, 2, 3, 3, 0], dtype=np.int8)  # P P C C C A A PAD
IDS = np.arange(10, 18)


def test_six_presets_of_the_paper() -> None:
    assert sorted(SUPERVISION_PRESETS) == sorted(
        ["prompt+cot+answer", "cot+answer", "answer", "prompt+answer", "cot", "prompt+cot"]
    )
    expected_kd = {
        "prompt+cot+answer": [0, 1, 1, 1],
        "cot+answer": [0, 0, 1, 1],
        "answer": [0, 0, 0, 1],
        "prompt+answer": [0, 1, 0, 1],
        "cot": [0, 0, 1, 0],
        "prompt+cot": [0, 1, 1, 0],
    }
    for name, mask in expected_kd.items():
        policy = SupervisionPolicy.from_preset(name)
        sections = np.arange(4)
        assert policy.kd_weights(sections).tolist() == [0.5 * m for m in mask]
        assert policy.ce_weights(sections).tolist() == [0.5 * m for m in mask]  # paper: 0.5 CE + 0.5 KD
        assert policy.supervised_sections == frozenset(i for i in range(4) if mask[i])


def test_labels_and_weights_numpy() -> None:
    policy = SupervisionPolicy.from_preset("cot", ce_sections="answer", ce_weight=1.0, kd_weight=2.0)
    labels = policy.labels(IDS, SECTIONS)
    assert labels.dtype == np.int64
    assert labels.tolist() == [IGNORE_INDEX] * 5 + [15, 16] + [IGNORE_INDEX]
    assert policy.kd_weights(SECTIONS).tolist() == [0, 0, 2, 2, 2, 0, 0, 0]
    assert policy.ce_weights(SECTIONS).dtype == np.float32
    assert policy.supervised_mask(SECTIONS).tolist() == [False, False, True, True, True, True, True, False]


def test_torch_matches_numpy_and_keeps_device() -> None:
    policy = SupervisionPolicy(
        prompt=SectionSupervision(kd_weight=0.1),
        cot=SectionSupervision(0.5, 0.5, kd_temperature=2.0),
        answer=SectionSupervision(1.0, 0.5),
    )
    sec_t, ids_t = torch.from_numpy(SECTIONS.astype(np.int64)), torch.from_numpy(IDS)
    for fn in ("ce_weights", "kd_weights", "kd_temperatures", "supervised_mask"):
        out = getattr(policy, fn)(sec_t)
        assert isinstance(out, torch.Tensor) and out.device == sec_t.device
        assert out.tolist() == getattr(policy, fn)(SECTIONS).tolist()
    assert policy.labels(ids_t, sec_t).dtype == torch.long
    assert policy.labels(ids_t, sec_t).tolist() == policy.labels(IDS, SECTIONS).tolist()
    assert policy.kd_temperatures(SECTIONS, default=1.0).tolist() == [1, 1, 2, 2, 2, 1, 1, 1]
    assert policy.has_section_temperatures


def test_pad_is_never_supervised_and_default_is_completion_sft() -> None:
    policy = SupervisionPolicy()
    assert policy.for_section(Section.PAD) == SectionSupervision()
    assert policy.ce_weights(np.arange(4)).tolist() == [0, 0, 1, 1]
    assert policy.kd_weights(np.arange(4)).tolist() == [0, 0, 0, 0]
    assert "cot: ce 1, kd 0, T default" in policy.describe()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ce_weight": -1.0}, "ce_weight"),
        ({"kd_weight": float("nan")}, "kd_weight"),
        ({"kd_temperature": 0.0}, "kd_temperature"),
    ],
)
def test_bad_values_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SectionSupervision(**kwargs)


def test_unknown_preset_is_refused_and_policy_is_frozen() -> None:
    with pytest.raises(ValueError, match="fix"):
        SupervisionPolicy.from_preset("thoughts")
    policy = SupervisionPolicy.from_preset("answer")
    with pytest.raises(AttributeError):
        policy.answer = SectionSupervision()  # type: ignore[misc]
    assert hash(policy) == hash(SupervisionPolicy.from_preset("answer"))


@pytest.mark.parametrize(
    "section_ids",
    [
        np.array([1, -1, 3]),  # -1 would wrap to the ANSWER weights
        torch.tensor([1, -1, 3]),
        np.array([1, 7]),
        torch.tensor([4]),
        np.array([1.0, 2.0]),  # would be cut to ints
        torch.tensor([2.0]),
    ],
)
def test_section_ids_outside_the_sections_are_refused(section_ids) -> None:
    policy = SupervisionPolicy.from_preset("cot+answer")
    for method in (policy.kd_weights, policy.ce_weights, policy.supervised_mask):
        with pytest.raises(ValueError, match=r"section_ids: .*; fix: integer ids 0..3 \(0 = pad"):
            method(section_ids)
    with pytest.raises(ValueError, match=r"section_ids: "):
        policy.labels(section_ids * 0 + 5, section_ids)
