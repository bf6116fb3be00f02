"""``hf-cot-distill convert-gguf GGUF --out DIR`` on a tiny GGUF built by ``tests/test_convert.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_cot_distill.cli import main
from tests.test_convert import IDS, saved_keys, write_tiny_llama_gguf

pytest.importorskip("gguf", reason="assets extra `gguf` not installed")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf_cli") / "tiny.gguf")


def test_main_converts_and_the_folder_reloads(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "teacher"
    assert main(["convert-gguf", str(tiny_gguf), "--out", str(out)]) == 0
    assert f"Wrote {out}" in capsys.readouterr().out
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert "lm_head.weight" not in saved_keys(out)  # tied: written once
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    original = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    with torch.no_grad():
        assert torch.equal(model.eval()(IDS).logits, original.eval()(IDS).logits)
    assert AutoTokenizer.from_pretrained(out)("<|im_start|>ab a<|im_end|>").input_ids == [1, 30, 31, 2]


def test_console_script(tiny_gguf: Path, tmp_path: Path) -> None:
    """The installed entry point (a fresh process, as a user runs it)."""
    script = Path(sys.executable).parent / "hf-cot-distill"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "hf_cot_distill.cli"]
    out = tmp_path / "cli_out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [*cmd, "convert-gguf", str(tiny_gguf), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Wrote {out}" in done.stdout
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()


def test_missing_out_is_a_usage_error(tiny_gguf: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert-gguf", str(tiny_gguf)])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing_file", "non_empty_out"])
def test_bad_input_is_a_clear_error(case: str, tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    if case == "missing_file":
        gguf = tmp_path / "missing.gguf"
    else:
        gguf = tiny_gguf
        out.mkdir()
        (out / "stale.txt").write_text("x")
    assert main(["convert-gguf", str(gguf), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [20, 100, 2000, -10])
def test_a_truncated_gguf_is_a_clear_error(keep: int, tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    """An interrupted download (the file cut in the header, the tensor table or the tensor data)."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:keep])
    out = tmp_path / "out"
    assert main(["convert-gguf", str(cut), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        f"gguf_path: {str(cut)!r} is a truncated or corrupt GGUF file" in err and "download it again" in err
    )
    assert not out.exists()


def test_a_non_empty_out_names_the_cli_fix(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    assert main(["convert-gguf", str(tiny_gguf), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "fix: give a new or empty folder, or pass --overwrite" in err
