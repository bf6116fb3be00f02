"""datasets integration: builder configs, parquet export + load_dataset round trip, streaming, CLI."""

from __future__ import annotations

import dataclasses

import pytest
from datasets import load_dataset

from hf_cot_distill.cli import main
from hf_cot_distill.data import CoTICLConfig
from hf_cot_distill.data.builder import (
    COT_ICL_FEATURES,
    NAMED_CONFIGS,
    CoTDatasetBuilder,
    generate_table,
    load_generator_yaml,
)
from hf_cot_distill.hub.datasets import export_dataset

SMALL = CoTICLConfig(
    prompt_strategy="cot_special_token", n_examples_choices=(4,), num_tasks=30, num_eval_tasks=7
)


def test_named_configs_cover_the_paper_setups():
    for name in ("cot_icl_lab_standard", "cot_icl_lab_cot", "cot_recipe_hybrid", "symbolic"):
        assert name in NAMED_CONFIGS
    for alpha in ("0", "0p5", "1", "2", "inf"):
        assert f"cot_recipe_hybrid_alpha{alpha}" in NAMED_CONFIGS
    recipe = NAMED_CONFIGS["cot_recipe_hybrid"]
    assert recipe.num_unique_h == 1 and recipe.n_inputs_choices == (3, 4)


def test_features_match_the_generated_arrow_schema():
    table = generate_table(SMALL, 0, 3, "train")
    assert table.schema.equals(COT_ICL_FEATURES.arrow_schema, check_metadata=False)


def test_export_then_load_dataset_equals_builder_rows(tmp_path):
    export_dataset(SMALL, tmp_path / "ds", config_name="small", tasks_per_shard=8, progress=False)
    assert len(list((tmp_path / "ds" / "small").glob("train-*.parquet"))) == 4
    loaded = load_dataset(str(tmp_path / "ds"), "small")
    assert loaded["train"].num_rows == 30 and loaded["eval"].num_rows == 7
    assert loaded["train"].features == COT_ICL_FEATURES

    builder = CoTDatasetBuilder(name="small", generator=SMALL, cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    built = builder.as_dataset()
    for split in ("train", "eval"):
        assert built[split].to_list() == loaded[split].to_list()
    stream = builder.as_streaming_dataset(split="train")
    assert list(stream.take(5)) == loaded["train"].select(range(5)).to_list()


def test_named_builder_config_and_splits_are_disjoint(tmp_path):
    gen = dataclasses.replace(NAMED_CONFIGS["cot_icl_lab_cot"], num_tasks=5, num_eval_tasks=5)
    builder = CoTDatasetBuilder(config_name="cot_icl_lab_cot", generator=gen, cache_dir=str(tmp_path))
    builder.download_and_prepare()
    ds = builder.as_dataset()
    train = {tuple(r) for r in ds["train"]["input_ids"]}
    assert not train & {tuple(r) for r in ds["eval"]["input_ids"]}


def test_symbolic_export_and_several_configs_in_one_folder(tmp_path):
    export_dataset("symbolic", tmp_path, num_tasks=4, num_eval_tasks=2, progress=False)
    export_dataset(SMALL, tmp_path, config_name="small", progress=False)
    sym = load_dataset(str(tmp_path), "symbolic")
    assert sym["train"][0]["messages"][0]["role"] == "system"
    assert load_dataset(str(tmp_path), "small")["eval"].num_rows == 7
    readme = (tmp_path / "README.md").read_text()
    assert "config_name: small" in readme and "config_name: symbolic" in readme
    assert "license: apache-2.0" in readme and 'load_dataset("' in readme
    # Re-exporting a config replaces its shards instead of mixing two runs.
    export_dataset(dataclasses.replace(SMALL, num_tasks=3), tmp_path, config_name="small", progress=False)
    assert load_dataset(str(tmp_path), "small")["train"].num_rows == 3


def test_yaml_configs_and_unknown_keys(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("base: cot_recipe_hybrid\nnum_tasks: 12\ncot_schedule: {kind: power_law, alpha: 2.0}\n")
    name, cfg = load_generator_yaml(good)
    assert name == "mine" and cfg.num_tasks == 12 and cfg.cot_schedule.alpha == 2.0 and cfg.num_unique_h == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: cot_icl_lab\nn_input_choices: [3]\n")
    with pytest.raises(ValueError, match=r"n_input_choices.*n_inputs_choices"):
        load_generator_yaml(bad)
    nested = tmp_path / "nested.yaml"
    nested.write_text("base: cot_recipe_hybrid\ncot_schedule: {kind: power_law, alpah: 2.0}\n")
    with pytest.raises(
        ValueError, match=r"nested.yaml: cot_schedule: unknown config keys 'alpah' \(did you mean 'alpha'\?\)"
    ):
        load_generator_yaml(nested)


def test_no_eval_tasks_means_no_eval_split(tmp_path):
    """num_eval_tasks=0 is valid: the builder and the export leave the eval split out (datasets
    refuses a declared split without rows)."""
    train_only = dataclasses.replace(SMALL, num_tasks=3, num_eval_tasks=0)
    builder = CoTDatasetBuilder(name="train_only", generator=train_only, cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    assert list(builder.as_dataset()) == ["train"]
    export_dataset(SMALL, tmp_path / "ds", config_name="t", progress=False)  # with an eval split first
    export_dataset(train_only, tmp_path / "ds", config_name="t", progress=False)
    loaded = load_dataset(str(tmp_path / "ds"), "t")
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 3
    assert not list((tmp_path / "ds" / "t").glob("eval-*"))


def test_cli_generate_and_push_refusal(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert (
        main(
            [
                "generate",
                "--config",
                "cot_icl_lab_standard",
                "--out",
                str(out),
                "--num-tasks",
                "6",
                "--num-eval-tasks",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert load_dataset(str(out), "cot_icl_lab_standard")["train"].num_rows == 6

    # --push works (tests/test_hub.py pushes to a loopback Hub); offline it is refused up front.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pushed = tmp_path / "pushed"
    assert main(["generate", "--config", "cot_icl_lab_cot", "--out", str(pushed), "--push", "me/ds"]) == 2
    assert "offline mode is enabled" in capsys.readouterr().err
    assert not pushed.exists()  # refused before anything was written

    assert main(["generate", "--config", "no_such_config", "--out", str(tmp_path / "x")]) == 2
    assert "named config" in capsys.readouterr().err


def test_generate_refuses_bad_out_names_and_config_files_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "taken.yaml"
    a_file.write_text("x: 1\n")
    small = ["--num-tasks", "2", "--num-eval-tasks", "1", "--no-progress"]
    assert main(["generate", "--config", "cot_icl_lab_cot", "--out", str(a_file), *small]) == 2
    assert f"--out {a_file}: is a file; fix: give a folder path" in capsys.readouterr().err

    out = tmp_path / "out"
    for name in ("../escaped", "a/b", "..", ""):
        assert (
            main(["generate", "--config", "cot_icl_lab_cot", "--out", str(out), "--name", name, *small]) == 2
        )
        assert f"config_name (--name)={name!r} is not a plain config name" in capsys.readouterr().err
    named = tmp_path / "named.yaml"
    named.write_text("name: ../escaped\nbase: cot_icl_lab_cot\n")
    assert main(["generate", "--config", str(named), "--out", str(out), *small]) == 2
    assert "name='../escaped' is not a plain config name" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "escaped").exists()

    with pytest.raises(
        FileNotFoundError, match=r"generator config file 'nope.yaml': no such file \(paths are relative"
    ):
        load_generator_yaml("nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("n_inputs_choices: [3\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        load_generator_yaml(broken)
