"""`eval` refuses bad input up front with a message naming the value and the fix (no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hf_cot_distill.cli import main
from hf_cot_distill.pipelines.evaluate import evaluate_saved_model


@pytest.fixture(scope="module")
def scratch_model(tmp_path_factory) -> Path:
    """A saved CoT-ICL model as `train --config recipes/tiny/cot_icl_lab_scratch.yaml` leaves it:
    64 token embeddings (the tiny generator's vocabulary), no tokenizer files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, use_cache=False)  # fmt: skip
    out = tmp_path_factory.mktemp("eval_errors") / "scratch"
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_a_config_whose_token_ids_overflow_the_model_is_refused(scratch_model):
    with pytest.raises(
        ValueError, match=r"has 64 token embeddings, but config 'cot_icl_lab_cot' uses token ids up to 1023"
    ):
        evaluate_saved_model(str(scratch_model), "cot_icl_lab_cot", num_tasks=1)


def test_a_missing_model_folder_is_named(tmp_path, capsys):
    missing = tmp_path / "nonexist"
    with pytest.raises(FileNotFoundError, match=r"nonexist' does not exist"):
        evaluate_saved_model(str(missing), "cot_icl_lab_cot", num_tasks=1)
    assert main(["eval", "--model", str(missing), "--config", "cot_icl_lab_cot"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Repo id" not in err


def test_a_text_config_needs_the_tokenizer_in_the_model_folder(scratch_model):
    with pytest.raises(ValueError, match=r"scratch' has no tokenizer \(none of tokenizer.json"):
        evaluate_saved_model(str(scratch_model), "symbolic", num_tasks=1)


@pytest.mark.parametrize("extra", [["--drop-k", "4"], ["--drop-k", "0", "2"], ["--drop-mode", "last_k"]])
def test_drop_options_on_a_symbolic_config_are_refused(scratch_model, capsys, extra):
    assert main(["eval", "--model", str(scratch_model), "--config", "symbolic", *extra]) == 2
    assert "dropping think blocks applies to CoT-ICL configs only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="CoT-ICL configs only"):
        evaluate_saved_model(str(scratch_model), "symbolic", drop_ks=[4])


def test_a_pickle_only_model_folder_is_named(scratch_model, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin_only"
    folder.mkdir()
    (folder / "config.json").write_text((scratch_model / "config.json").read_text())
    torch.save(load_file(scratch_model / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"holds pickle weights only \(pytorch_model.bin\)"):
        evaluate_saved_model(str(folder), "cot_icl_lab_cot", num_tasks=1)
