"""Datasets given by folder (issue #16, class 4): a `generate --out` folder trains like the
`generator:` route (the student is built for the data's vocabulary, evaluated as CoT-ICL), a
folder with several configs names the flag to add, a training recipe given where a generator
config is expected is one line, and `max_train_samples` bounds what is read and encoded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hf_cot_distill.cli import main
from hf_cot_distill.data.builder import folder_config_names, folder_generator_config, resolve_config
from hf_cot_distill.data.synthetic.cot_icl_lab import CoTICLConfig
from tests.test_train_cli import _tiny_pair
from tests.test_train_guards import _folder, _kd_argv, _row
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]

SCRATCH_RECIPE = """\
init_from_scratch: true
model_config:
  model_type: llama
  hidden_size: 32
  intermediate_size: 64
  num_hidden_layers: 1
  num_attention_heads: 2
  num_key_value_heads: 2
  max_position_embeddings: 512
supervision_preset: cot+answer
ce_weight: 1.0
kd_weight: 0.0
per_device_train_batch_size: 4
max_steps: 2
save_strategy: "no"
report_to: none
use_cpu: true
"""


@pytest.fixture(scope="module")
def two_configs(tmp_path_factory: Any) -> Path:
    """A `generate --out` folder with two configs of different vocabularies."""
    out = tmp_path_factory.mktemp("gen") / "data"
    for config in ("generators/cot_icl_lab_tiny", "cot_icl_lab_cot"):
        argv = [
            "generate",
            "--config",
            config,
            "--out",
            str(out),
            "--num-tasks",
            "12",
            "--num-eval-tasks",
            "4",
        ]
        assert main(argv) == 0
    return out


def test_folder_configs_are_read_from_the_card(two_configs: Path) -> None:
    assert folder_config_names(two_configs) == ["cot_icl_lab_cot", "cot_icl_lab_tiny"]
    config = folder_generator_config(two_configs, "cot_icl_lab_tiny")
    _, reference = resolve_config("generators/cot_icl_lab_tiny")
    assert isinstance(config, CoTICLConfig)
    assert config.vocab_size == 64 and config.n_dims == reference.n_dims
    assert folder_generator_config(two_configs, None) is None  # two configs: which one is not guessed
    assert folder_generator_config(two_configs, "nope") is None
    assert folder_config_names(two_configs / "cot_icl_lab_tiny") == []  # no card there


def _train(tmp_path: Path, data: Path, *extra: str) -> tuple[int, Path]:
    recipe = tmp_path / "scratch.yaml"
    recipe.write_text(SCRATCH_RECIPE)
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    argv = ["train", "--config", str(recipe), "--dataset_name", str(data), "--output_dir", str(out), *extra]
    return main(argv), out


def test_training_from_a_generated_folder_uses_the_data_vocabulary(
    two_configs: Path, tmp_path: Path, capsys: Any
) -> None:
    code, out = _train(tmp_path, two_configs)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "holds 2 configs (cot_icl_lab_cot, cot_icl_lab_tiny)" in line[0]
    assert "--dataset_config" in line[0] and "Traceback" not in err

    code, out = _train(tmp_path, two_configs, "--dataset_config", "cot_icl_lab_tny")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "dataset_config='cot_icl_lab_tny': must be one of 'cot_icl_lab_cot', 'cot_icl_lab_tiny'" in err

    code, out = _train(
        tmp_path, two_configs, "--dataset_config", "cot_icl_lab_tiny", "--dataset_eval_split", "eval"
    )
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 64  # the data's vocabulary, not llama's default 32000
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert "cot_icl/answer_accuracy@drop0" in metrics, sorted(metrics)  # evaluated as CoT-ICL


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_a_training_recipe_where_a_generator_config_is_expected(
    command: str, tmp_path: Path, capsys: Any
) -> None:
    target = ["--model", str(tmp_path / "model")] if command == "eval" else ["--out", str(tmp_path / "o")]
    code = main([command, "--config", "tiny/cot_icl_lab_scratch", *target])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not list(tmp_path.iterdir())
    assert "is a training recipe (it sets init_from_scratch, dataset_name, output_dir)" in err
    assert "pass that as --config" in err and "unknown config keys" not in err


def test_max_train_samples_bounds_what_is_read_and_encoded(tmp_path: Path, capsys: Any) -> None:
    tok = tiny_qwen2_tokenizer()
    models = _tiny_pair(tmp_path, tok)
    good = [_row(i, 2 * i, f"<think>{i} plus {2 * i} makes {3 * i}.</think>") for i in range(12)]
    cut = _row(7, 8, "<think>7 plus 8 makes")  # no closing marker: dropped, counted
    data = _folder(tmp_path, "d", {"train": good[:2] + [cut] + good[2:]})
    out = tmp_path / "run"
    assert main(_kd_argv(models, data, out, "--max_train_samples", "4")) == 0
    assert "train: 1 of 4 rows dropped (missing_close_marker 1)" in capsys.readouterr().err
    rows = json.loads((out / "train_metrics.json").read_text())["data_rows"]
    assert rows == {
        "train": {"rows": 4, "dropped": 1, "dropped_by_reason": {"missing_close_marker": 1}, "used": 3}
    }
