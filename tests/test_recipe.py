"""Recipe YAML parsing: flat keys, type conversion through HfArgumentParser, clear errors, overrides."""

from __future__ import annotations

import pytest
from transformers import TrainingArguments

from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments, parse_recipe

TYPES = (ModelArguments, DataArguments, TrainingArguments)


def write(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_yaml_values_are_typed_and_cli_overrides_win(tmp_path):
    path = write(
        tmp_path,
        "init_from_scratch: true\n"
        "model_config: {model_type: llama, hidden_size: 64, num_hidden_layers: 2}\n"
        "dataset_name: generator:cot_icl_lab_cot\n"
        "learning_rate: 3.0e-4\n"
        "lora_target_modules: [q_proj, v_proj]\n"
        "use_peft: true\n"
        "output_dir: out\n"
        "max_length: 1024\n",
    )
    model, data, train = parse_recipe(TYPES, path, ["--learning_rate", "1e-4", "--max_length", "512"])
    assert model.model_config_dict() == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2}
    assert model.lora_target_modules == ["q_proj", "v_proj"] and model.use_peft is True
    assert train.learning_rate == pytest.approx(1e-4) and data.max_length == 512
    assert data.dataset_name == "generator:cot_icl_lab_cot"


@pytest.mark.parametrize(
    "text, message",
    [
        ("lerning_rate: 0.1\noutput_dir: x\n", "did you mean 'learning_rate'"),
        ("output_dir: x\nmax_lenght: 10\n", "did you mean 'max_length'"),
        ("output_dir: x\ntotally_unknown: 1\n", "unknown key 'totally_unknown'"),
        ("output_dir: x\nmax_steps: {a: 1}\n", "recipes are flat"),
        ("- a\n- b\n", "flat mapping"),
        ("output_dir: x\ndataset_format: csv\n", "dataset_format"),
        ("output_dir: x\ndtype: int8\n", "dtype"),
        ("output_dir: x\ninit_from_scratch: true\n", "needs model_config"),
        ("output_dir: x\nlearning_rate: null\n", "null is not allowed"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe(TYPES, write(tmp_path, text))


def test_unknown_cli_override_is_an_error():
    with pytest.raises(ValueError, match="did you mean 'num_train_epochs'"):
        parse_recipe(TYPES, None, ["--output_dir", "x", "--num_train_epoch", "2"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file .* and no packaged recipe of that name"):
        parse_recipe(TYPES, tmp_path / "nope.yaml")


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_kwargs` is deprecated:FutureWarning")
def test_dict_fields_take_mappings_in_a_recipe(tmp_path):
    """The README's `section_kd_temperatures: {cot: 2.0}` and TrainingArguments' dict fields."""
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    path = write(
        tmp_path,
        "output_dir: x\n"
        "section_kd_temperatures: {cot: 2.0}\n"
        "gradient_checkpointing_kwargs: {use_reentrant: false}\n"
        "lr_scheduler_kwargs: {num_cycles: 2}\n"
        "liger_kernel_config: {rope: true}\n",
    )
    _, _, kd = parse_recipe((ModelArguments, DataArguments, SectionKDConfig), path)
    assert kd.section_kd_temperatures == {"cot": 2.0}
    assert kd.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert kd.lr_scheduler_kwargs == {"num_cycles": 2} and kd.liger_kernel_config == {"rope": True}


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("output_dir: x\nmax_steps: two\n", [], r"recipe .*r\.yaml: max_steps: 'two' is not a valid int"),
        ("output_dir: x\n", ["--max_steps", "two"], r"command line: --max_steps 'two' is not a valid int"),
        ("output_dir: x\nlearning_rate: fast\n", [], r"r\.yaml: learning_rate: 'fast' is not a valid float"),
        ("output_dir: x\nuse_peft: maybe\n", [], r"r\.yaml: use_peft: 'maybe' is not a valid bool"),
    ],
)
def test_wrong_types_are_one_line_errors_naming_the_source(tmp_path, text, overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_recipe(TYPES, write(tmp_path, text), overrides)
    assert "\n" not in str(err.value)


def test_packaged_recipe_by_name_and_a_path_wins(tmp_path, monkeypatch):
    from hf_cot_distill.core.resources import RECIPES_DIR
    from hf_cot_distill.pipelines.recipe import train_config_types

    monkeypatch.chdir(tmp_path)  # outside the repository: only the packaged recipes can answer
    name = "distill/qwen2.5-7b_to_0.5b_cot_only_lsp0.5"
    _, data, kd = parse_recipe(
        train_config_types(), name, ["--output_dir", "o", "--use_cpu", "true", "--bf16", "false"]
    )
    packaged = parse_recipe(
        train_config_types(),
        RECIPES_DIR / f"{name}.yaml",
        ["--output_dir", "o", "--use_cpu", "true", "--bf16", "false"],
    )
    assert (kd.supervision_preset, kd.truncation_kwargs) == (
        packaged[2].supervision_preset,
        packaged[2].truncation_kwargs,
    )
    assert kd.supervision_preset == "cot" and data.dataset_name == packaged[1].dataset_name
    for spelled in (f"recipes/{name}.yaml", f"{name}.yaml", f"recipes/{name}"):
        assert (
            parse_recipe(
                train_config_types(), spelled, ["--output_dir", "o", "--use_cpu", "true", "--bf16", "false"]
            )[2].supervision_preset
            == "cot"
        )
    # a file at that relative path wins over the packaged recipe
    local = tmp_path / "distill" / "qwen2.5-7b_to_0.5b_cot_only_lsp0.5.yaml"
    local.parent.mkdir()
    local.write_text("supervision_preset: prompt+cot+answer\noutput_dir: o\nuse_cpu: true\n")
    assert parse_recipe(train_config_types(), f"{name}.yaml")[2].supervision_preset == "prompt+cot+answer"
