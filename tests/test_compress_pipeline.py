"""``hf-cot-distill compress``: prune -> KD recovery -> quantize on a tiny trained Qwen2, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_cot_distill.cli import main
from hf_cot_distill.pipelines.compress import CompressArguments, calibration_batches, heldout_ce

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/compress/tiny_cot_icl.yaml"
GENERATOR = f"generator:{ROOT / 'recipes/generators/cot_icl_lab_tiny.yaml'}"


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory) -> Path:
    """A tiny Qwen2 (hidden 64, 4 heads / 2 KV heads, MLP 128, 2 layers) trained 60 steps on the
    tiny CoT-ICL data, so pruning has structure to lose and recovery something to win back."""
    out = tmp_path_factory.mktemp("compress") / "original"
    config = json.dumps(
        {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, "use_cache": False}
    )  # fmt: skip
    argv = ["train", "--init_from_scratch", "true", "--model_config", config, "--dataset_name", GENERATOR,
            "--supervision_preset", "cot+answer", "--ce_weight", "1", "--kd_weight", "0",
            "--learning_rate", "3e-3", "--max_steps", "60", "--per_device_train_batch_size", "16",
            "--warmup_steps", "10", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
            "--disable_tqdm", "true", "--output_dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_compress_cli_runs_every_stage(trained_tiny, tmp_path, capsys):
    out = tmp_path / "compressed"
    argv = ["compress", "--config", str(RECIPE), "--model_name_or_path", str(trained_tiny),
            "--output_dir", str(out), "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| pruned |" in printed and "| quantized |" in printed and "compress_report.json" in printed
    report = json.loads((out / "compress_report.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["original", "pruned", "recovered", "quantized"]
    assert report["teacher"] == str(trained_tiny)

    # Pruned: half the MLP channels and one of two KV groups (with its query heads) per layer.
    config = json.loads((out / "pruned" / "config.json").read_text())
    assert (config["intermediate_size"], config["num_attention_heads"], config["num_key_value_heads"]) == (
        64,
        2,
        1,
    )
    assert config["head_dim"] == 16
    assert stages["pruned"]["parameters"] < stages["original"]["parameters"]
    assert stages["recovered"]["parameters"] == stages["pruned"]["parameters"]

    # KD recovery lowers the held-out CE that pruning raised.
    ce = {name: s["heldout_ce"] for name, s in stages.items()}
    assert ce["pruned"] > ce["original"]
    assert ce["recovered"] < ce["pruned"]

    # Quantized: loads with transformers, computes what the pipeline evaluated, smaller on disk.
    model = AutoModelForCausalLM.from_pretrained(str(out / "quantized"))
    from hf_cot_distill.pipelines.recipe import DataArguments
    from hf_cot_distill.pipelines.training_data import prepare_data

    data = prepare_data(DataArguments(dataset_name=GENERATOR), None)
    assert heldout_ce(model, data.eval, max_rows=32) == pytest.approx(ce["quantized"], rel=1e-4)
    assert abs(ce["quantized"] - ce["recovered"]) < 0.05  # 8-bit GPTQ barely moves it
    assert stages["quantized"]["size_bytes"] < stages["recovered"]["size_bytes"]
    assert not list((out / "quantized").glob("*.bin")) and not list((out / "quantized").glob("*.pt"))

    # Every stage's card records the compression settings so far.
    for name, keys in (("pruned", ["Pruning:"]), ("recovered", ["Pruning:", "Kd_recovery:"]),
                       ("quantized", ["Pruning:", "Quantization:", "compressed-tensors"])):  # fmt: skip
        card = (out / name / "README.md").read_text()
        assert "## Compression" in card and all(k in card for k in keys), name
    quantized_card = (out / "quantized" / "README.md").read_text()
    assert "| `mlp_keep_ratio` | `0.5` |" in quantized_card
    assert "| `act_order` | `True` |" in quantized_card and "static activation order" in quantized_card
    assert "quantease" not in quantized_card  # QuantEase settings only when it is the method


def test_compress_quantize_only_skips_pruning(trained_tiny, tmp_path):
    out = tmp_path / "q4"
    argv = ["compress", "--config", str(RECIPE), "--model_name_or_path", str(trained_tiny), "--prune", "false",
            "--quantize_bits", "4", "--output_dir", str(out), "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "compress_report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["original", "quantized"]
    assert report["stages"][1]["report"]["config"]["act_order"] is True  # the default ordering
    assert not (out / "pruned").exists()
    assert report["stages"][1]["parameters"] == report["stages"][0]["parameters"]


def test_compress_quantease_stage_loads_and_card_says_so(trained_tiny, tmp_path):
    out = tmp_path / "qe"
    argv = ["compress", "--config", str(RECIPE), "--model_name_or_path", str(trained_tiny), "--prune", "false",
            "--quantize_bits", "4", "--quantize_method", "quantease", "--quantize_quantease_iters", "3",
            "--output_dir", str(out), "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    stages = json.loads((out / "compress_report.json").read_text())["stages"]
    config = stages[-1]["report"]["config"]
    assert (config["method"], config["quantease_iters"], config["act_order"]) == ("quantease", 3, True)
    card = (out / "quantized" / "README.md").read_text()
    assert "| `method` | `quantease` |" in card and "| `quantease_iters` | `3` |" in card
    model = AutoModelForCausalLM.from_pretrained(str(out / "quantized"))
    from hf_cot_distill.pipelines.recipe import DataArguments
    from hf_cot_distill.pipelines.training_data import prepare_data

    data = prepare_data(DataArguments(dataset_name=GENERATOR), None)
    assert heldout_ce(model, data.eval, max_rows=32) == pytest.approx(stages[-1]["heldout_ce"], rel=1e-4)


def test_compress_arguments_errors_name_the_field():
    with pytest.raises(ValueError, match="nothing to do"):
        CompressArguments()
    with pytest.raises(ValueError, match="quantize_bits=3"):
        CompressArguments(quantize_bits=3)
    with pytest.raises(ValueError, match="prune_mlp_keep_ratio"):
        CompressArguments(prune=True, prune_mlp_keep_ratio=0.0)
    with pytest.raises(ValueError, match="quantize_group_size"):
        CompressArguments(quantize_bits=4, quantize_group_size=0)
    with pytest.raises(ValueError, match="has no rows"):
        calibration_batches([], 4, 2)


def test_compress_cli_errors(tmp_path, capsys):
    assert main(["compress", "--config", str(RECIPE), "--prune_mlp_keep_ratoi", "0.5"]) == 2
    assert "prune_mlp_keep_ratio" in capsys.readouterr().err
    assert (
        main(["compress", "--config", str(RECIPE), "--output_dir", str(tmp_path / "x")]) == 2
    )  # no such model
    assert "tiny_models/teacher" in capsys.readouterr().err
    assert main(["compress", "--help"]) == 0
    assert "prune_kv_heads_keep" in capsys.readouterr().out


def test_calibration_batches_pad_and_mask():
    rows = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}, {"input_ids": [9, 10]}]
    batches = calibration_batches(rows, n_samples=3, batch_size=2, pad_token_id=0)
    # longest first, so rows of similar length share a batch (less padding to compute)
    assert [b["input_ids"].tolist() for b in batches] == [[[5, 6, 7], [9, 10, 0]], [[8]]]
    assert batches[0]["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    rows = [{"input_ids": [1] * n} for n in (2, 9, 3, 8, 1, 7)]
    batches = calibration_batches(rows, n_samples=6, batch_size=2, pad_token_id=0)
    # 9/8, 7/3, 2/1: 1 + 4 + 1 pad positions (in the given order 2/9, 3/8, 1/7: 7 + 5 + 6)
    assert sum(int((b["attention_mask"] == 0).sum()) for b in batches) == 6
    assert sum(int(b["attention_mask"].sum()) for b in batches) == 30  # every token kept


def test_compress_quantization_defaults_and_ordering():
    args = CompressArguments(quantize_bits=4)
    assert args.quantize_act_order is True and args.quantize_method == "gptq"
    config = args.quantize_config()
    assert config.act_order and config.method == "gptq"
    assert args.quantization_ordering().startswith("static activation order")
    off = CompressArguments(quantize_bits=4, quantize_act_order=False)
    assert not off.quantize_config().act_order and off.quantization_ordering().startswith("input order")
    qe = CompressArguments(quantize_bits=4, quantize_method="quantease", quantize_quantease_iters=3,
                           quantize_quantease_init="weight").quantize_config()  # fmt: skip
    assert (qe.method, qe.quantease_iters, qe.quantease_init) == ("quantease", 3, "weight")
    rtn = CompressArguments(quantize_bits=4, quantize_method="rtn")
    assert rtn.quantize_config().error_report is False and rtn.quantization_ordering().startswith("none")
    for kwargs, name in (({"quantize_act_order": "yes"}, "quantize_act_order"),
                         ({"quantize_method": "awq"}, "quantize_method"),
                         ({"quantize_quantease_iters": -2}, "quantize_quantease_iters"),
                         ({"quantize_quantease_init": "rtn"}, "quantize_quantease_init")):  # fmt: skip
        with pytest.raises(ValueError, match=f"{name}="):
            CompressArguments(quantize_bits=4, **kwargs)


def test_heldout_ce_counts_cot_and_answer_targets_only():
    torch.manual_seed(0)
    from tests.tiny_models import tiny_qwen2

    model = tiny_qwen2(vocab_size=16).eval()
    rows = [{"input_ids": [1, 4, 5, 6, 7], "section_ids": [1, 1, 2, 2, 3]}]
    logits = model(input_ids=torch.tensor([rows[0]["input_ids"]])).logits[0, :-1]
    expected = torch.nn.functional.cross_entropy(
        logits[1:], torch.tensor([5, 6, 7])
    )  # targets at t+1 in {2, 3}
    assert heldout_ce(model, rows) == pytest.approx(expected.item(), rel=1e-5)


@pytest.fixture(scope="module")
def readme_tiny(tmp_path_factory) -> Path:
    """The shape of the README's tiny model (recipes/tiny/cot_icl_lab_scratch.yaml: Llama, hidden 64,
    4 heads and 4 KV heads of 16 dims, MLP 128), untrained: the checks below run before any data."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         use_cache=False)  # fmt: skip
    out = tmp_path_factory.mktemp("readme_tiny") / "scratch"
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_compress_arguments_check_keep_counts_and_quantize_ignore():
    for name in ("prune_kv_heads_keep", "prune_q_heads_per_kv_keep"):
        with pytest.raises(ValueError, match=f"{name}=0: must be an int >= 1; fix: keep at least 1"):
            CompressArguments(prune=True, **{name: 0})
    with pytest.raises(ValueError, match=r"quantize_ignore: 're:\(' is not"):
        CompressArguments(quantize_bits=8, quantize_ignore=["re:("])
    with pytest.raises(ValueError, match="quantize_ignore='self_attn.o_proj': use a list of patterns"):
        CompressArguments(quantize_bits=8, quantize_ignore="self_attn.o_proj")
    with pytest.raises(ValueError, match="quantize_ignore=.*only applies to quantization"):
        CompressArguments(prune=True, quantize_ignore=["self_attn.o_proj"])
    args = CompressArguments(quantize_bits=8, quantize_ignore=["self_attn.o_proj", "re:layers\\.1\\."])
    assert args.quantize_config().ignore == ("self_attn.o_proj", "re:layers\\.1\\.")
    assert CompressArguments(quantize_bits=8).quantize_config().ignore == ("lm_head",)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--quantize_group_size", "32"],
         r"quantize_group_size=32 does not divide the input width of self_attn.o_proj \(16\) after "
         r"pruning; fix: set quantize_group_size: 16 .* or add \['self_attn.o_proj'\] to quantize_ignore"),
        (["--prune_kv_heads_keep", "9"], "prune_kv_heads_keep=9: the model has 4 KV heads per layer; fix: use 1..4"),
        (["--prune_q_heads_per_kv_keep", "2"], "prune_q_heads_per_kv_keep=2: the model has 1 query heads per KV"),
        (["--quantize_ignore", "o_prj"], "quantize_ignore: 'o_prj' matches no linear of the model"),
        (["--quantize_ignore", "re:."], r"quantize_ignore=\['re:.'\] leaves no decoder linear to quantize"),
        (["--prune", "false", "--quantize_group_size", "48"], r"does not divide .*mlp.down_proj \(128\); fix"),
    ],
)  # fmt: skip
def test_compress_refuses_a_model_the_settings_do_not_fit_before_any_work(
    readme_tiny, tmp_path, capsys, monkeypatch, extra, message
):
    """The README's tiny compress example on the README's tiny model: refused up front (no data
    generated, no folder written), naming the recipe field and the fix."""
    import hf_cot_distill.pipelines.training_data as training_data

    def no_data(*args, **kwargs):
        raise AssertionError("data was prepared before the settings were checked against the model")

    monkeypatch.setattr(training_data, "prepare_data", no_data)
    out = tmp_path / "c"
    argv = ["compress", "--config", str(RECIPE), "--model_name_or_path", str(readme_tiny),
            "--output_dir", str(out), *extra]  # fmt: skip
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_compress_quantize_ignore_keeps_a_layer_in_full_precision(readme_tiny, tmp_path):
    """`quantize_ignore` is the recipe-level way past a group size that does not divide a layer."""
    out = tmp_path / "c"
    argv = ["compress", "--config", str(RECIPE), "--model_name_or_path", str(readme_tiny), "--dataset_name",
            GENERATOR, "--quantize_ignore", "self_attn.o_proj", "--recover", "false", "--calibration_samples",
            "4", "--eval_samples", "0", "--output_dir", str(out), "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    quantized = json.loads((out / "compress_report.json").read_text())["stages"][-1]
    assert quantized["report"]["config"]["ignore"] == ["self_attn.o_proj"]
    names = [layer["name"] for layer in quantized["report"]["layers"]]
    assert len(names) == 12 and not any("o_proj" in n for n in names)
    assert "| `ignore` | `['self_attn.o_proj']` |" in (out / "quantized" / "README.md").read_text()


def test_compress_names_the_pickle_of_a_pickle_only_folder(readme_tiny, tmp_path, capsys):
    from safetensors.torch import load_file

    folder = tmp_path / "bin_only"
    folder.mkdir()
    (folder / "config.json").write_text((readme_tiny / "config.json").read_text())
    torch.save(load_file(readme_tiny / "model.safetensors"), folder / "pytorch_model.bin")
    out = tmp_path / "c"
    argv = [
        "compress",
        "--config",
        str(RECIPE),
        "--model_name_or_path",
        str(folder),
        "--output_dir",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds pickle weights only (pytorch_model.bin)" in err and "use_safetensors=False" in err
    assert "not a local folder" not in err and not out.exists()
