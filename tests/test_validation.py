"""The one validator (``hf_cot_distill.core.validation``): the same rules and one message style everywhere."""

from __future__ import annotations

import fractions
import math
import re

import numpy as np
import pytest
import torch

from hf_cot_distill.core.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_known_keys,
    check_probability,
    is_int,
)

# "{field}={value!r}: must be <what>; fix: <fix>."
MESSAGE = re.compile(r"^(?P<field>[^=]+)=(?P<value>.+): must be (?P<what>.+); fix: (?P<fix>.+)\.$")


def refusal(call, *args, **kwargs) -> re.Match:
    """Run ``call``, which must refuse with a ``ValueError`` in the house style; return the parsed message."""
    with pytest.raises(ValueError) as err:
        call(*args, **kwargs)
    assert err.type is ValueError  # never TypeError, never a subclass
    match = MESSAGE.match(str(err.value))
    assert match, str(err.value)
    return match


# --- ints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, 7, -3, 2**70, np.int8(7), np.int64(7), np.uint16(7), np.uint64(2**63), torch.tensor(7).item()],
)
def test_ints_and_numpy_ints_are_ints(value):
    assert is_int(value)
    got = check_int("n", value)
    assert got == value and type(got) is int


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        np.bool_(True),
        1.0,
        1.5,
        np.float64(2.0),
        float("nan"),
        "1",
        None,
        [1],
        fractions.Fraction(1),
    ],
)
def test_bools_floats_and_the_rest_are_not_ints(value):
    assert not is_int(value)
    match = refusal(check_int, "Config.n", value)
    assert match["field"] == "Config.n" and match["value"] == repr(value) and match["what"] == "an int"


def test_a_tensor_is_not_an_int():
    assert not is_int(torch.tensor(3))
    refusal(check_int, "n", torch.tensor(3))


def test_int_bounds_are_inclusive():
    assert check_int("n", 1, minimum=1) == 1
    assert check_int("n", 5, maximum=5) == 5
    assert check_int("n", 3, minimum=3, maximum=3) == 3
    assert refusal(check_int, "n", 0, minimum=1)["what"] == "an int >= 1"
    assert refusal(check_int, "n", 6, maximum=5)["what"] == "an int <= 5"
    assert refusal(check_int, "n", -1, minimum=0, maximum=4)["what"] == "an int >= 0 and <= 4"
    assert refusal(check_int, "n", np.int64(9), minimum=0, maximum=4)["value"] == repr(np.int64(9))


def test_int_message_format_and_fix():
    with pytest.raises(ValueError) as err:
        check_int("CoTICLConfig.n_inputs", 1.5, minimum=1, fix="pass a whole number, e.g. n_inputs=4")
    assert str(err.value) == (
        "CoTICLConfig.n_inputs=1.5: must be an int >= 1; fix: pass a whole number, e.g. n_inputs=4."
    )
    with pytest.raises(ValueError) as err:
        check_int("seed", -1, minimum=0)
    assert str(err.value) == "seed=-1: must be an int >= 0; fix: pass an int >= 0."


# --- floats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 3, 0.25, -2.5, np.float32(0.5), np.float64(0.5), np.int64(2), 10**30])
def test_real_numbers_are_floats(value):
    got = check_float("x", value)
    assert type(got) is float and got == float(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(False), "0.5", None, 1j, torch.tensor([0.5]), [0.5]])
def test_bools_and_non_numbers_are_not_floats(value):
    match = refusal(check_float, "x", value)
    assert match["value"] == repr(value) and match["what"] == "a finite number"


@pytest.mark.parametrize(
    "value", [math.nan, np.float32("nan"), math.inf, -math.inf, np.float64("inf"), 10**400]
)
def test_nan_and_inf_are_refused_by_default(value):
    refusal(check_float, "x", value)


def test_finite_false_lets_inf_through_but_never_nan():
    assert check_float("alpha", math.inf, minimum=0, finite=False) == math.inf
    assert check_float("alpha", 10**400, finite=False) == math.inf
    assert check_float("alpha", -(10**400), finite=False) == -math.inf
    assert refusal(check_float, "alpha", math.nan, finite=False)["what"] == "a number"
    # nan compares false with every bound: it must not slip through a bounded check either
    refusal(check_float, "alpha", math.nan, minimum=0, maximum=1, finite=False)
    refusal(check_float, "alpha", -math.inf, minimum=0, finite=False)


def test_float_bounds_closed_and_open():
    assert check_float("p", 0.0, minimum=0.0, maximum=1.0) == 0.0
    assert check_float("p", 1.0, minimum=0.0, maximum=1.0) == 1.0
    assert refusal(check_float, "t", 0.0, minimum=0.0, min_open=True)["what"] == "a finite number > 0.0"
    assert check_float("t", 1e-12, minimum=0.0, min_open=True) == 1e-12
    assert refusal(check_float, "a", 1.0, minimum=0, maximum=1, max_open=True)["what"] == (
        "a finite number >= 0 and < 1"
    )
    assert check_float("a", 0.999, minimum=0, maximum=1, max_open=True) == 0.999
    assert refusal(check_float, "r", 0.0, minimum=0, maximum=1, min_open=True)["what"] == (
        "a finite number > 0 and <= 1"
    )
    assert refusal(check_float, "r", -0.1, minimum=0)["what"] == "a finite number >= 0"
    assert refusal(check_float, "r", 1.5, maximum=1)["what"] == "a finite number <= 1"


def test_probability():
    for value in (0, 0.0, 0.5, 1, np.float32(1.0)):
        assert check_probability("p", value) == float(value)
    for value in (-0.01, 1.01, math.nan, math.inf, True, "0.5"):
        assert refusal(check_probability, "p", value, fix="e.g. 0.5")["fix"] == "e.g. 0.5"


# --- bools --------------------------------------------------------------------------------------


def test_bools():
    assert check_bool("flag", True) is True
    assert check_bool("flag", False) is False
    got = check_bool("flag", np.bool_(True))
    assert got is True and type(got) is bool
    for value in (0, 1, 1.0, "true", "no", None, np.int64(1)):
        match = refusal(check_bool, "flag", value)
        assert match["what"] == "true or false" and match["value"] == repr(value)


# --- choices ------------------------------------------------------------------------------------


def test_choice_returns_the_value():
    assert check_choice("mode", "keep", ("keep", "drop")) == "keep"
    assert check_choice("bits", 8, (4, 8)) == 8
    assert check_choice("split", "eval", {"train": 0, "eval": 1}) == "eval"  # a mapping: its keys
    assert check_choice("kind", None, (None, "a")) is None


def test_choice_message_lists_the_choices_and_the_closest():
    with pytest.raises(ValueError) as err:
        check_choice("divergence", "forwad_kl", ("forward_kl", "reverse_kl", "jsd"))
    assert str(err.value) == (
        "divergence='forwad_kl': must be one of 'forward_kl', 'reverse_kl', 'jsd' (did you mean 'forward_kl'?); "
        "fix: use one of them."
    )
    with pytest.raises(ValueError) as err:
        check_choice("bits", 3, (4, 8), fix="use 4 or 8")
    assert str(err.value) == "bits=3: must be one of 4, 8; fix: use 4 or 8."
    assert "did you mean" not in str(err.value)


def test_choice_is_case_sensitive_and_refuses_odd_values():
    with pytest.raises(ValueError, match=r"did you mean 'keep'"):
        check_choice("mode", "KEEP", ("keep", "drop"))
    for value in ([1], {"a": 1}, np.array([1, 2]), torch.tensor([1, 2])):
        with pytest.raises(ValueError, match="must be one of"):
            check_choice("mode", value, ("keep", "drop"))


# --- config keys --------------------------------------------------------------------------------


def test_known_keys():
    check_known_keys("cfg", ["alpha", "scale"], ["alpha", "scale", "kind"])
    check_known_keys("cfg", [], ["alpha"])
    with pytest.raises(ValueError) as err:
        check_known_keys("nested.yaml: cot_schedule", {"alpah": 2, "kind": "x", "zzz": 1}, ["alpha", "kind"])
    message = str(err.value)
    assert message.startswith(
        "nested.yaml: cot_schedule: unknown config keys 'alpah' (did you mean 'alpha'?), 'zzz'; "
    )
    assert "[]" not in message and message.endswith("valid keys: ['alpha', 'kind'].")


def test_int_arrays_are_refused_not_coerced():
    from hf_cot_distill.core.validation import check_int_array

    assert check_int_array("ids", [1, 2]).dtype == np.int64
    assert check_int_array("ids", range(3)).tolist() == [0, 1, 2]
    assert check_int_array("ids", torch.tensor([4, 5])).tolist() == [4, 5]
    assert check_int_array("ids", []).shape == (0,)
    assert check_int_array("grid", [[1, 2]], ndim=2).shape == (1, 2)
    for bad, match in (
        ([1.5, 2.0], r"ids=1.5: must be integers \(got dtype float64\)"),
        ([True, False], "dtype bool"),
        (["1"], "ids='1': must be integers"),
        ([[1, 2]], r"ids: shape \(1, 2\) has 2 dims, expected 1"),
        (torch.tensor([[1, 2]]), "has 2 dims"),
        (5, r"shape \(\) has 0 dims"),
        ([3, -1], r"ids=-1: must be >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            check_int_array("ids", bad, minimum=0)


def test_generators_refuse_bad_task_indices():
    from hf_cot_distill.data.builder import NAMED_CONFIGS
    from hf_cot_distill.data.synthetic.generate import generate_batch

    config = NAMED_CONFIGS["cot_icl_lab_cot"]
    for bad, match in (([0.5], "must be integers"), ([[0, 1]], "has 2 dims"), ([-1], "must be >= 0")):
        with pytest.raises(ValueError, match=match):
            generate_batch(config, bad)
    assert generate_batch(config, [1, 0]).table.num_rows == 2
