"""Every file under recipes/ loads and validates; every tiny recipe runs (see test_train_cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hf_cot_distill.data.builder import load_generator_yaml
from hf_cot_distill.pipelines.recipe import DataArguments, ModelArguments, load_recipe_yaml, parse_recipe
from hf_cot_distill.trainers.kd_config import SectionKDConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
TRAIN_RECIPES = sorted(
    p
    for p in RECIPES.rglob("*.yaml")
    if p.parent.name not in ("accelerate", "generators", "deepspeed", "compress", "eval")
)
COMPRESS_RECIPES = sorted((RECIPES / "compress").glob("*.yaml"))
EVAL_RECIPES = sorted((RECIPES / "eval").glob("*.yaml"))


def test_the_recipe_grid_is_complete():
    names = {p.relative_to(RECIPES).as_posix() for p in TRAIN_RECIPES}
    for teacher in ("7b", "1.5b"):
        for alloc in ("cot_only", "full"):
            for lsp in ("0.5", "1.0"):
                assert f"distill/qwen2.5-{teacher}_to_0.5b_{alloc}_lsp{lsp}.yaml" in names
    assert {"cot_icl_lab/standard.yaml", "cot_icl_lab/cot.yaml"} <= names
    assert {f"cot_recipe/alpha{a}.yaml" for a in ("0", "0p5", "1", "2", "inf")} <= names
    assert any(n.startswith("symbolic/") for n in names) and any(n.startswith("tiny/") for n in names)
    # the symbolic tasks in both renderings (ours, and the paper's: render: paper)
    assert {
        "symbolic/qwen2.5-0.5b-instruct_lora.yaml",
        "symbolic/qwen2.5-0.5b-instruct_lora_paper.yaml",
    } <= names
    assert "eval/aime25_boxed.yaml" in {p.relative_to(RECIPES).as_posix() for p in EVAL_RECIPES}


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_training_recipe_validates(path, tmp_path):
    raw = load_recipe_yaml(path)
    # bf16 recipes target GPUs; validate them here with bf16 off (the only CPU-specific field).
    overrides = ["--output_dir", str(tmp_path)] + (["--bf16", "false"] if raw.get("bf16") else [])
    model, data, train = parse_recipe((ModelArguments, DataArguments, SectionKDConfig), path, overrides)
    assert data.dataset_name, "every recipe names its data"
    assert model.model_name_or_path or model.init_from_scratch
    assert not model.trust_remote_code
    if data.dataset_name.startswith("generator:"):
        target = data.dataset_name.split(":", 1)[1]
        if target.endswith(".yaml"):
            load_generator_yaml(ROOT / target)


@pytest.mark.parametrize("path", EVAL_RECIPES, ids=lambda p: p.name)
def test_eval_recipe_validates(path):
    """recipes/eval/: math-benchmark specs (`hf-cot-distill eval-math --config NAME`)."""
    from hf_cot_distill.eval.math_benchmark import load_math_eval_yaml

    spec = load_math_eval_yaml(path)
    assert spec.dataset_name and "{problem}" in spec.prompt_template


@pytest.mark.parametrize("path", COMPRESS_RECIPES, ids=lambda p: p.name)
def test_compress_recipe_validates(path, tmp_path):
    from hf_cot_distill.pipelines.compress import CompressArguments

    raw = load_recipe_yaml(path)
    overrides = ["--output_dir", str(tmp_path)] + (["--bf16", "false"] if raw.get("bf16") else [])
    types = (CompressArguments, ModelArguments, DataArguments, SectionKDConfig)
    compress, model, data, train = parse_recipe(types, path, overrides)
    assert compress.prune or compress.quantize_bits
    assert model.model_name_or_path and not model.trust_remote_code and data.dataset_name
    compress.prune_config(), compress.quantize_config() if compress.quantize_bits else None  # valid settings


def test_compress_recipes_cover_tiny_cpu_and_gpu():
    assert {p.name for p in COMPRESS_RECIPES} >= {
        "tiny_cot_icl.yaml", "smollm2-135m_prune_kd_w4.yaml", "qwen2.5-1.5b-instruct_prune_kd_w4.yaml"
    }  # fmt: skip


@pytest.mark.parametrize("path", sorted((RECIPES / "generators").glob("*.yaml")), ids=lambda p: p.name)
def test_generator_yaml_validates(path):
    load_generator_yaml(path)


@pytest.mark.parametrize("path", sorted((RECIPES / "deepspeed").glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_configs(path):
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = json.loads(path.read_text())
    stage = cfg["zero_optimization"]["stage"]
    assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["bf16"]["enabled"] == "auto"
    if stage == 3:
        assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    concrete = json.loads(json.dumps(cfg).replace('"auto"', "1"))
    concrete["train_batch_size"] = concrete["train_micro_batch_size_per_gpu"] = 1
    concrete["gradient_accumulation_steps"] = 1
    concrete["bf16"]["enabled"] = concrete["fp16"]["enabled"] = False
    assert DeepSpeedConfig(concrete).zero_optimization_stage == stage


@pytest.mark.parametrize("path", sorted((RECIPES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs(path):
    cfg = yaml.safe_load(path.read_text())
    assert cfg["distributed_type"] in ("DEEPSPEED", "MULTI_GPU")
    if cfg["distributed_type"] == "DEEPSPEED":
        assert (ROOT / cfg["deepspeed_config"]["deepspeed_config_file"]).is_file()
