"""A setting a command does not use is a warning that names it, never silently dropped (issue #16,
section 4): one rule table (hf_cot_distill.pipelines.recipe.check_settings) for every command that
reads a training recipe (train, cache-teacher, compress) and for sweeps (and so reproduce, whose
sweeps go through the sweep runner); a sweep key the sweep would drop is an error."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from hf_cot_distill.cli import main
from hf_cot_distill.pipelines.recipe import check_settings, parse_recipe, train_config_types

ROOT = Path(__file__).resolve().parents[1]
KD = str(ROOT / "recipes/tiny/kd_messages.yaml")


def _warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


# command, extra flags, the keys named, the reason named. The model path does not exist, so each
# command stops after parsing (exit 2) and nothing trains.
CASES = [
    ("train", ["--lora_r", "4", "--lora_alpha", "8"], "lora_r, lora_alpha", "only used with use_peft: true"),
    ("train", ["--num_train_epochs", "2"], "num_train_epochs", "max_steps > 0 sets the run's length"),
    ("train", ["--generator_num_tasks", "8"], "generator_num_tasks", "dataset_name: generator:"),
    ("train", ["--save_steps", "5"], "save_steps", "only used with save_strategy: steps"),
    ("cache-teacher", ["--learning_rate", "0.1"], "learning_rate", "settings are for `train`"),
    ("compress", ["--prune", "false"], "prune_mlp_keep_ratio", "only used with prune: true"),
    ("compress", ["--recover", "false"], "learning_rate", "only used by the KD recovery stage"),
]  # fmt: skip


def _argv(command: str, extra: list[str], tmp_path: Path) -> list[str]:
    missing = str(tmp_path / "nope")
    if command == "compress":
        return ["compress", "--config", "compress/tiny_cot_icl", "--model_name_or_path", missing,
                "--output_dir", str(tmp_path / "o"), *extra]  # fmt: skip
    if command == "cache-teacher":
        return ["cache-teacher", "--config", KD, "--teacher_model_name_or_path", missing,
                "--out", str(tmp_path / "c"), *extra]  # fmt: skip
    return [
        "train",
        "--config",
        KD,
        "--model_name_or_path",
        missing,
        "--output_dir",
        str(tmp_path / "o"),
        *extra,
    ]


@pytest.mark.parametrize("command, extra, keys, why", CASES)
def test_an_unused_setting_is_one_warning_naming_it(command, extra, keys, why, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(_argv(command, extra, tmp_path)) == 2  # the missing model: nothing runs
    found = [w for w in _warnings(record) if f"`{command}` does not use" in w]
    assert any(keys in w.split(": ")[1] and why in w for w in found), found
    assert all("\n" not in w for w in found)
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "command, recipe",
    [
        ("train", "tiny/kd_messages"),
        ("train", "tiny/cot_icl_lab_scratch"),
        ("compress", "compress/tiny_cot_icl"),
        ("cache-teacher", "tiny/kd_messages"),
    ],
)
def test_the_shipped_recipes_use_every_key(command, recipe):
    """No false alarms: the packaged CPU recipes set nothing their command ignores (cache-teacher
    reads a training recipe: its training keys are for the `train` run that uses the cache; only
    such keys given on cache-teacher's own command line are warned about)."""
    from hf_cot_distill.pipelines.compress import CompressArguments

    types = (CompressArguments, *train_config_types()) if command == "compress" else train_config_types()
    configs = parse_recipe(types, recipe, [], command=command)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert check_settings(command, recipe, [], configs) == []
    assert _warnings(record) == []


def test_compress_without_quantization_names_its_quantize_keys(tmp_path):
    from hf_cot_distill.pipelines.compress import CompressArguments

    recipe = yaml.safe_load((ROOT / "recipes/compress/tiny_cot_icl.yaml").read_text())
    recipe.pop("quantize_bits")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    types = (CompressArguments, *train_config_types())
    configs = parse_recipe(types, str(path), [], command="compress")
    with pytest.warns(UserWarning, match="only used with quantize_bits: 4 or 8"):
        lines = check_settings("compress", str(path), [], configs)
    assert lines == [
        f"{path}: `compress` does not use quantize_group_size, quantize_method, quantize_act_order: only used "
        "with quantize_bits: 4 or 8; remove them to silence this."
    ]


def test_a_command_line_value_replacing_the_recipes_is_not_warned(tmp_path):
    configs = parse_recipe(
        train_config_types(), KD, ["--learning_rate", "0.5", "--output_dir", str(tmp_path)]
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert (
            check_settings("train", KD, ["--learning_rate", "0.5", "--output_dir", str(tmp_path)], configs)
            == []
        )
    assert _warnings(record) == []


# ---- sweeps: keys no point uses are warned about; keys the sweep would drop are errors ----
def _sweep(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"recipe": KD, "output_root": str(tmp_path / "runs"), **spec}))
    return path


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"grid": {"seed": [0, 1]}, "set": {"seed": 3}}, r"\['seed'\] in both set and grid"),
        ({"grid": {"seed": [0]}, "set": {"output_dir": "x"}}, "output_dir in set/grid is not used"),
        ({"grid": {"output_dir": ["a", "b"]}}, "output_dir in set/grid is not used"),
    ],
)
def test_a_sweep_key_the_sweep_would_drop_is_an_error(spec, message, tmp_path):
    from hf_cot_distill.pipelines.sweep import load_sweep

    with pytest.raises(ValueError, match=message):
        load_sweep(_sweep(tmp_path, **spec))
    assert not (tmp_path / "runs").exists()


def test_a_sweep_warns_about_keys_no_point_uses(tmp_path, monkeypatch):
    """lora_r in set without use_peft, teacher_cache_options without teacher_cache: auto; a key used
    by some points (use_peft in the grid) is not warned about. Training is stubbed."""
    import hf_cot_distill.pipelines.train
    from hf_cot_distill.pipelines.sweep import run_sweep

    def run_training(model_args, data_args, kd_args, recipe_path=None):
        Path(kd_args.output_dir, "train_metrics.json").write_text("{}")
        return {}

    monkeypatch.setattr(hf_cot_distill.pipelines.train, "run_training", run_training)
    monkeypatch.chdir(ROOT)
    spec = {"grid": {"seed": [0, 1]}, "set": {"lora_r": 4, "num_train_epochs": 2}}
    spec["teacher_cache_options"] = {"mode": "topk", "k": 4}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run_sweep(_sweep(tmp_path, **spec))
    found = [w for w in _warnings(record) if "`sweep` does not use" in w]
    assert len(found) == 3, found
    assert any("does not use lora_r: LoRA settings" in w for w in found)
    assert any("does not use num_train_epochs: max_steps > 0" in w for w in found)
    assert any("does not use teacher_cache_options" in w for w in found)

    second = tmp_path / "second"
    second.mkdir()
    spec = {"grid": {"use_peft": [True, False]}, "set": {"lora_r": 4}}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run_sweep(_sweep(second, **spec))
    assert not [w for w in _warnings(record) if "does not use" in w]
