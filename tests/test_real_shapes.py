"""The Qwen2.5 distillation recipes at the checkpoints' real shapes (random weights, real tokenizer).

Fast: the published shapes (:mod:`hf_cot_distill.models.published`) give the checkpoints' exact
parameter counts and every model the packaged Qwen2.5 recipes name is covered. Slow (``make
test-slow``): ``hf-cot-distill train`` with each ``distill/qwen2.5-1.5b_to_0.5b_*`` recipe for two
steps at ``max_length`` 1024 on real CHAMP traces, Qwen2.5-1.5B-Instruct -> 0.5B-Instruct shapes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from hf_cot_distill.core.resources import list_recipes, resolve_recipe
from hf_cot_distill.models.published import PUBLISHED, published_config, random_model

QWEN25_RECIPES = [r for r in list_recipes() if r.startswith("distill/qwen2.5-")]
SMALL_PAIR = [r for r in QWEN25_RECIPES if "1.5b_to_0.5b" in r]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_shapes_give_the_published_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(published_config(name))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]["parameters"]
    cfg = model.config
    assert cfg.rope_parameters["rope_theta"] == 1_000_000.0 and cfg.rms_norm_eps == 1e-6
    assert cfg.num_attention_heads % cfg.num_key_value_heads == 0  # grouped-query attention
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == cfg.tie_word_embeddings


def test_every_model_a_qwen25_recipe_names_has_published_shapes() -> None:
    assert len(SMALL_PAIR) == 4 and len(QWEN25_RECIPES) == 8
    for recipe in QWEN25_RECIPES:
        values = yaml.safe_load(resolve_recipe(recipe).read_text())
        for key in ("model_name_or_path", "teacher_model_name_or_path"):
            assert values[key] in PUBLISHED, (recipe, key, values[key])


def test_padded_vocabulary_rows_exceed_the_tokenizer(qwen25_tokenizer) -> None:
    rows = PUBLISHED["Qwen/Qwen2.5-0.5B-Instruct"]["vocab_size"]
    assert len(qwen25_tokenizer) == 151_665 < rows  # 271 embedding rows no token reaches
    assert (
        qwen25_tokenizer.convert_tokens_to_ids("<|im_end|>")
        == PUBLISHED["Qwen/Qwen2.5-0.5B-Instruct"]["eos_token_id"]
    )


def test_random_model_is_seeded_and_overrides_apply() -> None:
    small = {"num_hidden_layers": 1, "vocab_size": 64, "hidden_size": 64, "intermediate_size": 32,
             "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    a = random_model("Qwen/Qwen2.5-0.5B-Instruct", seed=3, **small)
    b = random_model("Qwen/Qwen2.5-0.5B-Instruct", seed=3, dtype=torch.bfloat16, **small)
    assert a.config.num_hidden_layers == 1 and b.dtype == torch.bfloat16
    w = a.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(w.to(torch.bfloat16), b.model.layers[0].self_attn.q_proj.weight)


def test_published_config_refuses_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="Qwen/Qwen2.5-0.5B-Instruct"):
        published_config("Qwen/Qwen2.5-0.6B")


@pytest.fixture(scope="module")
def real_shape_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from datasets import Dataset

    from hf_cot_distill.data.traces import champ
    from tests.qwen_tokenizers import load_qwen25_tokenizer

    root = tmp_path_factory.mktemp("real_shapes")
    tok = load_qwen25_tokenizer()
    paths = {"teacher": root / "teacher", "student": root / "student", "data": root / "champ"}
    for role, name, seed in (
        ("teacher", "Qwen/Qwen2.5-1.5B-Instruct", 1),
        ("student", "Qwen/Qwen2.5-0.5B-Instruct", 0),
    ):
        model = random_model(name, seed=seed, dtype=torch.bfloat16, pad_token_id=tok.pad_token_id)
        model.save_pretrained(paths[role])
        tok.save_pretrained(paths[role])
        del model
    paths["data"].mkdir()
    records = champ.champ_records("conversations", models=("GPT-4",))

    def n_tokens(rec: dict) -> int:
        return len(tok(rec["system"] + "".join(t["value"] for t in rec["conversations"]))["input_ids"])

    long = [r for r in records if 600 <= n_tokens(r) <= 900][:4]  # near the 1024 cap, as real runs meet them
    Dataset.from_list(long).to_parquet(str(paths["data"] / "train.parquet"))
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("recipe", SMALL_PAIR)
def test_qwen25_recipe_trains_at_real_shapes(
    recipe: str, real_shape_assets: dict[str, Path], tmp_path: Path
) -> None:
    from hf_cot_distill.cli import main

    out = tmp_path / "run"
    code = main(["train", "--config", recipe, "--model_name_or_path", str(real_shape_assets["student"]),
                 "--teacher_model_name_or_path", str(real_shape_assets["teacher"]),
                 "--dataset_name", str(real_shape_assets["data"]), "--max_length", "1024",
                 "--use_cpu", "true", "--bf16", "false", "--dtype", "float32", "--teacher_dtype", "float32",
                 "--max_steps", "2", "--gradient_accumulation_steps", "1", "--warmup_steps", "0",
                 "--logging_steps", "1", "--save_strategy", "no", "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "train_metrics.json").read_text())
    history = json.loads((out / "log_history.json").read_text())
    logged = [e for e in history if "loss" in e]
    assert len(logged) == 2 and all(math.isfinite(e["loss"]) for e in logged)
    last = logged[-1]
    assert last["tokens_forwarded"] > 0 and last["flops_teacher"] > 0 and last["flops_student"] > 0
    assert metrics["data_rows"]["train"]["used"] >= 2  # rows near the cap, none silently lost
    saved = json.loads((out / "config.json").read_text())
    assert (saved["hidden_size"], saved["num_hidden_layers"], saved["vocab_size"]) == (896, 24, 151_936)
