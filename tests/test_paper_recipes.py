"""The Distilling-the-Essence paper recipes (``recipes/distill/qwen3-8b_to_qwen3-4b-base_*``): the
paper code's settings, the six supervision allocations x lead span {0.5, 1.0}, each recipe run by
``hf-cot-distill train`` with local overrides: tiny Qwen3 student and teacher with the Qwen3
embedding rows (151,936), the real Qwen3 tokenizer, and real CHAMP traces in the Bespoke-Stratos
layout (``system`` + ``conversations`` with ``<|begin_of_thought|>`` markers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_cot_distill.pipelines.recipe import load_recipe_yaml, parse_recipe, train_config_types
from hf_cot_distill.supervision.policy import SUPERVISION_PRESETS
from tests.qwen_tokenizers import load_qwen3_tokenizer

pytest.importorskip("champ_dataset", reason="dev extra `champ-dataset` not installed")

ROOT = Path(__file__).resolve().parents[1]
DISTILL = ROOT / "recipes/distill"
PREFIX = "qwen3-8b_to_qwen3-4b-base"
# file name -> supervision_preset; the paper code's section_inclusion names in the comment
ALLOCATIONS = {
    "full": "prompt+cot+answer",
    "cot_answer": "cot+answer",
    "answer_only": "answer",
    "prompt_answer": "prompt+answer",
    "cot_only": "cot",
    "prompt_cot": "prompt+cot",
}
LEAD_SPANS = ("0.5", "1.0")
GRID = [(a, s) for a in ALLOCATIONS for s in LEAD_SPANS]
QWEN3_EMBEDDING_ROWS = 151936
CPU = ["--use_cpu", "true", "--bf16", "false"]


def recipe_path(alloc: str, lsp: str) -> Path:
    return DISTILL / f"{PREFIX}_{alloc}_lsp{lsp}.yaml"


def test_the_grid_is_the_six_allocations_by_two_lead_spans():
    assert set(ALLOCATIONS.values()) == set(SUPERVISION_PRESETS)  # the paper's six, none twice
    found = sorted(p.name for p in DISTILL.glob(f"{PREFIX}_*.yaml"))
    assert found == sorted(recipe_path(a, s).name for a, s in GRID)


@pytest.mark.parametrize("alloc, lsp", GRID, ids=lambda v: v)
def test_paper_settings(alloc, lsp, tmp_path):
    path = recipe_path(alloc, lsp)
    model, data, kd = parse_recipe(train_config_types(), path, ["--output_dir", str(tmp_path), *CPU])
    assert (model.model_name_or_path, kd.teacher_model_name_or_path) == (
        "Qwen/Qwen3-4B-Base",
        "Qwen/Qwen3-8B",
    )
    assert (data.dataset_name, data.dataset_format, data.source_markers) == (
        "bespokelabs/Bespoke-Stratos-17k", "conversations", "openthoughts"
    )  # fmt: skip
    # 8k training rows of at most 4k tokens; longer rows dropped (and counted), not cut
    assert (data.max_length, data.on_too_long, data.max_train_samples) == (4096, "refuse", 8000)
    # AdamW lr 4e-6, 2 epochs, weight decay 0.05, 10% warm-up, clipping 1.0, seed 42
    assert kd.optim == "adamw_torch" and kd.learning_rate == 4e-6 and kd.num_train_epochs == 2
    assert (kd.weight_decay, kd.warmup_steps, kd.max_grad_norm, kd.seed) == (0.05, 0.1, 1.0, 42)
    assert kd.per_device_train_batch_size * kd.gradient_accumulation_steps == 8  # the code's effective batch
    # 0.5 CE + 0.5 forward KL at T = 1 on the allocation's sections
    assert (kd.ce_weight, kd.kd_weight, kd.divergence, kd.temperature) == (0.5, 0.5, "forward_kl", 1.0)
    assert kd.supervision_preset == ALLOCATIONS[alloc] and kd.ce_sections is None
    # an empty accumulation window stops the run: the paper's code has no zero-loss skip to copy
    assert kd.on_empty_window == "error"
    assert kd.truncation_policy == "lead_span_proportion"
    assert kd.truncation_kwargs == {"lead_span_proportion": float(lsp)}
    text = path.read_text()
    assert "arXiv 2512.21002" in text and "weiruichen01/distilling-the-essence" in text  # source stated
    raw = load_recipe_yaml(path)
    assert raw["output_dir"] == f"outputs/distill/{path.stem}" and raw["bf16"] is True


def test_recipes_differ_only_in_allocation_and_lead_span():
    """One recipe written twelve times: every other key is the same in all of them."""
    raws = {(a, s): load_recipe_yaml(recipe_path(a, s)) for a, s in GRID}
    varying = {"supervision_preset", "truncation_kwargs", "output_dir"}
    reference = {k: v for k, v in raws[GRID[0]].items() if k not in varying}
    for raw in raws.values():
        assert {k: v for k, v in raw.items() if k not in varying} == reference


# ---- each recipe trains, with local models and data ---------------------------------------------


def tiny_qwen3(seed: int, hidden: int, layers: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=QWEN3_EMBEDDING_ROWS, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
        max_position_embeddings=4096, tie_word_embeddings=layers == 1, use_cache=False,
        pad_token_id=151643, eos_token_id=151645, bos_token_id=None,
    )  # fmt: skip
    return Qwen3ForCausalLM(config)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Student and teacher folders (with the real Qwen3 tokenizer) and a Bespoke-layout dataset."""
    from datasets import Dataset

    from hf_cot_distill.data.traces import champ

    root = tmp_path_factory.mktemp("paper_recipes")
    tokenizer = load_qwen3_tokenizer()
    folders = {}
    for name, model in (("student", tiny_qwen3(0, 32, 1)), ("teacher", tiny_qwen3(1, 48, 2))):
        folders[name] = root / name
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    # the two shortest human solutions and model conversations: real traces, small CPU steps
    traces = [
        t for source in ("solution", "model")
        for t in sorted(champ.champ_traces(sources=(source,))[:20], key=lambda t: len(t.reasoning))[:2]
    ]  # fmt: skip
    rows = [
        {k: r[k] for k in ("system", "conversations")}
        for r in (champ.to_format(t, "conversations") for t in traces)
    ]
    assert all("<|begin_of_thought|>" in r["conversations"][1]["value"] for r in rows)
    folders["data"] = root / "bespoke_layout"
    Dataset.from_list(rows).to_parquet(str(folders["data"] / "train.parquet"))
    return folders


def run_recipe(local, path: Path, out: Path, extra: list[str] = ()) -> int:
    from hf_cot_distill.cli import main

    return main(
        ["train", "--config", str(path), "--model_name_or_path", str(local["student"]),
         "--teacher_model_name_or_path", str(local["teacher"]), "--dataset_name", str(local["data"]),
         "--output_dir", str(out), *CPU, "--dtype", "float32", "--teacher_dtype", "float32",
         "--max_steps", "2", "--gradient_accumulation_steps", "1", "--warmup_steps", "0", "--save_strategy", "no",
         "--logging_steps", "1",
         *extra]
    )  # fmt: skip


SECTIONS = ("prompt", "cot", "answer")


@pytest.mark.parametrize(
    "alloc, lsp",
    [pytest.param(a, s, marks=() if (a, s) == ("cot_only", "0.5") else pytest.mark.slow)
     for a, s in GRID if (a, s) != ("answer_only", "0.5")],
    ids=lambda v: v,
)  # fmt: skip
def test_recipe_trains_with_local_overrides(local, alloc, lsp, tmp_path):
    out = tmp_path / "run"
    assert run_recipe(local, recipe_path(alloc, lsp), out) == 0
    before = load_file(str(local["student"] / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert [k for k in before if not torch.equal(before[k], after[k])] == list(before)  # every weight moved
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    assert metrics["data_rows"]["train"]["dropped"] == 0 and metrics["data_rows"]["train"]["used"] == 4
    logs = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    kd = {s: sum(h[f"tokens_kd/{s}"] for h in logs) for s in SECTIONS}
    allocated = set(ALLOCATIONS[alloc].split("+"))
    assert all(kd[s] == 0 for s in SECTIONS if s not in allocated)  # KD only where allocated
    # with the whole sequence, every allocated section is distilled; a 0.5 lead span cuts answers
    assert all(kd[s] > 0 for s in allocated if lsp == "1.0" or s != "answer")
    cut_answer = sum(h["truncation/tokens_cut/answer"] for h in logs)
    assert (cut_answer > 0) == (lsp == "0.5")


def test_answer_only_at_half_lead_span_is_refused_before_training(local, tmp_path, capsys):
    """The answer closes every row, so a 0.5 lead span leaves answer-only supervision nothing here:
    refused up front, naming the preset, before a model loads or a step runs."""
    out = tmp_path / "run"
    assert run_recipe(local, recipe_path("answer_only", "0.5"), out) != 0
    err = capsys.readouterr().err
    assert "0 of 4 train rows have a answer token to train on" in err
    assert "supervision_preset='answer' supervises only answer" in err
    assert not (out / "model.safetensors").exists()
