"""Cards: the model card (YAML metadata + body sections, exact values) and the dataset card."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard

from hf_cot_distill.data import CoTICLConfig
from hf_cot_distill.data.synthetic.symbolic import SymbolicConfig
from hf_cot_distill.hub.cards import (
    dataset_card_for_repo,
    render_model_card,
    write_dataset_readme,
    write_model_card,
)
from hf_cot_distill.supervision.policy import SupervisionPolicy
from hf_cot_distill.supervision.truncation import TruncationAccounting

FULL = dict(
    model_name="qwen-tiny-cot-kd",
    base_model="Qwen/Qwen2.5-0.5B",
    teacher="Qwen/Qwen2.5-7B-Instruct",
    datasets=["me/cot-recipe"],
    tags=["qwen2"],
    recipe_name="distill/lsp50",
    recipe={"lead_span_proportion": 0.5, "learning_rate": 2e-05, "alpha": float("inf")},
    supervision=SupervisionPolicy.from_preset("cot", kd_temperature=2.0),
    objective="0.5·CE + 0.5·forward KL (T = 1)",
    truncation={"policy": "lead_span_proportion", "lead_span_proportion": 0.5},
    truncation_accounting=TruncationAccounting(
        samples=4,
        samples_truncated=3,
        tokens_before=np.array([0, 100, 400, 50]),
        tokens_kept=np.array([0, 100, 150, 0]),
        supervised_before=450,
        supervised_kept=150,
    ),
    compute={
        "tokens_forwarded": 123456,
        "flops_counted": 1.234e15,
        "train_time_s": 5400.0,
        "peak_memory_mb": 3072,
    },
    eval_results=[
        {"task": "gsm8k", "metric": "accuracy", "value": 0.4567},
        {"task": "math500", "metric": "accuracy", "value": 0.25},
    ],
    repo_id="me/qwen-tiny-cot-kd",
)


def test_model_card_yaml_metadata_exact():
    card = ModelCard(str(render_model_card(**FULL)))  # round trip through the Hub's parser
    meta = card.data.to_dict()
    hf = meta.pop("hf_cot_distill")
    assert meta == {
        "base_model": "Qwen/Qwen2.5-0.5B",
        "datasets": ["me/cot-recipe"],
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": "text-generation",
        "tags": ["hf-cot-distill", "chain-of-thought", "distillation", "knowledge-distillation", "qwen2"],
    }
    assert hf["teacher"] == "Qwen/Qwen2.5-7B-Instruct" and hf["recipe_name"] == "distill/lsp50"
    assert hf["recipe"] == {"lead_span_proportion": 0.5, "learning_rate": 2e-05, "alpha": "inf"}
    assert hf["supervision"]["cot"] == {"ce_weight": 0.5, "kd_weight": 0.5, "kd_temperature": 2.0}
    assert hf["supervision"]["answer"] == {"ce_weight": 0.0, "kd_weight": 0.0, "kd_temperature": None}
    assert hf["truncation"] == {"policy": "lead_span_proportion", "lead_span_proportion": 0.5}
    assert hf["compute"]["tokens_forwarded"] == 123456 and hf["compute"]["flops_counted"] == 1.234e15


def test_model_card_body_sections_exact():
    text = ModelCard(str(render_model_card(**FULL))).text
    assert text.startswith(
        "\n# qwen-tiny-cot-kd\n\n`qwen-tiny-cot-kd` is a student distilled from the teacher "
        "`Qwen/Qwen2.5-7B-Instruct`, initialised from `Qwen/Qwen2.5-0.5B`, on `me/cot-recipe`, with "
    )
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Teacher and student",
        "## Recipe",
        "## Supervision by section",
        "## Truncation",
        "## Compute",
        "## Evaluation",
        "## How to load",
        "## License",
    ]
    for line in (
        "| teacher | `Qwen/Qwen2.5-7B-Instruct` |",
        "| student (initialised from) | `Qwen/Qwen2.5-0.5B` |",
        "Recipe: `distill/lsp50`.",
        "| `learning_rate` | `2e-05` |",
        "| `alpha` | `inf` |",
        "| prompt | 0 | 0 | default |",
        "| cot | 0.5 | 0.5 | 2 |",
        "| answer | 0 | 0 | default |",
        "Objective: 0.5·CE + 0.5·forward KL (T = 1)",
        "| `lead_span_proportion` | `0.5` |",
        "| cot | 150 | 400 | 37.5% |",
        "| answer | 0 | 50 | 0.0% |",
        "samples: 4, samples_truncated: 3, samples_supervision_lost: 0, samples_dropped: 0, "
        "fallbacks: 0, supervised_before: 450, supervised_kept: 150",
        "| tokens_forwarded | 123,456 |",
        "| flops_counted | 1.234e+15 |",
        "| train_time_s | 5400.0 s (1.50 h) |",
        "| peak_memory_mb | 3,072.0 MiB |",
        "| task | metric | value |",
        "|---|---|---|",
        "| gsm8k | accuracy | 0.4567 |",
        "| math500 | accuracy | 0.25 |",
        'model = AutoModelForCausalLM.from_pretrained("me/qwen-tiny-cot-kd")',
        "apache-2.0.",
    ):
        assert line in text.splitlines(), line
    assert "\n\n\n" not in text  # the template's whitespace control holds


def test_trainer_style_text_fields_render_as_blocks():
    """What a trainer records as text (``policy.describe()``, ``accounting.report()``) and
    nested counts (tokens per section) render too."""
    acc = FULL["truncation_accounting"]
    card = render_model_card(
        model_name="m",
        base_model="b",
        teacher="t",
        supervision=SupervisionPolicy.from_preset("cot").describe(),
        truncation_accounting=acc.report(),
        compute={"tokens_kd": {"prompt": 0, "cot": 500, "answer": 20}},
        eval_results={"answer_accuracy": 0.5},
    )
    text = card.text
    assert "```text\nprompt: ce 0, kd 0, T default\ncot: ce 0.5, kd 0.5, T default\n" in text
    assert "cot: trained on 150/400 tokens (37.5%)" in text
    assert "| tokens_kd | prompt 0, cot 500, answer 20 |" in text
    assert "| answer_accuracy | 0.5 |" in text.splitlines()
    assert card.data.hf_cot_distill["supervision"].startswith("prompt: ce 0")


def test_compressed_model_card_records_the_settings():
    compression = {
        "pruning": {"mlp_keep_ratio": 0.5, "kv_heads_keep": 1, "criterion": "reconstruction", "params": 1000},
        "quantization": {"bits": 4, "group_size": 32, "method": "gptq", "damp": 0.01},
    }
    card = ModelCard(str(render_model_card(model_name="m", base_model="orig", compression=compression)))
    assert card.data.to_dict()["hf_cot_distill"]["compression"] == compression
    assert {"pruned", "quantized"} <= set(card.data.to_dict()["tags"])
    lines = card.text.splitlines()
    sections = [line for line in lines if line.startswith("## ")]
    assert sections.index("## Compression") == sections.index("## Compute") - 1
    for line in ("Pruning:", "| `mlp_keep_ratio` | `0.5` |", "Quantization:", "| `bits` | `4` |",
                 "| `method` | `gptq` |"):  # fmt: skip
        assert line in lines, line
    assert "compressed-tensors format" in card.text
    assert "\n\n\n" not in card.text
    plain = render_model_card(model_name="m", base_model="orig").text
    assert "## Compression" not in plain and "compressed-tensors" not in plain


def test_minimal_model_card():
    card = render_model_card(model_name="tiny", base_model=None)
    assert card.data.to_dict() == {
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": "text-generation",
        "tags": ["hf-cot-distill", "chain-of-thought", "distillation"],
    }
    lines = card.text.splitlines()
    assert lines[3].startswith("`tiny` was trained from a random initialisation, with ")
    for line in ("| teacher | none (no distillation) |", "No recipe recorded.", "No evaluation recorded."):
        assert line in lines, line
    assert 'tokenizer = AutoTokenizer.from_pretrained("tiny")' in lines


def test_model_card_bad_input_says_the_fix():
    with pytest.raises(ValueError, match="unknown sections.*'reasoning'"):
        render_model_card(model_name="m", base_model=None, supervision={"reasoning": {"kd_weight": 1.0}})
    with pytest.raises(TypeError, match="supervision"):
        render_model_card(model_name="m", base_model=None, supervision=[0.5])
    with pytest.raises(ValueError, match="model_name"):
        render_model_card(model_name="", base_model=None)


def test_write_model_card(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        write_model_card(tmp_path / "missing", model_name="m", base_model=None)
    path = write_model_card(tmp_path, **FULL)
    assert path == tmp_path / "README.md"
    loaded = ModelCard.load(path)
    assert loaded.data.base_model == "Qwen/Qwen2.5-0.5B" and loaded.data.pipeline_tag == "text-generation"


def test_dataset_card_still_renders_and_retargets_to_a_repo(tmp_path):
    config = CoTICLConfig(prompt_strategy="cot", num_tasks=1200, num_eval_tasks=7)
    write_dataset_readme(tmp_path, "small", config, {"train": 1200, "eval": 7}, {"train": 10, "eval": 3})
    local = DatasetCard.load(tmp_path / "README.md")
    meta = local.data.to_dict()
    assert meta["configs"] == [
        {
            "config_name": "small",
            "data_files": [
                {"split": "train", "path": "small/train-*.parquet"},
                {"split": "eval", "path": "small/eval-*.parquet"},
            ],
        }
    ]
    assert meta["license"] == "apache-2.0" and meta["size_categories"] == ["1K<n<10K"]
    assert meta["task_categories"] == ["text-generation"]
    assert f'ds = load_dataset("{tmp_path}", "small")' in local.text

    hub_card = dataset_card_for_repo(tmp_path, "me/cot")
    assert 'ds = load_dataset("me/cot", "small")' in hub_card.text
    assert hub_card.data.to_dict() == meta  # only the snippet changes
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.md").write_text("---\nlicense: mit\n---\nnot ours\n")
    assert dataset_card_for_repo(tmp_path / "other", "me/x") is None


def test_tensor_and_numpy_values_become_plain_numbers():
    card = render_model_card(
        model_name="m",
        base_model=None,
        recipe={
            "learning_rate": np.float32(1e-4),
            "betas": np.array([0.9, 0.999], dtype=np.float32),
            "warmup_ratio": torch.tensor(0.1),
            "steps": np.int64(300),
            "scale": np.float64(0.1) * 3,  # float64 keeps all its digits
        },
        compute={
            "train_time_s": torch.tensor(3.5),
            "tokens_forwarded": np.int64(1234),
            "loss": np.array(0.25),
        },
        eval_results={
            "accuracy": torch.tensor(0.5),
            "bf16_loss": torch.tensor(1.0 / 3, dtype=torch.bfloat16),
        },
    )
    hf = ModelCard(str(card)).data.to_dict()["hf_cot_distill"]  # YAML round trip: no python/object tags
    assert hf["recipe"] == {
        "learning_rate": 0.0001,
        "betas": [0.9, 0.999],
        "warmup_ratio": 0.1,
        "steps": 300,
        "scale": 0.30000000000000004,
    }
    assert hf["compute"] == {"train_time_s": 3.5, "tokens_forwarded": 1234, "loss": 0.25}
    lines = card.text.splitlines()
    for line in (
        "| `learning_rate` | `0.0001` |",
        "| `betas` | `[0.9, 0.999]` |",
        "| `warmup_ratio` | `0.1` |",
        "| train_time_s | 3.5 s (0.00 h) |",
        "| tokens_forwarded | 1,234 |",
        "| loss | 0.25 |",
        "| accuracy | 0.5 |",
        "| bf16_loss | 0.334 |",
    ):
        assert line in lines, line


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_pipes_in_names_and_values_are_escaped_in_tables():
    card = render_model_card(
        model_name="m|x",
        base_model="org/base|v2",
        teacher="org/teacher|v1",
        recipe={"loss|kind": "a|b"},
        truncation={"policy": "x|y"},
        compute={"tokens|kd": 10, "note": "fast|slow", "per|section": {"c|ot": 5}},
        compression={"pruning": {"crit|erion": "l|2"}},
        eval_results=[{"task": "gsm|8k", "pipe|metric": 0.5}],
    )
    lines = card.text.splitlines()
    for line in (
        r"| teacher | `org/teacher\|v1` |",
        r"| student (initialised from) | `org/base\|v2` |",
        r"| `loss\|kind` | `a\|b` |",
        r"| `policy` | `x\|y` |",
        r"| `crit\|erion` | `l\|2` |",
        r"| tokens\|kd | 10 |",
        r"| note | fast\|slow |",
        r"| per\|section | c\|ot 5 |",
        r"| task | pipe\|metric |",
        r"| gsm\|8k | 0.5 |",
    ):
        assert line in lines, line
    # every table here has two columns: no name or value adds a cell
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) == 21 and all(_unescaped_pipes(line) == 3 for line in rows)


def test_backticks_in_settings_keep_their_code_span():
    """A value holding a backtick gets a longer fence (`a` would otherwise end the span early)."""
    card = render_model_card(
        model_name="m",
        base_model=None,
        recipe={"chat_template_note": "use `{{ x }}`", "plain": 1},
        truncation={"policy": "lead``span"},
    )
    lines = card.text.splitlines()
    assert "| ``` chat_template_note ``` |" not in lines  # no fence widening without a backtick
    assert "| `chat_template_note` | `` use `{{ x }}` `` |" in lines
    assert "| `plain` | `1` |" in lines
    assert "| `policy` | ``` lead``span ``` |" in lines


def test_model_names_with_backticks_and_values_with_line_breaks_stay_in_their_cell():
    card = render_model_card(
        model_name="m",
        base_model="org/base`v2",
        teacher="org/teacher",
        recipe={"chat_template": "{{ a }}\n{{ b|trim }}"},
    )
    lines = card.text.splitlines()
    assert "| teacher | `org/teacher` |" in lines
    assert "| student (initialised from) | `` org/base`v2 `` |" in lines
    assert r"| `chat_template` | `{{ a }} {{ b\|trim }}` |" in lines  # one row, pipe escaped
    assert card.data.to_dict()["hf_cot_distill"]["recipe"]["chat_template"] == "{{ a }}\n{{ b|trim }}"


def test_dataset_card_settings_are_escaped_code_cells(tmp_path):
    config = SymbolicConfig(think_header="### Why | how", answer_header="`A`", num_tasks=3, num_eval_tasks=1)
    write_dataset_readme(tmp_path, "sym", config, {"train": 3, "eval": 1})
    card = DatasetCard.load(tmp_path / "README.md")
    lines = card.text.splitlines()
    assert "| `word_length` | `8` |" in lines
    assert r"| `think_header` | `### Why \| how` |" in lines
    assert "| `answer_header` | `` `A` `` |" in lines
    fields = card.data.to_dict()["hf_cot_distill"]["generator_configs"][0]["fields"]
    assert fields["think_header"] == "### Why | how"  # the YAML keeps the raw value
