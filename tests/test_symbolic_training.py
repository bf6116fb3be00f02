"""The symbolic recipe's data settings end to end: exported symbolic tasks -> train's encoder with
the symbolic markers -> rows whose text is the conversation as generated and whose sections are
the tasks' own reasoning block (COT) and answer block (ANSWER)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_cot_distill.core.sections import Section
from hf_cot_distill.data.synthetic.symbolic import SymbolicConfig
from hf_cot_distill.hub.datasets import export_dataset
from hf_cot_distill.pipelines.recipe import DataArguments
from hf_cot_distill.pipelines.training_data import prepare_data
from tests.qwen_tokenizers import load_qwen25_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/symbolic/qwen2.5-0.5b-instruct_lora.yaml"
PAPER_RECIPE = ROOT / "recipes/symbolic/qwen2.5-0.5b-instruct_lora_paper.yaml"
DATA_FIELDS = ("dataset_format", "source_markers", "render_markers", "on_empty_cot", "max_length")
# recipe -> (render, the headers its tasks are written with)
RENDERINGS = {
    RECIPE: ("ours", "### Reasoning", "### Answer"),
    PAPER_RECIPE: ("paper", "<|im_start|>think", "<|im_start|>final answer"),
}


@pytest.mark.parametrize("recipe_path", list(RENDERINGS), ids=lambda p: p.stem)
def test_symbolic_recipe_encodes_the_tasks_as_generated(recipe_path, tmp_path):
    render, think, answer_header = RENDERINGS[recipe_path]
    recipe = yaml.safe_load(recipe_path.read_text())
    config = SymbolicConfig(
        n_examples=3, word_length=4, cot_example_prob=0.5, num_tasks=6, num_eval_tasks=2, render=render
    )
    export_dataset(config, tmp_path, config_name=recipe["dataset_config"], progress=False)
    data_args = DataArguments(
        dataset_name=str(tmp_path),
        dataset_config=recipe["dataset_config"],
        **{k: recipe[k] for k in DATA_FIELDS},
    )
    tokenizer = load_qwen25_tokenizer()
    data = prepare_data(data_args, tokenizer)
    assert data.rows["train"]["dropped"] == 0 and data.train.num_rows == 6

    from datasets import load_dataset

    source = load_dataset(str(tmp_path), recipe["dataset_config"])["train"]
    with_cot = 0
    for row, task in zip(data.train, source):
        text = tokenizer.apply_chat_template(task["messages"], tokenize=False)
        assert tokenizer.decode(row["input_ids"]) == text.removesuffix("\n")  # nothing injected or lost
        sections = np.asarray(row["section_ids"])
        ids = np.asarray(row["input_ids"])
        cot = tokenizer.decode(ids[sections == Section.COT])
        answer = tokenizer.decode(ids[sections == Section.ANSWER])
        final = task["messages"][-1]["content"]
        assert answer.startswith(answer_header) and answer.rstrip().endswith("<|im_end|>")
        assert "\\boxed{" + task["answer"] + "}" in answer
        if final.startswith(think):  # a CoT answer: its steps are the CoT section
            with_cot += 1
            assert cot.startswith(think) and "Step 1:" in cot and answer_header not in cot
        else:  # a direct answer: no CoT section at all
            assert cot == ""
        # earlier examples' turns are prompt, rendered as given (no empty <think> injected)
        assert "<think>" not in tokenizer.decode(ids[sections == Section.PROMPT])
    assert with_cot == sum(t["example_has_cot"][-1] for t in source)


def test_the_paper_recipe_reads_the_paper_generator_export():
    """The recipe's dataset_config is the name `generate --config generators/symbolic_paper` writes,
    and its header names that command."""
    from hf_cot_distill.data.builder import load_generator_yaml

    name, config = load_generator_yaml("generators/symbolic_paper")
    recipe = yaml.safe_load(PAPER_RECIPE.read_text())
    assert recipe["dataset_config"] == name and config.render == "paper"
    assert "hf-cot-distill generate --config generators/symbolic_paper --out data/symbolic_paper" in (
        PAPER_RECIPE.read_text()
    )
    ours = yaml.safe_load(RECIPE.read_text())
    varying = {"dataset_name", "dataset_config", "source_markers", "render_markers", "output_dir"}
    assert {k: v for k, v in recipe.items() if k not in varying} == {
        k: v for k, v in ours.items() if k not in varying
    }
    assert recipe["output_dir"] != ours["output_dir"]


def test_section_preserving_marker_lengths_follow_the_render_markers(tmp_path):
    from hf_cot_distill.pipelines.training_data import pin_marker_lengths
    from hf_cot_distill.trainers.kd_config import SectionKDConfig

    tokenizer = load_qwen25_tokenizer()

    def pinned(render_markers, **kwargs):
        args = SectionKDConfig(
            output_dir=str(tmp_path), report_to="none", truncation_policy="section_preserving",
            truncation_kwargs={"max_tokens": 512, **kwargs},
        )  # fmt: skip
        pin_marker_lengths(args, DataArguments(render_markers=render_markers), tokenizer)
        policy = args.build_truncation()  # as the trainer builds it, without the markers
        return policy.cot_open_tokens, policy.cot_close_tokens

    assert pinned("think") == (3, 3)  # Qwen2.5 splits <think> and </think> into 3 tokens each
    n_open, n_close = pinned("symbolic")
    assert n_open > 1 and n_close == 1  # '### Answer' heads the answer: no closer inside the CoT
    assert pinned("symbolic", cot_open_tokens=2) == (2, 1)  # the recipe's own value wins
    # the paper headers: '<|im_start|>' + 'think' opens, '<|im_start|>final answer' heads the answer
    assert pinned("symbolic_paper") == (2, 1)
