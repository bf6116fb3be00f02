"""CoT-Recipe schedules at known points, the realised CoT mix, and drop-k transformations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_cot_distill.data import CoTICLConfig, CoTSchedule, eval_view, generate_batch, select_drop_examples


def test_power_law_known_points():
    s = CoTSchedule(kind="power_law", alpha=1.0)
    assert s(0, 100) == 0.0 and s(50, 100) == 0.5 and s(99, 100) == pytest.approx(0.99)
    assert CoTSchedule(alpha=2.0)(50, 100) == pytest.approx(0.25)
    assert CoTSchedule(alpha=0.5)(25, 100) == pytest.approx(0.5)
    assert np.all(CoTSchedule(alpha=0.0)(np.arange(100), 100) == 1.0)  # 0**0 == 1
    inf = CoTSchedule(alpha=math.inf, p_initial=0.1)
    assert np.all(inf(np.arange(100), 100) == 0.1)  # p stays at p_initial for every i < n
    capped = CoTSchedule(alpha=1.0, p_initial=0.2, p_final=0.6, scale=1.0)
    assert capped(10, 100) == pytest.approx(0.3) and capped(90, 100) == pytest.approx(0.6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0, math.inf])
def test_mean_cot_fraction_is_one_over_alpha_plus_one(alpha):
    assert CoTSchedule(alpha=alpha).mean_cot_fraction(20000) == pytest.approx(1 / (alpha + 1), abs=1e-3)


def test_other_schedules():
    assert CoTSchedule(kind="constant", p_initial=0.3)(7, 10) == pytest.approx(0.3)
    lin = CoTSchedule(kind="linear", p_initial=0.2, p_final=1.0)
    assert lin(5, 10) == pytest.approx(0.6)
    step = CoTSchedule(kind="step", p_initial=0.1, p_final=0.9, step_at=0.5)
    assert step(4, 10) == pytest.approx(0.1) and step(5, 10) == pytest.approx(0.9)
    cos = CoTSchedule(kind="cosine", p_initial=0.0, p_final=1.0)
    assert cos(0, 10) == pytest.approx(0.0) and cos(5, 10) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(kind="exp"), "kind"),
        (dict(p_initial=-0.1), "p_initial"),
        (dict(p_final=2.0), "p_final"),
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(scale=math.inf), "scale"),
    ],
)
def test_bad_schedules(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CoTSchedule(**kwargs)


def test_hybrid_dataset_follows_the_schedule():
    config = CoTICLConfig(
        prompt_strategy="hybrid_special_token",
        n_examples_choices=(40,),
        num_tasks=400,
        cot_schedule=CoTSchedule(alpha=2.0),
    )
    rows = generate_batch(config, range(400)).rows()
    probs = np.array([r["cot_example_prob"] for r in rows])
    np.testing.assert_allclose(probs, (np.arange(400) / 400) ** 2, rtol=1e-6, atol=1e-7)
    frac = np.mean([r["num_cot_examples"] / 40 for r in rows])
    assert frac == pytest.approx(1 / 3, abs=0.02)
    first, last = rows[:100], rows[-100:]
    assert np.mean([r["num_cot_examples"] for r in first]) < np.mean([r["num_cot_examples"] for r in last])
    for r in rows:  # the think blocks in the sequence are exactly the flagged examples
        assert r["input_ids"].count(config.special_tokens.think_start) == sum(r["example_has_cot"])


def test_eval_split_uses_cot_example_prob_not_the_schedule():
    config = CoTICLConfig(
        prompt_strategy="hybrid_special_token", cot_example_prob=1.0, cot_schedule=CoTSchedule(alpha=math.inf)
    )
    rows = generate_batch(config, range(5), split="eval").rows()
    assert all(all(r["example_has_cot"]) for r in rows)


@pytest.mark.parametrize("mode", ["first_k", "last_k", "random_k"])
@pytest.mark.parametrize("k", [0, 1, 10, 39])
def test_drop_k_removes_exactly_k_think_blocks(mode, k):
    config = CoTICLConfig(prompt_strategy="cot_special_token")
    row = generate_batch(config, [3]).rows()[0]
    think = config.special_tokens.think_start
    ctx, target = eval_view(config, row, drop_k=k, drop_mode=mode)
    assert ctx.count(think) == 39 - k
    assert target == row["eval_target_ids"]
    # the inputs and answers of every context example are still there
    assert ctx.count(config.special_tokens.answer_start) == 39


def test_drop_modes_choose_the_right_examples():
    flags = np.array([True, False, True, True, True])
    assert select_drop_examples(flags, 2, "first_k").tolist() == [0, 2]
    assert select_drop_examples(flags, 2, "last_k").tolist() == [3, 4]
    r1 = select_drop_examples(flags, 3, "random_k", seed=1, task_index=5)
    assert r1.tolist() == select_drop_examples(flags, 3, "random_k", seed=1, task_index=5).tolist()
    assert set(r1.tolist()) <= {0, 2, 3, 4} and len(r1) == 3
    with pytest.raises(ValueError, match="drop_k=5"):
        select_drop_examples(flags, 5, "first_k")
    with pytest.raises(ValueError, match="drop_mode"):
        select_drop_examples(flags, 1, "middle_k")


def test_drop_k_on_plain_cot_and_refusal_on_standard():
    cot = CoTICLConfig(prompt_strategy="cot", n_examples_choices=(5,))
    row = generate_batch(cot, [0]).rows()[0]
    ctx, _ = eval_view(cot, row, drop_k=2)
    assert len(ctx) == len(row["eval_input_ids"]) - 2  # one CoT token (C=2) per dropped example
    std = CoTICLConfig(prompt_strategy="standard", n_examples_choices=(5,))
    with pytest.raises(ValueError, match="no think blocks"):
        eval_view(std, generate_batch(std, [0]).rows()[0], drop_k=1)
