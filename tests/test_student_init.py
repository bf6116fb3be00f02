"""init_student_from_teacher: tiny Llama / Qwen2 teachers, every layer or a subset, saved and reloaded."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hf_cot_distill.models.student_init import init_student_from_teacher
from tests.tiny_models import tiny_llama, tiny_qwen2
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

IDS = torch.tensor([[1, 5, 9, 17, 33, 64, 90, 2], [1, 7, 7, 7, 3, 2, 0, 0]])


@pytest.fixture(scope="module")
def teacher() -> LlamaForCausalLM:
    return tiny_llama(seed=3, num_hidden_layers=5).eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def teacher_with_only(teacher: LlamaForCausalLM, layers: list[int]) -> LlamaForCausalLM:
    """The reference: the teacher itself with its block list cut to ``layers``."""
    ref = copy.deepcopy(teacher)
    ref.model.layers = torch.nn.ModuleList([ref.model.layers[i] for i in layers])
    for j, layer in enumerate(ref.model.layers):
        layer.self_attn.layer_idx = j
    ref.config.num_hidden_layers = len(layers)
    return ref.eval()


def test_all_layers_gives_the_teacher(teacher):
    student = init_student_from_teacher(teacher, layers=list(range(5)))
    assert student is not teacher and student.config.num_hidden_layers == 5
    assert torch.equal(logits(student), logits(teacher))
    # copies, not shared storage: training the student cannot touch the teacher
    s, t = student.model.embed_tokens.weight, teacher.model.embed_tokens.weight
    assert s.data_ptr() != t.data_ptr()


def test_subset_has_the_chosen_layers(teacher):
    layers = [0, 2, 4]
    student = init_student_from_teacher(teacher, layers=layers)
    assert type(student) is LlamaForCausalLM
    assert student.config.num_hidden_layers == len(student.model.layers) == 3
    assert teacher.config.num_hidden_layers == 5  # teacher config untouched
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for new, old in enumerate(layers):
        for name, tensor in teacher.model.layers[old].state_dict().items():
            assert torch.equal(s_state[f"model.layers.{new}.{name}"], tensor), (new, name)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(s_state[name], t_state[name]), name
    layer_keys = teacher.model.layers[0].state_dict().keys()
    outside = {k for k in t_state if not k.startswith("model.layers.")}
    assert set(s_state) == outside | {f"model.layers.{j}.{k}" for j in range(3) for k in layer_keys}
    ref = teacher_with_only(teacher, layers)
    torch.testing.assert_close(logits(student), logits(ref), rtol=0, atol=0)
    assert not torch.allclose(logits(student), logits(teacher))


def test_tied_embeddings_stay_tied():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0,
    )  # fmt: skip
    teacher = LlamaForCausalLM(cfg).eval()
    student = init_student_from_teacher(teacher, layers=[1, 3])
    assert student.config.tie_word_embeddings
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(logits(student), logits(teacher_with_only(teacher, [1, 3])), rtol=0, atol=0)


def test_qwen2_per_layer_config_is_cut():
    teacher = tiny_qwen2(seed=1, num_hidden_layers=4).eval()
    teacher.config.layer_types = [
        "full_attention",
        "sliding_attention",
        "full_attention",
        "sliding_attention",
    ]
    student = init_student_from_teacher(teacher, layers=[0, 1])
    assert student.config.layer_types == ["full_attention", "sliding_attention"]
    assert teacher.config.layer_types[2:] == ["full_attention", "sliding_attention"]


def test_from_folder_to_folder_with_tokenizer(teacher, tmp_path: Path):
    teacher_dir, out = tmp_path / "teacher", tmp_path / "student"
    teacher.save_pretrained(teacher_dir)
    tiny_qwen2_tokenizer().save_pretrained(teacher_dir)
    teacher.generation_config.max_new_tokens = 7
    teacher.generation_config.save_pretrained(teacher_dir)
    student = init_student_from_teacher(str(teacher_dir), layers=[0, 4], out_dir=out)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    reloaded, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    assert reloaded.config.num_hidden_layers == 2 and reloaded.generation_config.max_new_tokens == 7
    assert torch.equal(logits(reloaded.eval()), logits(student))
    with pytest.raises(ValueError, match="not empty"):
        init_student_from_teacher(teacher_dir, layers=[0], out_dir=out)
    init_student_from_teacher(teacher_dir, layers=[0], out_dir=out, overwrite=True)
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 1


@pytest.mark.parametrize(
    ("layers", "error", "match"),
    [
        ([], ValueError, "empty"),
        ([0, 5], ValueError, r"layers\[1\]=5: must be an int >= 0 and <= 4; .* 5 decoder layers.*\[0, 4\]"),
        ([-1], ValueError, "negative ones are not accepted"),
        ([0, 2, 2], ValueError, "strictly increasing"),
        ([3, 1], ValueError, r"strictly increasing.*fix: e.g. \[1, 3\]"),
        ([0, 1.0], TypeError, r"layers\[1\]=1.0: must be an int"),
        ([True], TypeError, r"layers\[0\]=True: must be an int"),
        ("0,1", TypeError, "list of teacher layer indices"),
    ],
)
def test_bad_layers_are_clear_errors(teacher, layers, error, match):
    with pytest.raises(error, match=match):
        init_student_from_teacher(teacher, layers=layers)


def test_bad_teacher_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        init_student_from_teacher(tmp_path / "missing", layers=[0])
    with pytest.raises(TypeError, match="model folder path or a PreTrainedModel"):
        init_student_from_teacher(torch.nn.Linear(2, 2), layers=[0])
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))  # blocks in .h
    with pytest.raises(
        ValueError, match="unsupported architecture GPT2LMHeadModel: .*fix: use a decoder-only"
    ):
        init_student_from_teacher(gpt2, layers=[0])
